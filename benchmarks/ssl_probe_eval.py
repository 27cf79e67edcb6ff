"""Linear-probe and kNN accuracy of image encoders on held-out labelled tasks; prints JSON.

Compares randomly initialised backbones, encoders written by ``medfm pretrain`` and the
shipped medfm-clip-small, on the split manifest of ``medfm train clip --manifest-only``
(probes fitted on ``train`` rows, scored on ``test`` rows, never pretrained on):

* ``modality`` — 8 imaging modalities across every dataset (train: at most ``--per-class``
  rows per class);
* ``ph2_diagnosis`` — PH2 common nevus / atypical nevus / melanoma;
* ``pocus_class`` — POCUS clip label from frames (normal / COVID-19 / viral pneumonia);
* ``bccd_cell_type`` — BCCD red cell / white cell / platelet from the box crops
  (:mod:`medfm.train.box_crops`), split by image as the manifest splits the BCCD images; train and
  test are both capped at ``--per-class`` crops per class (red cells outnumber the others 11 to 1).

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
from medfm.train.box_crops import cut, read_box_crops
from medfm.train.clip_data import Sample, read_plane, read_split_manifest

TASKS = {
    "modality": lambda s: s.modality,
    "ph2_diagnosis": lambda s: s.label if s.dataset == "ph2_dermoscopy" else None,
    "pocus_class": lambda s: s.label if s.dataset == "pocus_lung_ultrasound_video" else None,
}
#: Tasks on box crops: name → dataset folder whose ``boxes.csv`` holds the labelled boxes.
CROP_TASKS = {"bccd_cell_type": "bccd_blood_cells"}


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


#: One labelled plane of a task: (key of its plane, label, bootstrap group).
Item = tuple[tuple, str, str]


def capped(items: list[Item], per_class: int, rng: np.random.Generator) -> list[Item]:
    """At most ``per_class`` items of each label, drawn at random."""
    by_class: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_class.setdefault(item[1], []).append(index)
    chosen = sorted(j for members in by_class.values()
                    for j in (rng.choice(members, per_class, replace=False) if len(members) > per_class else members))
    return [items[int(j)] for j in chosen]


def chosen_items(samples: list[Sample], data: Path, per_class: int, seed: int = 0) -> dict[str, dict[str, list[Item]]]:
    """Per task: its ``train`` items (capped at ``per_class`` per class) and ``test`` items. A sample's plane key is
    ``("row", index)``; a crop's ``("crop", dataset, image, box)``, split and grouped by its image."""
    rng = np.random.default_rng(seed)
    tasks: dict[str, dict[str, list[Item]]] = {}
    for task, label_of in TASKS.items():
        items = {part: [(("row", i), label_of(s), s.group) for i, s in enumerate(samples) if s.split == part and label_of(s)]
                 for part in ("train", "test")}
        tasks[task] = {"train": capped(items["train"], per_class, rng), "test": items["test"]}
    for task, dataset in CROP_TASKS.items():
        split_of = {s.path: s.split for s in samples if s.dataset == dataset}
        items = {part: [(("crop", dataset, c.image, c.box), c.label, c.image)
                        for c in read_box_crops(data / dataset) if split_of.get(c.image) == part] for part in ("train", "test")}
        tasks[task] = {part: capped(items[part], per_class, rng) for part in ("train", "test")}
    return tasks


def read_planes(data: Path, samples: list[Sample], keys: list[tuple]) -> dict[tuple, np.ndarray]:
    """The plane of every key; each image is decoded once however many crops it holds."""
    planes, images = {}, {}
    for key in keys:
        if key[0] == "row":
            planes[key] = read_plane(data, samples[key[1]])
            continue
        _, dataset, image, box = key
        if (dataset, image) not in images:
            from medfm.io import load

            images[(dataset, image)] = load(data / dataset / image).frame(0, 0)
        planes[key] = cut(images[(dataset, image)], box)
    return planes


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
    parser.add_argument("--task", action="append", choices=[*TASKS, *CROP_TASKS], help="only these tasks (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    samples = read_split_manifest(args.manifest)
    tasks = chosen_items(samples, args.data, args.per_class)
    if args.task:
        tasks = {task: tasks[task] for task in args.task}
    needed = sorted({item[0] for task in tasks.values() for part in task.values() for item in part}, key=repr)
    began = time.perf_counter()
    planes = read_planes(args.data, samples, needed)
    decode_s = time.perf_counter() - began
    result = {"manifest": str(args.manifest), "per_class": args.per_class, "decode_seconds": round(decode_s, 1),
              "tasks": {task: {"classes": sorted({item[1] for item in part["test"]}),
                               "train": len(part["train"]), "test": len(part["test"]),
                               "test_groups": len({item[2] for item in part["test"]})} for task, part in tasks.items()},
              "encoders": {}}
    for name in args.encoder:
        encoder = open_encoder(name)
        began = time.perf_counter()
        vectors = dict(zip(needed, encoder.encode_planes([planes[i] for i in needed]), strict=True))
        entry = {"weights_sha256": encoder.info.weights_sha256, "embed_dim": encoder.info.embed_dim,
                 "embed_seconds": round(time.perf_counter() - began, 1)}
        for task, part in tasks.items():
            train_x = np.stack([vectors[item[0]] for item in part["train"]])
            test_x = np.stack([vectors[item[0]] for item in part["test"]])
            train_y = [item[1] for item in part["train"]]
            test_y = [item[1] for item in part["test"]]
            groups = [item[2] for item in part["test"]]
            entry[task] = {"linear": probe_accuracy(train_x, train_y, test_x, test_y, groups, LinearProbe()),
                           "knn": probe_accuracy(train_x, train_y, test_x, test_y, groups, KNNClassifier(10))}
        result["encoders"][name] = entry
        print(f"{name}: " + ", ".join(f"{t} linear {entry[t]['linear']['value']:.3f} knn {entry[t]['knn']['value']:.3f}"
                                      for t in tasks), file=sys.stderr)
    text = json.dumps(json_ready(result), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
