"""Few-shot heads on frozen embeddings, and the probe file that carries one with its operating point.

Two heads, both scikit-learn style estimators on ``(N, D)`` unit embeddings:
:class:`LinearProbe` (logistic regression, fitted by scikit-learn, applied with numpy so
prediction needs no training stack) and :class:`KNNClassifier` (similarity-weighted vote
of the ``k`` nearest labelled examples). A probe file (JSON) stores the head, the
encoder it was fitted on (name, size, weights sha256: other encoders are refused) and,
for two classes, the operating point chosen on calibration data with its confusion
matrix, applied at prediction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.operating_point import OperatingPoint
from medfm.io.formats import atomic_path
from medfm.models.encoders.base import EncoderInfo, model_record
from medfm.serialize import json_ready

FORMAT = "medfm-probe"
VERSION = 1


def _labels(y: Sequence[Any], n: int) -> np.ndarray:
    labels = np.asarray([str(v) for v in y])
    if len(labels) != n:
        raise MedfmError(f"got {len(labels)} labels for {n} embeddings")
    if len(set(labels)) < 2:
        raise MedfmError(f"a classifier needs at least two classes; got {sorted(set(labels.tolist()))}")
    return labels


def _check_fitted(estimator: Any) -> None:
    if not hasattr(estimator, "classes_"):
        raise MedfmError(f"this {type(estimator).__name__} is not fitted yet; call fit(embeddings, labels) first")


class LinearProbe:
    """Logistic regression on embeddings; ``C`` is the inverse L2 strength; ``class_weight="balanced"`` weighs
    each class's rows by the inverse of its frequency (scikit-learn's meaning), for a rare class.

    Fitted: ``classes_`` (sorted labels), ``coef_`` ``(L, D)`` and ``intercept_`` ``(L,)``
    (one row for two classes: the score of ``classes_[1]``).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, class_weight: str | None = None) -> None:
        self.C = C
        self.max_iter = max_iter
        self.class_weight = class_weight

    def fit(self, embeddings: np.ndarray, labels: Sequence[Any]) -> LinearProbe:
        """``embeddings`` ``(N, D)``, ``labels`` ``(N,)`` (any values; kept as text)."""
        from sklearn.linear_model import LogisticRegression

        embeddings = np.asarray(embeddings, np.float64)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight=self.class_weight).fit(embeddings, _labels(labels, len(embeddings)))
        self.classes_ = [str(c) for c in model.classes_]
        self.coef_, self.intercept_ = model.coef_.astype(np.float64), model.intercept_.astype(np.float64)
        return self

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """``(N, L)`` probabilities, columns in ``classes_`` order."""
        _check_fitted(self)
        logits = np.asarray(embeddings, np.float64) @ self.coef_.T + self.intercept_
        if len(self.classes_) == 2:
            positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def state(self) -> dict[str, Any]:
        return {"C": self.C, "max_iter": self.max_iter, "class_weight": self.class_weight, "coef": self.coef_.tolist(),
                "intercept": self.intercept_.tolist()}

    @classmethod
    def from_state(cls, classes: list[str], state: dict[str, Any]) -> LinearProbe:
        # probes saved before class weights existed were fitted without them
        probe = cls(state["C"], state["max_iter"], state.get("class_weight"))
        probe.classes_, probe.coef_, probe.intercept_ = classes, np.asarray(state["coef"]), np.asarray(state["intercept"])
        return probe


class KNNClassifier:
    """The ``k`` most cosine-similar labelled embeddings vote, each with weight ``(1 + cos) / 2``.

    Fitted: ``classes_``, ``support_`` ``(N, D)`` unit rows and ``support_labels_`` ``(N,)``.
    """

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def fit(self, embeddings: np.ndarray, labels: Sequence[Any]) -> KNNClassifier:
        if self.k < 1:
            raise MedfmError(f"k must be at least 1; got {self.k}")
        embeddings = np.asarray(embeddings, np.float32)
        labels = _labels(labels, len(embeddings))
        self.classes_ = sorted(set(labels.tolist()))
        self.support_ = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        self.support_labels_ = labels
        return self

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        _check_fitted(self)
        similarity = np.asarray(embeddings, np.float32) @ self.support_.T
        k = min(self.k, len(self.support_))
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = (1.0 + np.take_along_axis(similarity, nearest, axis=1)) / 2.0
        column = {label: i for i, label in enumerate(self.classes_)}
        votes = np.zeros((len(similarity), len(self.classes_)))
        for row in range(len(similarity)):
            np.add.at(votes[row], [column[label] for label in self.support_labels_[nearest[row]]], weights[row])
        return votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)

    def state(self) -> dict[str, Any]:
        return {"k": self.k, "support": self.support_.tolist(), "support_labels": self.support_labels_.tolist()}

    @classmethod
    def from_state(cls, classes: list[str], state: dict[str, Any]) -> KNNClassifier:
        knn = cls(state["k"])
        knn.classes_ = classes
        knn.support_ = np.asarray(state["support"], np.float32)
        knn.support_labels_ = np.asarray(state["support_labels"])
        return knn


HEADS = {"logistic": LinearProbe, "knn": KNNClassifier}


def confusion(predicted_positive: np.ndarray, positive: np.ndarray) -> dict[str, int]:
    """``{"tp", "fp", "tn", "fn"}`` counts from two ``(N,)`` bool arrays."""
    return {"tp": int(np.sum(predicted_positive & positive)), "fp": int(np.sum(predicted_positive & ~positive)),
            "tn": int(np.sum(~predicted_positive & ~positive)), "fn": int(np.sum(~predicted_positive & positive))}


@dataclass
class Probe:
    """A fitted head with the encoder it belongs to and, for two classes, an operating point.

    ``operating_point``: ``{"positive", "target", "value", "threshold", "sensitivity",
    "specificity", "confusion"}`` chosen on calibration data, or ``None`` (then the most
    probable class is predicted).
    """

    head: LinearProbe | KNNClassifier
    model: dict[str, Any]
    operating_point: dict[str, Any] | None = None
    training: dict[str, Any] | None = None

    @property
    def classes(self) -> list[str]:
        return self.head.classes_

    def check_model(self, info: EncoderInfo) -> None:
        if model_record(info) != self.model:
            raise MedfmError(f"the probe was fitted on model {self.model['name']!r} (weights "
                             f"{self.model['weights_sha256'][:12]}), not {info.name!r} (weights "
                             f"{info.weights_sha256[:12]}); use the probe's model")

    def calibrate(self, embeddings: np.ndarray, labels: Sequence[Any], target: str = "youden",
                  value: float | None = None, positive: str | None = None) -> Probe:
        """Choose the operating point on calibration ``embeddings`` ``(N, D)`` with ``labels`` ``(N,)``."""
        if len(self.classes) != 2:
            raise MedfmError(f"an operating point needs two classes; the probe has {len(self.classes)}: {self.classes}")
        positive = self.classes[1] if positive is None else str(positive)
        if positive not in self.classes:
            raise MedfmError(f"positive class {positive!r} is not one of the probe's classes {self.classes}")
        truth = np.asarray([str(v) for v in labels]) == positive
        scores = self.head.predict_proba(embeddings)[:, self.classes.index(positive)]
        point = OperatingPoint(target, value).fit(scores, truth)
        self.operating_point = {
            "positive": positive, "target": target, "value": value, "threshold": point.threshold_,
            "sensitivity": point.sensitivity_, "specificity": point.specificity_,
            "confusion": confusion(point.predict(scores), truth), "n_calibration": int(len(truth)),
        }
        return self

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """``(N, L)`` probabilities and the N predicted labels (by the operating point, if any)."""
        proba = self.head.predict_proba(embeddings)
        if self.operating_point is None:
            return proba, [self.classes[i] for i in proba.argmax(axis=1)]
        positive = self.operating_point["positive"]
        negative = next(c for c in self.classes if c != positive)
        called = proba[:, self.classes.index(positive)] >= self.operating_point["threshold"]
        return proba, [positive if c else negative for c in called]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe as JSON, atomically."""
        method = next(name for name, cls in HEADS.items() if isinstance(self.head, cls))
        document = {"format": FORMAT, "version": VERSION, "method": method, "model": self.model,
                    "classes": self.classes, "operating_point": self.operating_point,
                    "training": self.training, "head": self.head.state()}
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(json_ready(document), allow_nan=False))
        return path


def load_probe(path: str | os.PathLike) -> Probe:
    """Read a probe file written by :meth:`Probe.save`."""
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MedfmError(f"{display_path(path)}: probe file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MedfmError(f"{display_path(path)}: not a readable probe file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise MedfmError(f"{display_path(path)}: not a medfm probe file")
    if document.get("version") != VERSION or document.get("method") not in HEADS:
        raise MedfmError(f"{display_path(path)}: probe version {document.get('version')} / method "
                         f"{document.get('method')!r} is not one this medfm reads")
    head = HEADS[document["method"]].from_state(document["classes"], document["head"])
    return Probe(head, document["model"], document["operating_point"], document.get("training"))
