"""``medfm train router``: a domain router (:mod:`medfm.models.router`) from planes labelled with modality and region.

The manifest is a CSV with columns ``image``, ``modality``, ``region`` and ``split`` (``train`` or ``val``; other
rows are ignored), image paths relative to its folder. Labels are written as medfm's axis keys (``ct``, ``mri``,
``xray``, …; ``head``, ``chest``, ``msk``, …: :data:`medfm.tasks.domains.AXES`) so that ``ask`` answers in its
words; other labels are kept as written. An empty cell leaves the plane out of that axis.

For each axis and each input size of :data:`INPUT_SIZES`, the train planes' pooled stage features are
standardised and a multinomial logistic regression is fitted (scikit-learn) for each L2 strength of
:data:`C_GRID`; the size and strength with the best val accuracy are kept (train accuracy when there are no
val rows). The heads are stored in float16 and the accuracies reported are those of the stored heads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.models.registry import DEFAULT_ENCODER, create_encoder
from medfm.models.router import AxisHead, pooled_features, route_with
from medfm.train.run_folder import publish_model_folder

AXES = ("modality", "region")
#: Square sizes a plane is resized to: the encoder's training size and twice it (finer texture).
INPUT_SIZES = (112, 224)
#: Inverse L2 strengths tried for each axis (features are standardised: strong regularisation suits a few hundred planes).
C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1)
#: The tower stages pooled (the 56² stage adds little and costs most).
STAGES = [1, 2, 3]
WEIGHTS_FILE = "weights.safetensors"


def read_manifest(path: Path) -> dict[str, list[tuple[Path, dict[str, str]]]]:
    """``{split: [(image, {axis: label})]}`` (empty labels left out); one-line errors."""
    from medfm.io.manifest import read_rows

    from medfm.tasks.domains import AXES as KEYS

    splits: dict[str, list[tuple[Path, dict[str, str]]]] = {"train": [], "val": []}
    for row in read_rows(path, ("image", *AXES, "split")):
        for axis in AXES:
            # "MRI" for "mri" would train a class that ask's words never match: a slip, not a new label
            near = next((key for key in KEYS[axis][0] if key.casefold() == row[axis].casefold() and row[axis] != key), None)
            if near is not None:
                raise MedfmError(f"{display_path(path)}: {axis} label {row[axis]!r} is written {near!r} in medfm's keys")
        if row["split"] in splits:
            splits[row["split"]].append((path.parent / row["image"], {axis: row[axis] for axis in AXES if row[axis]}))
    return splits


def features(rows: list[tuple[Path, dict[str, str]]], encoder: Any) -> dict[int, np.ndarray]:
    """``{input size: (N, F)}`` pooled stage features of the rows' images: the planes ``ask`` reads of each (a 2D image's
    one plane; a volume's or video's sampled planes, their features averaged), a row at a time."""
    from medfm.models.preprocess import prepare_plane
    from medfm.tasks.embed import image_planes

    out: dict[int, list[np.ndarray]] = {size: [] for size in INPUT_SIZES}
    with torch.inference_mode():
        for image, _ in rows:
            planes = image_planes(image)
            for size in INPUT_SIZES:
                pixels = torch.stack([prepare_plane(plane, size) for plane in planes])
                out[size].append(pooled_features(encoder, pixels, STAGES).mean(0).numpy())
    return {size: np.stack(chunks) for size, chunks in out.items()}


def labelled(rows: list[tuple[Path, dict[str, str]]], axis: str, classes: list[str]) -> tuple[list[int], list[str]]:
    """``(row numbers, labels)`` of the rows labelled on ``axis`` with one of ``classes``."""
    picked = [(number, labels[axis]) for number, (_, labels) in enumerate(rows) if labels.get(axis) in classes]
    return [number for number, _ in picked], [label for _, label in picked]


def fit_axis(head: AxisHead, train: np.ndarray, labels: list[str], classes: list[str], C: float) -> None:
    """Fill ``head`` (float16-rounded) with a logistic regression of standardised ``train`` features on ``labels``."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = train.mean(0), np.maximum(train.std(0), 1e-6)
    model = LogisticRegression(C=C, max_iter=5000).fit((train - mean) / scale, labels)
    order = [list(model.classes_).index(c) for c in classes]
    weight, bias = (model.coef_, model.intercept_) if len(classes) > 2 else (np.vstack([-model.coef_, model.coef_]) / 2,
                                                                              np.array([-1.0, 1.0]) * model.intercept_ / 2)
    state = {"mean": mean, "scale": scale, "linear.weight": weight[order], "linear.bias": bias[order]}
    head.load_state_dict({key: torch.from_numpy(np.asarray(value, np.float32)).half().float() for key, value in state.items()})


def accuracy(head: AxisHead, values: np.ndarray, labels: list[str], classes: list[str]) -> float:
    with torch.no_grad():
        predicted = head(torch.from_numpy(values)).argmax(1).numpy()
    return float(np.mean([classes[p] == label for p, label in zip(predicted, labels, strict=True)]))


def train_router(manifest: Path, out: Path, *, encoder_name: str = DEFAULT_ENCODER,
                 log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Fit a domain router over ``encoder_name``'s frozen tower on ``manifest`` (see the module) and write the model
    folder ``out`` (config with the choices and accuracies, float16 weights); returns the training summary."""
    from medfm.io.formats import check_output_folder

    if out.exists():
        raise MedfmError(f"{display_path(out)}: already exists; choose a new model folder")
    check_output_folder(out.parent)
    splits = read_manifest(manifest)
    classes = {axis: sorted({labels[axis] for _, labels in splits["train"] if axis in labels}) for axis in AXES}
    classes = {axis: keys for axis, keys in classes.items() if keys}
    if not classes:
        raise MedfmError(f"{display_path(manifest)}: no train row has a modality or region label")
    for axis, keys in classes.items():
        if len(keys) < 2:
            raise MedfmError(f"{display_path(manifest)}: the train rows' {axis} labels are all {keys[0]!r}; a router needs two or more")
    encoder = create_encoder(encoder_name)
    config: dict[str, Any] = {"family": "medfm_router", "kind": "router", "encoder": encoder_name,
                              "encoder_sha256": encoder.info.weights_sha256, "stages": STAGES, "classes": classes,
                              "input_sizes": {axis: INPUT_SIZES[0] for axis in classes}}
    router = route_with({"name": out.name, **config}, None, encoder)  # refuses an encoder of another family
    started = time.monotonic()
    data = {split: (rows, features(rows, encoder)) for split, rows in splits.items() if rows}
    log(f"read {sum(len(rows) for rows, _ in data.values())} planes in {time.monotonic() - started:.0f} s")
    chosen_split = "val" if "val" in data else "train"
    summary: dict[str, Any] = {"validated_on": chosen_split if chosen_split == "val" else "train (no val rows)", "axes": {}}
    for axis, keys in classes.items():
        train_rows, train_labels = labelled(data["train"][0], axis, keys)
        check_rows, check_labels = labelled(data[chosen_split][0], axis, keys)
        grid = []
        for size in INPUT_SIZES:
            for C in C_GRID:
                fit_axis(router.heads[axis], data["train"][1][size][train_rows], train_labels, keys, C)
                grid.append({"input_size": size, "C": C, f"{chosen_split}_accuracy": round(accuracy(
                    router.heads[axis], data[chosen_split][1][size][check_rows], check_labels, keys), 4)})
        best = max(grid, key=lambda row: row[f"{chosen_split}_accuracy"])  # first of equals: the smaller size, the stronger L2
        fit_axis(router.heads[axis], data["train"][1][best["input_size"]][train_rows], train_labels, keys, best["C"])
        config["input_sizes"][axis] = best["input_size"]
        summary["axes"][axis] = {**best, "train_planes": len(train_rows), f"{chosen_split}_planes": len(check_rows), "grid": grid}
        log(f"{axis}: {len(keys)} classes, input {best['input_size']}², C {best['C']}, "
            f"{chosen_split} accuracy {best[f'{chosen_split}_accuracy']:.3f}")
    summary["seconds"] = round(time.monotonic() - started, 1)
    state = {key: value.half().contiguous() for key, value in router.heads.state_dict().items()}
    publish_model_folder(out, state, {**config, "training": summary}, WEIGHTS_FILE)
    return {"model_dir": display_path(out), **{k: v for k, v in summary.items() if k != "axes"},
            **{axis: {k: v for k, v in row.items() if k != "grid"} for axis, row in summary["axes"].items()}}

