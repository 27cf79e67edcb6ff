"""Evaluate report drafts and answers against references, with bootstrap confidence intervals.

Predictions and references are files of ``id`` and text: CSV with columns ``id`` and
``text`` (reports) or ``answer`` (questions), or JSON Lines with the same keys. They pair by
``id``; an id in one file only is an error, not a silent drop.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.eval.text_metrics import answer_correct, bleu4, rouge_l, term_f1


def read_texts(path: str | os.PathLike, field: str) -> dict[str, str]:
    """``{id: text}`` from a CSV (columns ``id`` and ``field``) or JSON Lines file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MedfmError(f"{display_path(path)}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for line_number, line in enumerate(raw.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise MedfmError(f"{display_path(path)}, line {line_number}: not a JSON object") from None
    else:
        rows = list(csv.DictReader(raw.splitlines()))
    texts: dict[str, str] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or "id" not in row or not isinstance(row.get(field), str):
            raise MedfmError(f"{display_path(path)}: row {number} needs an 'id' and a text {field!r}")
        key = str(row["id"])
        if key in texts:
            raise MedfmError(f"{display_path(path)}: id {key!r} appears twice")
        texts[key] = row[field]
    if not texts:
        raise MedfmError(f"{display_path(path)}: no rows")
    return texts


def _paired(pred: str | os.PathLike, gold: str | os.PathLike, field: str) -> tuple[list[str], list[str], list[str]]:
    predictions, references = read_texts(pred, field), read_texts(gold, field)
    if missing := sorted(set(references) - set(predictions)):
        raise MedfmError(f"{display_path(pred)}: no prediction for {len(missing)} reference id(s), e.g. {missing[0]!r}")
    if extra := sorted(set(predictions) - set(references)):
        raise MedfmError(f"{display_path(pred)}: {len(extra)} id(s) have no reference, e.g. {extra[0]!r}")
    ids = sorted(references)
    return ids, [predictions[i] for i in ids], [references[i] for i in ids]


def evaluate_reports(pred: str | os.PathLike, gold: str | os.PathLike, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"n", "metrics": {"bleu4", "rouge_l", "term_f1": {"value", "low", "high"}}, "cases":
    [{"id", "rouge_l", "term_f1"}]}``: corpus BLEU-4, mean ROUGE-L F1 and mean clinical-term
    F1, with percentile bootstrap intervals over cases. METEOR is not computed (see
    :mod:`medfm.eval.text_metrics`)."""
    ids, predictions, references = _paired(pred, gold, "text")
    rouge = np.array([rouge_l(p, r) for p, r in zip(predictions, references, strict=True)])
    terms = np.array([term_f1(p, r) for p, r in zip(predictions, references, strict=True)])

    def statistic(rows: np.ndarray) -> dict[str, float]:
        return {"bleu4": bleu4([predictions[i] for i in rows], [references[i] for i in rows]),
                "rouge_l": float(rouge[rows].mean()), "term_f1": float(terms[rows].mean())}

    estimates = bootstrap(statistic, len(ids), n_boot=n_boot, seed=seed)
    return {"n": len(ids), "metrics": {name: e.as_dict() for name, e in estimates.items()},
            "cases": [{"id": i, "rouge_l": round(float(r), 6), "term_f1": round(float(t), 6)}
                      for i, r, t in zip(ids, rouge, terms, strict=True)]}


def evaluate_answers(pred: str | os.PathLike, gold: str | os.PathLike, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"n", "metrics": {"accuracy": {"value", "low", "high"}}, "cases": [{"id", "correct"}]}``:
    exact-match accuracy of closed answers (case, punctuation and articles ignored)."""
    ids, predictions, references = _paired(pred, gold, "answer")
    correct = np.array([answer_correct(p, r) for p, r in zip(predictions, references, strict=True)])
    estimates = bootstrap(lambda rows: {"accuracy": float(correct[rows].mean())}, len(ids), n_boot=n_boot, seed=seed)
    return {"n": len(ids), "metrics": {name: e.as_dict() for name, e in estimates.items()},
            "cases": [{"id": i, "correct": bool(c)} for i, c in zip(ids, correct, strict=True)]}
