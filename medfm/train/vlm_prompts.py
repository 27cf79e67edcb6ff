"""Prompt optimisation for a local vision-language model (``medfm optimize-prompts --vlm``), DSPy style.

DSPy's ``BootstrapFewShotWithRandomSearch`` (and Prompt Triage after it) for questions about images:

1. **Bootstrap** demonstrations from the manifest's ``train`` rows: the model answers each bare
   question, and the rows it gets right become question–answer demonstrations (with the reference
   answer). When it gets none right, every train row is a candidate demonstration instead
   (DSPy's labelled few-shot); the result says which.
2. **Random search**: ``budget`` candidate prompt sets, each an instruction drawn from
   :data:`INSTRUCTIONS` and up to ``max_demonstrations`` demonstrations drawn from that pool; the
   bare question (the baseline) is always a candidate. Each is scored on the ``val`` rows.
3. **Keep** the best only when its validation gain over the bare question is clear of noise (the
   95 % paired bootstrap interval lies above 0), as the template search does, and **measure** it
   against the bare question on the ``test`` rows with a paired bootstrap interval.

Answers are scored as ``medfm evaluate vqa`` scores them: ``closed`` questions (the default; a
``type`` column may say ``open``) by exact match with case, punctuation and articles ignored,
``open`` ones by the recall of the reference answer's words. Demonstrations are text: the
model sees only the asked image's pictures, so they teach the answer's form and vocabulary.
Each row's image is read once; every candidate costs one generation per validation row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.eval.text_metrics import answer_correct, open_answer_recall
from medfm.io import load
from medfm.io.manifest import read_rows
from medfm.models.language import LanguageModel
from medfm.provenance import Provenance
from medfm.tasks.vlm import PROMPT_SET_KIND, PromptSet, ask_model

#: Candidate instructions ("": none).
INSTRUCTIONS = (
    "",
    "Answer the question about the medical image.",
    "Answer in one or two words.",
    "You are a radiologist. Answer briefly and precisely.",
    "Look at the image carefully, then give only the answer, without explanation.",
    "Answer yes or no when the question asks whether something is present; otherwise name it in a few words.",
)
DEFAULT_BUDGET = 8
DEFAULT_MAX_DEMONSTRATIONS = 3
#: Train rows the model answers while bootstrapping, at most.
BOOTSTRAP_ROWS = 16
#: Tokens per answer while searching (answers are short).
ANSWER_TOKENS = 16


def score_answer(prediction: str, reference: str, kind: str) -> float:
    """``medfm evaluate vqa``'s score of one answer: exact match (closed) or word recall (open)."""
    return answer_correct(prediction, reference) if kind == "closed" else open_answer_recall(prediction, reference)


def optimize_vlm_prompts(manifest: str | os.PathLike, model: LanguageModel, *, path_column: str = "path",
                         question_column: str = "question", answer_column: str = "answer", split_column: str = "split",
                         budget: int = DEFAULT_BUDGET, max_demonstrations: int = DEFAULT_MAX_DEMONSTRATIONS,
                         seed: int = 0) -> dict[str, Any]:
    """Choose a prompt set for ``model`` on the manifest's ``val`` rows, demonstrations from its ``train`` rows,
    measured against the bare question on its ``test`` rows: ``{"prompt_set", "bootstrapped", "validation":
    {"n", "chosen", "baseline", "tried", "best_gain", "kept_baseline"}, "test": {"n", "chosen", "baseline",
    "gain"} (each [value, low, high]), "provenance"}``."""
    if budget < 1:
        raise MedfmError(f"--budget must be at least 1; got {budget}")
    if max_demonstrations < 0:
        raise MedfmError(f"--max-demonstrations must be 0 or more; got {max_demonstrations}")
    manifest = Path(manifest)
    rows = read_rows(manifest, (path_column, question_column, answer_column, split_column))
    kinds = [(row.get("type") or "closed").lower() for row in rows]
    for line, (row, kind) in enumerate(zip(rows, kinds, strict=True), start=2):
        if not row[path_column] or not row[question_column] or not row[answer_column]:
            raise MedfmError(f"{display_path(manifest)}, line {line}: empty {path_column!r}, {question_column!r} or {answer_column!r}")
        if kind not in ("closed", "open"):
            raise MedfmError(f"{display_path(manifest)}, line {line}: question type {kind!r} is not closed or open")
    split = {name: [n for n, row in enumerate(rows) if row[split_column] == name] for name in ("train", "val", "test")}
    if not all(split.values()):
        raise MedfmError(f"{display_path(manifest)}: the search needs train (demonstrations), val and test rows in "
                         f"{split_column!r}; got {', '.join(f'{len(v)} {k}' for k, v in split.items())}")
    images = {n: load(manifest.parent / rows[n][path_column]) for n in sorted(set().union(*split.values()))}

    def scores(prompts: PromptSet, chosen: list[int]) -> np.ndarray:
        return np.array([score_answer(ask_model([images[n]], rows[n][question_column], model, prompts=prompts,
                                                max_new_tokens=ANSWER_TOKENS)["answer"], rows[n][answer_column], kinds[n])
                         for n in chosen])

    rng = np.random.default_rng(seed)
    trial = [int(n) for n in rng.permutation(split["train"])[:BOOTSTRAP_ROWS]]
    right = [n for n, score in zip(trial, scores(PromptSet(), trial), strict=True) if score == 1.0]
    pool = [(rows[n][question_column], rows[n][answer_column]) for n in (right or split["train"])]
    baseline = PromptSet()
    candidates = [baseline]
    for _ in range(budget - 1):
        count = int(rng.integers(0, min(max_demonstrations, len(pool)) + 1))
        picked = tuple(pool[int(i)] for i in rng.choice(len(pool), count, replace=False))
        candidates.append(PromptSet(INSTRUCTIONS[int(rng.integers(len(INSTRUCTIONS)))], picked))
    candidates = list(dict.fromkeys(candidates))  # a repeated draw costs nothing twice
    validation = {prompts: scores(prompts, split["val"]) for prompts in candidates}
    best = max(candidates, key=lambda prompts: validation[prompts].mean())  # ties: the earliest, the baseline first
    gain = bootstrap(lambda i: {"gain": float(validation[best][i].mean() - validation[baseline][i].mean())},
                     len(split["val"]), seed=seed)["gain"]
    chosen = best if gain.low > 0 else baseline
    on_test = {"chosen": scores(chosen, split["test"])}
    on_test["baseline"] = on_test["chosen"] if chosen == baseline else scores(baseline, split["test"])
    estimates = bootstrap(lambda i: {"chosen": float(on_test["chosen"][i].mean()), "baseline": float(on_test["baseline"][i].mean()),
                                     "gain": float(on_test["chosen"][i].mean() - on_test["baseline"][i].mean())},
                          len(split["test"]), seed=seed)
    return {
        "prompt_set": chosen.to_dict(),
        "bootstrapped": {"tried": len(trial), "answered_right": len(right),
                         "pool": "answered right" if right else "every train row (none answered right)"},
        "validation": {"n": len(split["val"]), "chosen": round(float(validation[chosen].mean()), 4),
                       "baseline": round(float(validation[baseline].mean()), 4), "tried": len(candidates),
                       "best_gain": [round(gain.value, 4), round(gain.low, 4), round(gain.high, 4)],
                       "kept_baseline": chosen == baseline},
        "test": {"n": len(split["test"]), **{k: [round(e.value, 4), round(e.low, 4), round(e.high, 4)] for k, e in estimates.items()}},
        "provenance": Provenance(kind="report", model=model.info.name, weights_sha256=model.info.weights_sha256,
                                 parameters={"method": "bootstrapped few-shot with random search", "budget": budget,
                                             "max_demonstrations": max_demonstrations, "seed": seed,
                                             "split_column": split_column}),
    }


def write_prompt_set(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """An :func:`optimize_vlm_prompts` result as the JSON file ``medfm ask --prompts`` reads (written whole or not at all)."""
    from medfm.io.formats import atomic_path

    provenance: Provenance = result["provenance"]
    saved = {"kind": PROMPT_SET_KIND, "model": provenance.model, "weights_sha256": provenance.weights_sha256,
             **result["prompt_set"], "validation": result["validation"], "test": result["test"],
             "bootstrapped": result["bootstrapped"]}
    path = Path(path)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    return path
