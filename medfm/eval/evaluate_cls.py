"""Evaluating classifier scores from a CSV against labels and metadata from another.

The scores CSV holds the id column and either one score column (binary) or one column
per class. The labels CSV holds the id column, the label column and metadata columns;
for a multi-class task the label is a class name (a score column's name); when instead
it has a 0/1 column for every score column, the task is multi-label. Rows are joined on
the id; ids found in only one file are reported, never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm import __version__
from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.eval.calibration import expected_calibration_error, reliability_curve
from medfm.eval.cls_metrics import average_precision, macro, multilabel_auc, one_vs_rest_auc, rates_at, roc_auc
from medfm.eval.fairness import SUBGROUP_METRICS, SubgroupAnalysis, subgroup_analysis
from medfm.eval.operating_point import OperatingPoint
from medfm.eval.tables import Table, read_table
from medfm.serialize import json_ready


@dataclass
class ClassificationEvaluation:
    """The joined data and the results.

    ``scores`` ``(N,)`` (binary) or ``(N, K)``; ``labels`` ``(N,)`` 0/1 (binary), ``(N,)``
    class indices (multi-class) or ``(N, K)`` 0/1 (multi-label); ``class_names`` the score
    columns. ``summary`` is the JSON-ready result with intervals as
    ``{"value", "low", "high"}``.
    """

    task: str
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    summary: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return json_ready(self.summary)


def _labels(table: Table, ids: list[str], label_column: str, class_names: list[str]) -> tuple[str, np.ndarray]:
    if len(class_names) > 1 and all(c in table.columns for c in class_names):
        labels = np.array([[table.number(i, c) for c in class_names] for i in ids])
        task = "multilabel"
    else:
        table.require([label_column], "label")
        if len(class_names) == 1:
            labels, task = np.array([table.number(i, label_column) for i in ids]), "binary"
        else:
            index = {name: k for k, name in enumerate(class_names)}
            unknown = sorted({table.rows[i][label_column].strip() for i in ids} - index.keys())
            if unknown:
                raise MedfmError(
                    f"{display_path(table.path)}: labels {unknown[:5]} are not score columns ({', '.join(class_names)})"
                )
            return "multiclass", np.array([index[table.rows[i][label_column].strip()] for i in ids])
    if not np.isin(labels, (0, 1)).all():
        raise MedfmError(f"{display_path(table.path)}: {task} labels must be 0 or 1")
    return task, labels.astype(int)


def _binary_statistic(scores: np.ndarray, labels: np.ndarray, threshold: float, calibrated: bool, n_bins: int):
    def statistic(rows: np.ndarray) -> dict[str, float]:
        s, y = scores[rows], labels[rows]
        out = {"auc": roc_auc(s, y), "auprc": average_precision(s, y), **rates_at(s, y, threshold)}
        if calibrated:
            out["ece"] = expected_calibration_error(s, y, n_bins)
        return out

    return statistic


#: Unmatched-id lists of a :class:`ClassificationEvaluation`'s summary, in report order.
UNMATCHED_SIDES = ("scores_only", "labels_only")
#: Rates at the operating point of a binary task, in report order.
OPERATING_POINT_RATES = ("sensitivity", "specificity", "ppv", "npv")


def metric_names(task: str, class_names: Sequence[str]) -> list[str]:
    """The keys of ``summary["metrics"]`` for ``task``, in report order."""
    if task == "binary":
        return ["auc", "auprc"]
    return ["macro_auc", "macro_auprc", *(f"auc/{name}" for name in class_names), *(f"auprc/{name}" for name in class_names)]


def _per_class_statistic(task: str, scores: np.ndarray, labels: np.ndarray, class_names: list[str]):
    def statistic(rows: np.ndarray) -> dict[str, float]:
        s, y = scores[rows], labels[rows]
        onehot = np.eye(len(class_names), dtype=int)[y] if task == "multiclass" else y
        aucs = one_vs_rest_auc(s, y) if task == "multiclass" else multilabel_auc(s, y)
        aps = np.array([average_precision(s[:, k], onehot[:, k]) for k in range(len(class_names))])
        return dict(zip(metric_names(task, class_names), [macro(aucs), macro(aps), *aucs, *aps], strict=True))

    return statistic


@dataclass(frozen=True)
class JoinedRows:
    """The rows found in both files, in the scores file's order: ``scores`` ``(N, K)`` (one column per
    score column), ``labels`` as :class:`ClassificationEvaluation` holds them, ``clusters`` ``(N,)``
    patient keys or None, ``groups[column]`` ``(N,)`` subgroup keys, and the ids found in one file only."""

    ids: list[str]
    task: str
    class_names: list[str]
    scores: np.ndarray
    labels: np.ndarray
    clusters: np.ndarray | None
    groups: dict[str, list[str]]
    unmatched: dict[str, list[str]]


def join_rows(
    scores_csv: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    id_column: str = "id",
    label_column: str = "label",
    groups: Sequence[str] = (),
    patient_column: str | None = None,
) -> JoinedRows:
    """Read both files and join them on ``id_column``; see the module docstring for their layout."""
    score_table, label_table = read_table(scores_csv, id_column), read_table(labels_csv, id_column)
    class_names = score_table.columns
    if not class_names:
        raise MedfmError(f"{display_path(scores_csv)}: no score column besides {id_column!r}")
    label_table.require([c for c in [*groups, patient_column] if c], "metadata")
    ids = [i for i in score_table.rows if i in label_table.rows]
    unmatched = {
        "scores_only": [i for i in score_table.rows if i not in label_table.rows],
        "labels_only": [i for i in label_table.rows if i not in score_table.rows],
    }
    if not ids:
        raise MedfmError(
            f"no id is in both {display_path(scores_csv)} and {display_path(labels_csv)} (column {id_column!r})"
        )
    scores = np.array([[score_table.number(i, c) for c in class_names] for i in ids])
    task, labels = _labels(label_table, ids, label_column, class_names)
    clusters = np.array([label_table.rows[i][patient_column] for i in ids]) if patient_column else None
    keys = {column: [label_table.rows[i][column].strip() or "(missing)" for i in ids] for column in groups}
    return JoinedRows(ids, task, class_names, scores, labels, clusters, keys, unmatched)


def _calibration_section(scores: np.ndarray, labels: np.ndarray, ece: dict[str, Any], n_bins: int) -> dict[str, Any]:
    curve = reliability_curve(scores, labels, n_bins)
    return {
        "ece": ece,
        "n_bins": n_bins,
        "reliability": {
            "mean_predicted": curve.mean_predicted,
            "fraction_positive": curve.fraction_positive,
            "counts": curve.counts,
        },
    }


def _subgroup_section(analysis: SubgroupAnalysis) -> dict[str, Any]:
    return {
        "groups": {
            name: {
                "n": analysis.sizes[name][0],
                "n_positive": analysis.sizes[name][1],
                **{m: analysis.groups[name][m].as_dict() for m in SUBGROUP_METRICS},
            }
            for name in analysis.groups
        },
        "gaps": {m: {k: e.as_dict() for k, e in gap.items()} for m, gap in analysis.gaps.items()},
        "equalised_odds_difference": analysis.equalised_odds_difference.as_dict(),
    }


def _binary_results(
    joined: JoinedRows, threshold: float | None, n_bins: int, boot: dict[str, Any], labels_csv: str | os.PathLike
) -> dict[str, Any]:
    """AUC, AUPRC, the operating point, calibration and subgroups of a binary task."""
    scores, labels = joined.scores[:, 0], joined.labels
    if len(np.unique(labels)) < 2:
        raise MedfmError(f"{display_path(labels_csv)}: the matched rows hold only one class; AUC needs both")
    chosen_by = "given"
    if threshold is None:
        threshold, chosen_by = OperatingPoint().fit(scores, labels).threshold_, "youden on these rows"
    calibrated = bool(scores.min() >= 0 and scores.max() <= 1)
    statistic = _binary_statistic(scores, labels, threshold, calibrated, n_bins)
    estimates = {k: e.as_dict() for k, e in bootstrap(statistic, len(joined.ids), clusters=joined.clusters, **boot).items()}
    return {
        "n_positive": int(labels.sum()),
        "metrics": {name: estimates[name] for name in metric_names("binary", joined.class_names)},
        "operating_point": {
            "threshold": threshold,
            "chosen_by": chosen_by,
            **{k: estimates[k] for k in OPERATING_POINT_RATES},
        },
        "calibration": _calibration_section(scores, labels, estimates["ece"], n_bins) if calibrated
        else {"skipped": "scores are not probabilities in [0, 1]"},
        "subgroups": {
            column: _subgroup_section(subgroup_analysis(scores, labels, keys, threshold, clusters=joined.clusters, **boot))
            for column, keys in joined.groups.items()
        },
    }


def evaluate_classification(
    scores_csv: str | os.PathLike,
    labels_csv: str | os.PathLike,
    *,
    id_column: str = "id",
    label_column: str = "label",
    groups: Sequence[str] = (),
    patient_column: str | None = None,
    threshold: float | None = None,
    n_bins: int = 10,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ClassificationEvaluation:
    """AUC-ROC and AUPRC with bootstrap intervals; for binary tasks also the operating
    point, calibration (when scores are probabilities) and metrics per subgroup of each
    ``groups`` column.

    ``threshold`` None chooses Youden's J on these same rows (optimistic: report a
    threshold fixed beforehand when there is one). With ``patient_column``, resampling
    draws patients and all their rows.
    """
    joined = join_rows(scores_csv, labels_csv, id_column=id_column, label_column=label_column, groups=groups,
                       patient_column=patient_column)
    task, class_names = joined.task, joined.class_names
    if task != "binary" and groups:
        raise MedfmError(f"subgroup analysis (groups) supports binary tasks only; this task is {task}")
    boot = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    summary: dict[str, Any] = {
        "medfm_version": __version__,
        "task": task,
        "n": len(joined.ids),
        "classes": class_names,
        "unmatched": joined.unmatched,
        "bootstrap": {**boot, "resampling": f"patients ({patient_column})" if patient_column else "rows"},
    }
    if task == "binary":
        summary.update(_binary_results(joined, threshold, n_bins, boot, labels_csv))
        return ClassificationEvaluation(task, joined.scores[:, 0], joined.labels, class_names, summary)
    statistic = _per_class_statistic(task, joined.scores, joined.labels, class_names)
    estimates = bootstrap(statistic, len(joined.ids), clusters=joined.clusters, **boot)
    summary["metrics"] = {key: e.as_dict() for key, e in estimates.items()}
    return ClassificationEvaluation(task, joined.scores, joined.labels, class_names, summary)
