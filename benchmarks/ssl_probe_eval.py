"""Linear-probe and kNN accuracy of image encoders on held-out labelled tasks; prints JSON.

Compares randomly initialised backbones, encoders written by ``medfm pretrain`` and the
shipped medfm-clip-small, on the split manifest of ``medfm train clip --manifest-only``
(probes fitted on ``train`` rows, scored on ``test`` rows, never pretrained on):

* ``modality`` — 8 imaging modalities across every dataset (train: at most ``--per-class``
  rows per class);
* ``ph2_diagnosis`` — PH2 common nevus / atypical nevus / melanoma;
* ``pocus_class`` — POCUS clip label from frames (normal / COVID-19 / viral pneumonia).

Heads are medfm's own (:class:`~medfm.models.probe.LinearProbe`, :class:`~medfm.models.probe.KNNClassifier`,
k = 10) on unit embeddings; accuracies carry 95 % bootstrap intervals resampling test groups.

    python benchmarks/ssl_probe_eval.py --manifest runs/medfm-clip/split_manifest.csv --data ../shared/data \\
        --encoder random:cnn-small --encoder runs/ssl-simdino-cnn-small --encoder medfm-clip-small --out runs/probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from medfm.eval.bootstrap import bootstrap
from medfm.models.encoders.base import Encoder, EncoderInfo
from medfm.models.probe import KNNClassifier, LinearProbe
from medfm.serialize import json_ready
from medfm.train.clip_data import Sample, read_plane, read_split_manifest

TASKS = {
    "modality": lambda s: s.modality,
    "ph2_diagnosis": lambda s: s.label if s.dataset == "ph2_dermoscopy" else None,
    "pocus_class": lambda s: s.label if s.dataset == "pocus_lung_ultrasound_video" else None,
}


def random_encoder(arch: str, seed: int = 0) -> Encoder:
    """A randomly initialised :mod:`medfm.models.encoders.backbone` of ``arch`` (not storable: no weights)."""
    import torch

    from medfm.models.encoders.backbone import DEFAULT_INPUT, BackboneEncoder, build_backbone

    torch.manual_seed(seed)
    model = build_backbone({"arch": arch, **DEFAULT_INPUT})
    return BackboneEncoder(model, EncoderInfo(f"random:{arch}", model.embed_dim, None))


def open_encoder(name: str) -> Encoder:
    from medfm.models import create_encoder

    return random_encoder(name.split(":", 1)[1]) if name.startswith("random:") else create_encoder(name)


def chosen_rows(samples: list[Sample], per_class: int, seed: int = 0) -> dict[str, dict[str, list[int]]]:
    """Per task: ``train`` and ``test`` row indices with a label (train capped at ``per_class`` per class)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, dict[str, list[int]]] = {}
    for task, label_of in TASKS.items():
        train = [i for i, s in enumerate(samples) if s.split == "train" and label_of(s)]
        by_class: dict[str, list[int]] = {}
        for i in train:
            by_class.setdefault(label_of(samples[i]), []).append(i)
        capped = sorted(j for members in by_class.values()
                        for j in (rng.choice(members, per_class, replace=False) if len(members) > per_class else members))
        rows[task] = {"train": [int(i) for i in capped],
                      "test": [i for i, s in enumerate(samples) if s.split == "test" and label_of(s)]}
    return rows


def probe_accuracy(train_x, train_y, test_x, test_y, groups, head) -> dict:
    predicted = np.asarray(head.fit(train_x, train_y).classes_)[head.predict_proba(test_x).argmax(axis=1)]
    correct = predicted == np.asarray(test_y)
    estimate = bootstrap(lambda r: {"accuracy": float(correct[r].mean())}, len(correct), clusters=groups, n_boot=1000)
    return estimate["accuracy"].as_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--encoder", action="append", required=True, help="registered name, encoder folder or random:ARCH")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    samples = read_split_manifest(args.manifest)
    rows = chosen_rows(samples, args.per_class)
    needed = sorted({i for task in rows.values() for part in task.values() for i in part})
    began = time.perf_counter()
    planes = {i: read_plane(args.data, samples[i]) for i in needed}
    decode_s = time.perf_counter() - began
    result = {"manifest": str(args.manifest), "per_class": args.per_class, "decode_seconds": round(decode_s, 1),
              "tasks": {task: {"classes": sorted({TASKS[task](samples[i]) for i in part["test"]}),
                               "train": len(part["train"]), "test": len(part["test"]),
                               "test_groups": len({samples[i].group for i in part["test"]})} for task, part in rows.items()},
              "encoders": {}}
    for name in args.encoder:
        encoder = open_encoder(name)
        began = time.perf_counter()
        vectors = dict(zip(needed, encoder.encode_planes([planes[i] for i in needed]), strict=True))
        entry = {"weights_sha256": encoder.info.weights_sha256, "embed_dim": encoder.info.embed_dim,
                 "embed_seconds": round(time.perf_counter() - began, 1)}
        for task, part in rows.items():
            label_of = TASKS[task]
            train_x = np.stack([vectors[i] for i in part["train"]])
            test_x = np.stack([vectors[i] for i in part["test"]])
            train_y = [label_of(samples[i]) for i in part["train"]]
            test_y = [label_of(samples[i]) for i in part["test"]]
            groups = [samples[i].group for i in part["test"]]
            entry[task] = {"linear": probe_accuracy(train_x, train_y, test_x, test_y, groups, LinearProbe()),
                           "knn": probe_accuracy(train_x, train_y, test_x, test_y, groups, KNNClassifier(10))}
        result["encoders"][name] = entry
        print(f"{name}: " + ", ".join(f"{t} linear {entry[t]['linear']['value']:.3f} knn {entry[t]['knn']['value']:.3f}"
                                      for t in rows), file=sys.stderr)
    text = json.dumps(json_ready(result), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
