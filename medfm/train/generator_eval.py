"""Generators measured against the user's real images: the hub's ranking (``medfm models rank``) and
"is synthetic data useful?" (``medfm evaluate synthetic``).

Real images are compared as the generator's training prepares its own (the whole field of view resized
to the generator's size², 8-bit): the measures then see what the generator makes, not its resolution.
An image of another channel count than the generator's is refused rather than converted. Samples come
from :func:`medfm.tasks.generate.generate` at a fixed seed, so a ranking is reproducible. These live
in ``train`` because they join generation and embedding (tasks) with the metrics (eval).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.frd import compute_frd
from medfm.eval.synthetic import DEFAULT_K, precision_recall
from medfm.io.formats import image_suffix, load, save
from medfm.io.image import Image
from medfm.models.encoders.base import Encoder
from medfm.models.generators import Generator
from medfm.models.generators.pixels import label_plane, plane_pixels, resized, resized_labels, to_image
from medfm.models.registry import DEFAULT_ENCODER, create_encoder, list_generators
from medfm.tasks.embed import embed_paths
from medfm.tasks.generate import generate, open_generator, samples_folder

#: What ``medfm models rank`` ranks by.
RANK_METRICS = ("frd", "precision-recall")


def prepare_real(paths: Sequence[str | os.PathLike], generator: Generator, folder: Path, role: str) -> list[Path]:
    """Each image written into ``folder`` (created) as an 8-bit PNG prepared as ``generator``'s training
    prepares its images; an image of another channel count than the generator's is refused."""
    folder.mkdir(parents=True)
    written = []
    for n, path in enumerate(paths):
        pixels = plane_pixels(load(path), path)
        if len(pixels) != generator.channels:
            raise MedfmError(f"{display_path(path)}: the {role} image has {len(pixels)} channel(s); generator "
                             f"{generator.name!r} makes {generator.channels}-channel images")
        written.append(save(to_image(resized(pixels, generator.size, generator.channels)), folder / f"{n:05d}.png"))
    return written


def prepare_real_masks(masks: Sequence[str | os.PathLike], images: Sequence[str | os.PathLike], generator: Generator,
                       folder: Path) -> list[Path]:
    """Each mask written into ``folder`` (created) as a PNG label map resized as :func:`prepare_real` resizes its image
    (nearest neighbour), refused when it holds a label value the pair ``generator`` does not make."""
    folder.mkdir(parents=True)
    written, known = [], {0, *generator.mask_labels}
    for n, (mask, image) in enumerate(zip(masks, images, strict=True)):
        labels = resized_labels(label_plane(load(mask), load(image), mask), generator.size)
        unknown = sorted({int(v) for v in np.unique(labels)} - known)
        if unknown:
            raise MedfmError(f"{display_path(mask)}: label value {unknown[0]} is not one the generator {generator.name!r} "
                             f"makes ({', '.join(map(str, generator.mask_labels))})")
        if labels.max() <= 1:
            labels = labels * 255  # a single structure as white, as the generator's own label maps are written
        written.append(save(Image(np.ascontiguousarray(labels.T[:, :, None, None, None]), np.eye(4)), folder / f"{n:05d}.png"))
    return written


def frd_summary(real_folder: Path, synthetic_folder: Path, workers: int | None) -> dict[str, Any]:
    """FRD of the synthetic images against the real ones, without the per-image lists."""
    result = compute_frd(real_folder, synthetic_folder, workers=workers)
    return {"frd": None if not np.isfinite(result.frd) else result.frd, "n_real": result.n_a, "n_synthetic": result.n_b,
            "n_features": len(result.features), "n_out_of_distribution": sum(o["above_threshold"] for o in result.ood),
            "n_skipped": len(result.skipped)}


def reference_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a reference folder (by their suffix), sorted; refused when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedfmError(f"{display_path(folder)}: the reference folder does not exist or is not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and image_suffix(p))
    if not images:
        raise MedfmError(f"{display_path(folder)}: the reference folder holds no image files")
    return images


def rank_generators(reference: str | os.PathLike, *, metric: str = "frd", generators: Sequence[str | os.PathLike] | None = None,
                    folders: Sequence[str | os.PathLike] = (), n: int | None = None, seed: int = 0, steps: int | None = None,
                    guidance: float | None = None, k: int = DEFAULT_K, encoder: Encoder | None = None,
                    workers: int | None = None) -> dict[str, Any]:
    """Every registered generator (or those named in ``generators``) and each generator folder in ``folders``,
    ranked for the images in ``reference``: by FRD of ``n`` samples (default: as many as reference images,
    spread over the generator's classes, seeds ``seed``...) against the reference, lowest first; or by the
    harmonic mean of improved precision and recall on ``encoder``'s embeddings (default:
    :data:`~medfm.models.registry.DEFAULT_ENCODER`; ``k`` neighbours), highest first.
    """
    if metric not in RANK_METRICS:
        raise MedfmError(f"unknown ranking metric {metric!r}; choose one of: {', '.join(RANK_METRICS)}")
    if generators is None:
        generators = list(list_generators())
    sources = [(name, "registered") for name in generators] + [(folder, "folder") for folder in folders]
    if not sources:
        raise MedfmError("no generator to rank: none is registered (`medfm models list --kind generator`) and no --generator was given")
    images = reference_images(reference)
    count = len(images) if n is None else n
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise MedfmError(f"--n must be a whole number of at least 2 samples; got {count!r}")
    opened = [(open_generator(source), kind) for source, kind in sources]  # every name checked before any work
    if metric == "precision-recall" and encoder is None:
        encoder = create_encoder(DEFAULT_ENCODER)
    rows = []
    with tempfile.TemporaryDirectory(prefix="medfm-rank-") as tmp:
        prepared: dict[tuple[int, int], list[Path]] = {}  # reference images and embeddings by (size, channels)
        real_embeddings: dict[tuple[int, int], np.ndarray] = {}
        for number, (model, kind) in enumerate(opened):
            shape = (model.size, model.channels)
            if shape not in prepared:
                prepared[shape] = prepare_real(images, model, Path(tmp) / f"reference-{len(prepared)}", "reference")
            samples = Path(tmp) / f"samples-{number}"
            samples.mkdir()
            made = generate(model, samples, count, seed=seed, steps=steps, guidance=guidance)
            samples = samples_folder(samples, model)
            row = {"generator": model.name, "source": kind, "weights_sha256": model.weights_sha256, "size": model.size,
                   "channels": model.channels, "n_samples": count, "steps": made["steps"], "guidance": made["guidance"]}
            if metric == "frd":
                row.update(frd_summary(prepared[shape][0].parent, samples, workers))
            else:
                if shape not in real_embeddings:
                    real_embeddings[shape] = embed_paths(prepared[shape], encoder, cache=False)
                synthetic = embed_paths(sorted(samples.iterdir()), encoder, cache=False)
                row.update(precision_recall(real_embeddings[shape], synthetic, k))
            rows.append(row)
    if metric == "frd":
        rows.sort(key=lambda r: -np.inf if r["frd"] is None else r["frd"])
    else:
        rows.sort(key=lambda r: -r["f1"])
    return {
        "reference": display_path(reference), "n_reference": len(images), "metric": metric, "seed": seed,
        "ranking": [{"rank": rank, **row} for rank, row in enumerate(rows, start=1)],
        "settings": {"preparation": "reference images resized to each generator's size², 8-bit, as its training prepared images",
                     "order": "FRD, lowest first" if metric == "frd" else
                     f"harmonic mean of improved precision and recall (k={k}), highest first",
                     **({"encoder": {"name": encoder.info.name, "weights_sha256": encoder.info.weights_sha256}} if encoder else {})},
    }
