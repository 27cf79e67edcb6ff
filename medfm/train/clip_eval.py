"""Held-out measures of medfm-clip: zero-shot modality and body region, text→image recall@K."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.retrieval import recall_at_k
from medfm.models.encoders.base import Encoder
from medfm.tasks.domains import MODALITIES, MODALITY_TEMPLATES, REGION_TEMPLATES, REGIONS
from medfm.tasks.zeroshot import DEFAULT_SCALE, label_embeddings, probabilities
from medfm.train.clip_data import Sample, read_plane, read_split_manifest


def evaluate(samples: Sequence[Sample], image_embeddings: np.ndarray, encoder: Encoder, scale: float) -> dict:
    """Zero-shot accuracies (overall, per dataset) and MedPix caption→image recall@1/10.

    ``image_embeddings`` ``(N, D)`` are the unit embeddings of ``samples``. Captions shared by
    several images (one caption per case figure) are one query whose relevant set is all of them.
    """
    result: dict = {}
    for task, classes, templates, key in (("modality", MODALITIES, MODALITY_TEMPLATES, "modality"),
                                          ("region", REGIONS, REGION_TEMPLATES, "region")):
        keys = list(classes)
        probs = probabilities(image_embeddings, label_embeddings(list(classes.values()), encoder, templates), scale)
        correct = np.array([keys[i] == getattr(s, key) for i, s in zip(probs.argmax(1), samples, strict=False)])
        result[f"{task}_accuracy"] = float(correct.mean())
        for dataset in sorted({s.dataset for s in samples}):
            mask = np.array([s.dataset == dataset for s in samples])
            result.setdefault("per_dataset", {}).setdefault(dataset, {"n": int(mask.sum())})[f"{task}_accuracy"] = float(correct[mask].mean())
    captions: dict[str, set[int]] = {}
    for index, sample in enumerate(samples):
        if sample.caption:
            captions.setdefault(sample.caption, set()).add(index)
    if captions:
        medpix = [i for i, s in enumerate(samples) if s.caption]
        position = {index: rank for rank, index in enumerate(medpix)}
        queries = list(captions)
        text = encoder.encode_text(queries)
        relevant = [{position[i] for i in captions[q]} for q in queries]
        result["medpix_queries"], result["medpix_images"] = len(queries), len(medpix)
        for k in (1, 10):
            result[f"text_to_image_recall@{k}"] = recall_at_k(text, image_embeddings[medpix], relevant, k)
    return result


def evaluate_samples(data: Path, samples: Sequence[Sample], encoder: Encoder) -> dict:
    """:func:`evaluate` on ``samples`` (from a split manifest) of the datasets under ``data``, through the
    encoder's own preprocessing on the raw planes (not the training cache)."""
    embeddings = encoder.encode_planes([read_plane(data, s) for s in samples])
    return evaluate(samples, embeddings, encoder, getattr(encoder, "logit_scale", DEFAULT_SCALE))


def evaluate_manifest(data: Path, manifest: Path, encoder: Encoder, split: str = "test") -> dict:
    """The held-out report of the model card: :func:`evaluate_samples` on ``split`` of a split manifest
    (``medfm train clip --manifest-only``), with the manifest's sha256, the weights' sha256 and the
    one-thread :func:`throughput`."""
    samples = read_split_manifest(manifest, split)
    if not samples:
        raise MedfmError(f"{display_path(manifest)}: no image in split {split!r}")
    return {"model": encoder.info.name, "weights_sha256": encoder.info.weights_sha256, "manifest": display_path(manifest),
            "manifest_sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest(), "split": split,
            **evaluate_samples(data, samples, encoder), "images_per_second_1_thread_batch_32": throughput(encoder)}


def throughput(encoder: Encoder, batch: int = 32, size: int = 256, repeats: int = 5) -> float:
    """Images per second of ``encode_planes`` on ``(size, size)`` uint8 planes, batches of ``batch``
    (preprocessing included), with whatever thread count torch is set to."""
    planes = list(np.random.default_rng(0).integers(0, 256, (batch, size, size), dtype=np.uint8))
    encoder.encode_planes(planes)  # warm-up: first-call allocations
    began = time.perf_counter()
    for _ in range(repeats):
        encoder.encode_planes(planes)
    return batch * repeats / (time.perf_counter() - began)
