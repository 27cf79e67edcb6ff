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
from medfm.eval.text_metrics import answer_correct, bleu4, meteor, open_answer_recall, rouge_l, term_f1

#: Kinds of question in a VQA reference file's optional ``type`` column (``closed`` when absent).
QUESTION_TYPES = ("closed", "open")


def read_texts(path: str | os.PathLike, field: str, extra: str | None = None) -> dict[str, str]:
    """``{id: text}`` from a CSV (columns ``id`` and ``field``) or JSON Lines file; with ``extra``, that
    optional column instead (``""`` where a row lacks it)."""
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
        texts[key] = row[field] if extra is None else str(row.get(extra) or "")
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
    """``{"n", "metrics": {"bleu4", "rouge_l", "meteor", "term_f1": {"value", "low", "high"}}, "cases":
    [{"id", "rouge_l", "meteor", "term_f1"}]}``: corpus BLEU-4, mean ROUGE-L F1, mean METEOR (exact and
    stem matches, see :mod:`medfm.eval.text_metrics`) and mean clinical-term F1, with percentile
    bootstrap intervals over cases."""
    ids, predictions, references = _paired(pred, gold, "text")
    per_case = {name: np.array([metric(p, r) for p, r in zip(predictions, references, strict=True)])
                for name, metric in (("rouge_l", rouge_l), ("meteor", meteor), ("term_f1", term_f1))}

    def statistic(rows: np.ndarray) -> dict[str, float]:
        return {"bleu4": bleu4([predictions[i] for i in rows], [references[i] for i in rows]),
                **{name: float(values[rows].mean()) for name, values in per_case.items()}}

    estimates = bootstrap(statistic, len(ids), n_boot=n_boot, seed=seed)
    return {"n": len(ids), "metrics": {name: e.as_dict() for name, e in estimates.items()},
            "cases": [{"id": i, **{name: round(float(values[k]), 6) for name, values in per_case.items()}}
                      for k, i in enumerate(ids)]}


def evaluate_answers(pred: str | os.PathLike, gold: str | os.PathLike, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``{"n", "metrics": {...: {"value", "low", "high"}}, "cases": [{"id", "type", "score"}]}``.

    The reference file's optional ``type`` column says which questions are ``closed`` (the default: yes/no or
    one of a label set, scored by exact match with case, punctuation and articles ignored) and which ``open``
    (free text, scored by the recall of the reference answer's words in the prediction, as LLaVA-Med and
    the VQA-RAD/SLAKE evaluations do). Metrics: ``accuracy`` (closed), ``open_recall`` (open) and, when both
    kinds are present, ``overall`` (the mean score over all questions); each with a bootstrap interval."""
    ids, predictions, references = _paired(pred, gold, "answer")
    kinds = read_texts(gold, "answer", extra="type")
    types = [kinds[i].strip().lower() or "closed" for i in ids]
    if unknown := sorted(set(types) - set(QUESTION_TYPES)):
        raise MedfmError(f"{display_path(gold)}: question type {unknown[0]!r} is not one of {', '.join(QUESTION_TYPES)}")
    scores = np.array([answer_correct(p, r) if kind == "closed" else open_answer_recall(p, r)
                       for p, r, kind in zip(predictions, references, types, strict=True)])
    closed, open_ = np.array([t == "closed" for t in types]), np.array([t == "open" for t in types])

    def statistic(rows: np.ndarray) -> dict[str, float]:
        out = {}
        for name, mask in (("accuracy", closed), ("open_recall", open_)):
            if mask.any():
                chosen = rows[mask[rows]]
                out[name] = float(scores[chosen].mean()) if len(chosen) else float("nan")
        if closed.any() and open_.any():
            out["overall"] = float(scores[rows].mean())
        return out

    estimates = bootstrap(statistic, len(ids), n_boot=n_boot, seed=seed)
    return {"n": len(ids), "metrics": {name: e.as_dict() for name, e in estimates.items()},
            "cases": [{"id": i, "type": t, "score": round(float(c), 6)} for i, t, c in zip(ids, types, scores, strict=True)]}
