"""Validation of a freshly trained automatic segmenter and its generated model card."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from torch import nn

from medfm.eval.bootstrap import bootstrap
from medfm.eval.seg_metrics import score_label_maps
from medfm.models.automatic.plan import Plan
from medfm.models.automatic.segmenter import AutoSegmenter
from medfm.models.segmenters.base import SegmenterInfo
from medfm.train.seg_data import Case, Pair, iterate_pairs

METRICS = ("dice", "hd95")


def validate(network: nn.Module, plan: Plan, cases: list[Case], by_group: bool) -> dict[str, Any]:
    """Per label: mean Dice and HD95 of the network's label maps on the held-out ``cases``, as :func:`score` gives them."""
    segmenter = AutoSegmenter(network, plan, SegmenterInfo("validation"))
    predicted = ((pair, segmenter.label_map(segmenter.probabilities(pair.pixels, pair.spacing)))
                 for pair in iterate_pairs(cases, plan.labels, plan.label_fusion or "staple"))
    return score(predicted, {value: plan.labels[value] for value in plan.label_values}, by_group)


def score(predicted: Iterable[tuple[Pair, np.ndarray]], labels: Mapping[int, str], by_group: bool) -> dict[str, Any]:
    """Per label: mean Dice and HD95 (voxels × spacing, mm) of predicted label maps (each on its pair's mask grid,
    ``(I, J, N)``) against the pairs' masks, with 95 % bootstrap intervals.

    A 2D image or a volume is scored as a whole; a video frame by frame (each frame one
    image). With ``by_group``, whole groups (subjects) are resampled. An image where the label
    is absent from both maps counts as Dice 1, as :func:`score_label_maps` defines.
    """
    values = list(labels)
    rows: dict[int, dict[str, list[float]]] = {v: {m: [] for m in METRICS} for v in values}
    groups = []
    for pair, prediction in predicted:
        if pair.kind == "volume":
            units = [(prediction, pair.mask, pair.spacing)]
        else:
            units = [(prediction[..., n], pair.mask[..., n], pair.spacing[:2]) for n in range(prediction.shape[-1])]
        for plane, reference, spacing in units:
            for value, scores in score_label_maps(plane, reference, spacing, values).items():
                for metric in METRICS:
                    rows[value][metric].append(getattr(scores, metric))
            groups.append(pair.case.group)
    result = {}
    for value in values:
        table = {m: np.array(rows[value][m], dtype=np.float64) for m in METRICS}

        def statistic(picked: np.ndarray, table=table) -> dict[str, float]:
            return {m: float(np.nanmean(table[m][picked])) if np.isfinite(table[m][picked]).any() else float("nan")
                    for m in METRICS}

        estimates = bootstrap(statistic, len(groups), clusters=groups if by_group else None, n_boot=500)
        result[str(value)] = {"name": labels[value], "images": len(groups),
                              **{m: estimates[m].as_dict() for m in METRICS}}
    return result


def model_card(name: str, plan: Plan, fingerprint: dict[str, Any], summary: dict[str, Any]) -> str:
    """The markdown card: data fingerprint, plan, validation Dice/HD95 per label with intervals, training time."""
    # pictures without a physical scale have a nominal 1 mm spacing: their distances are pixels, and say so
    known = fingerprint.get("spacing_known", True)
    lines = [f"# {name}", "", "Automatic segmentation net trained by `medfm train seg` on the user's own labels.", "",
             "## Validation (held-out images, never trained on)", "",
             f"| label | name | images | Dice (95% CI) | HD95 {'mm' if known else 'pixels'} (95% CI) |", "|---|---|---|---|---|"]
    for value, entry in summary["validation"].items():
        dice, hd95 = entry["dice"], entry["hd95"]
        lines.append(f"| {value} | {entry['name']} | {entry['images']} | {_interval(dice)} | {_interval(hd95)} |")
    lines += ["", "## Training", "",
              f"- architecture `{plan.architecture}`; {summary['steps']} steps in {summary['training_seconds']} s "
              f"(budget {summary['budget_minutes']} min), resumed at steps {summary['resumed_at_steps'] or 'never'}",
              f"- {summary['train_images']} training and {summary['val_images']} validation images; "
              f"data sha256 `{summary['data_sha256']}`",
              f"- loss (Dice + CE) {summary['loss_first_10']:.3f} over the first 10 steps, "
              f"{summary['loss_last_10']:.3f} over the last 10",
              _initialisation(summary.get("initialised_from")),
              "", "## Plan", "", "```json", plan.to_json(), "```", "",
              "## Data fingerprint", "",
              f"- {fingerprint['cases']} images ({fingerprint['kind']}), {fingerprint['channels']} channel(s), "
              f"modality {', '.join(fingerprint['modality'])}, {fingerprint['masks_per_image']['max']} mask(s) per image at most",
              f"- shape median {fingerprint['shape']['median']}, min {fingerprint['shape']['min']}, max {fingerprint['shape']['max']}",
              f"- spacing (mm) median {fingerprint['spacing_mm']['median']}" if known else
              "- spacing unknown (pictures without a physical scale): distances in pixels",
              f"- class frequencies {fingerprint['class_frequency']}", ""]
    return "\n".join(lines)


def _initialisation(source: dict[str, str] | None) -> str:
    if source is None:
        return "- initialisation: random"
    return (f"- encoder initialised from the {source['arch']} encoder folder `{source['encoder_dir']}` "
            f"(`medfm pretrain`), weights sha256 `{source['weights_sha256']}`")


def _interval(estimate: dict[str, float]) -> str:
    if not np.isfinite(estimate["value"]):
        return "undefined"
    return f"{estimate['value']:.3f} ({estimate['low']:.3f}–{estimate['high']:.3f})"
