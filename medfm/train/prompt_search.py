"""Prompt optimisation for zero-shot classification (``medfm optimize-prompts``), DSPy style.

DSPy's ``BootstrapFewShotWithRandomSearch`` (and Prompt Triage after it) draws candidate
prompt programs at random, scores each on a validation split and keeps the best. Here a
candidate is a set of class-name templates ("a {} scan", "an image of the {}", …) drawn
from :data:`TEMPLATE_BANK` (plus the baseline's) and, for each label given alternative
phrasings ("CT": "computed tomography", "CT scan"), a non-empty subset of the label itself and
its alternatives: each label's text embedding is the renormalised mean over its templates ×
phrasings (CLIP's prompt ensembling), and a candidate's score is its zero-shot accuracy on
the validation split. The baseline (the templates in use, each label as itself or as its
phrasings in use) is always a candidate, and the best candidate replaces it only when its validation gain is
clear of noise (the 95 % paired bootstrap interval of the gain lies above 0): the maximum
of hundreds of noisy validation scores beats any baseline by luck. Whether the choice
generalises is measured on the held-out test split, against the baseline, with a paired
bootstrap interval.

Every distinct prompt's embedding is computed once, and every image's once, so a candidate costs
a few means and a matrix product: a budget of thousands is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.bootstrap import bootstrap
from medfm.io.manifest import read_rows
from medfm.models.encoders.base import Encoder
from medfm.provenance import Provenance
from medfm.tasks.classify import check_labels
from medfm.tasks.embed import embed_paths
from medfm.tasks.zeroshot import DEFAULT_TEMPLATES

#: Candidate class-name templates (``{}``: the label).
TEMPLATE_BANK = (
    "{}", "a medical image of {}", "an image showing {}", "a photo of {}", "a {} image", "a {} scan",
    "an image of the {}", "a medical image of the {}", "a scan of the {}", "the {}", "a medical image acquired with {}",
    "a close-up image of {}", "a clinical image showing {}", "an example of {}", "a radiology image of the {}",
    "a picture of {}", "this is an image of {}", "a cropped image of {}",
)
DEFAULT_BUDGET = 256
DEFAULT_MAX_TEMPLATES = 6
#: A candidate: template indices in the bank, and for each label the indices of its chosen texts.
Candidate = tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]


class TemplateSearch:
    """Random search over template sets and label phrasings (see the module); scikit-learn style.

    ``fit(image_embeddings, labels, encoder)`` with ``(N, D)`` unit image embeddings of the
    validation split and their labels sets ``templates_`` (the chosen set), ``phrasings_`` (the
    chosen texts of each label not phrased as itself alone), ``accuracy_`` (their validation
    accuracy), ``baseline_accuracy_``, ``tried_`` (candidates scored), ``best_gain_`` (the best
    candidate's validation gain over the baseline as value, low, high) and ``kept_baseline_``
    (the choice is the baseline unless low > 0). ``phrasings``: for some labels, alternative texts that may stand for them;
    ``baseline_phrasings``: the phrasings in use with ``baseline`` (default: each label as itself).
    """

    def __init__(self, baseline: Sequence[str] = DEFAULT_TEMPLATES, bank: Sequence[str] = TEMPLATE_BANK, *,
                 phrasings: Mapping[str, Sequence[str]] | None = None,
                 baseline_phrasings: Mapping[str, Sequence[str]] | None = None,
                 budget: int = DEFAULT_BUDGET, max_templates: int = DEFAULT_MAX_TEMPLATES, seed: int = 0) -> None:
        self.baseline = tuple(baseline)
        self.bank = bank
        self.phrasings = dict(phrasings or {})
        self.baseline_phrasings = dict(baseline_phrasings or {})
        self.budget = budget
        self.max_templates = max_templates
        self.seed = seed

    def fit(self, image_embeddings: np.ndarray, labels: Sequence[str], encoder: Encoder) -> TemplateSearch:
        if self.budget < 1 or self.max_templates < 1:
            raise MedfmError(f"budget and max_templates must be at least 1; got {self.budget} and {self.max_templates}")
        bank = list(dict.fromkeys([*self.baseline, *self.bank]))
        if any("{}" not in template for template in bank):
            raise MedfmError(f"every template must contain '{{}}' for the label; got {[t for t in bank if '{}' not in t]}")
        self.classes_ = check_labels(sorted(set(labels)))  # refuses fewer than two
        if unknown := sorted({*self.phrasings, *self.baseline_phrasings} - set(self.classes_)):
            raise MedfmError(f"phrasings for labels {unknown} that no validation image has; the labels are {self.classes_}")
        self.bank_ = bank
        # each label's texts: itself, then its phrasings in the baseline, then the alternatives
        self.pools_ = [list(dict.fromkeys([c, *self.baseline_phrasings.get(c, ()), *self.phrasings.get(c, ())]))
                       for c in self.classes_]
        prompts = list(dict.fromkeys(t.format(text) for t in bank for pool in self.pools_ for text in pool))
        embedded = dict(zip(prompts, encoder.encode_text(prompts)))  # every distinct prompt once
        #: per label, its ``(templates, texts, D)`` prompt embeddings
        self.text_embeddings_ = [np.array([[embedded[t.format(text)] for text in pool] for t in bank]) for pool in self.pools_]
        truth = np.array([self.classes_.index(label) for label in labels])
        rng = np.random.default_rng(self.seed)
        candidates = [self._candidate(self.baseline, self.baseline_phrasings)]
        for _ in range(self.budget):
            size = int(rng.integers(1, min(self.max_templates, len(bank)) + 1))
            templates = tuple(sorted(rng.choice(len(bank), size, replace=False).tolist()))
            # each phrased label: a non-empty subset of its texts (a label with none draws nothing, as before phrasings)
            texts = tuple(tuple(sorted(rng.choice(len(pool), int(rng.integers(1, len(pool) + 1)), replace=False).tolist()))
                          if len(pool) > 1 else (0,) for pool in self.pools_)
            candidates.append((templates, texts))
        correct = [self._predict_indices(image_embeddings, c) == truth for c in candidates]
        scores = [float(c.mean()) for c in correct]
        # best accuracy; among equals the fewest templates, then the fewest texts, then the earliest drawn (the baseline first)
        best = min(range(len(candidates)),
                   key=lambda n: (-scores[n], len(candidates[n][0]), sum(map(len, candidates[n][1])), n))
        gain = bootstrap(lambda rows: {"gain": float(correct[best][rows].mean() - correct[0][rows].mean())},
                         len(truth), seed=self.seed)["gain"]
        self.best_gain_ = (round(gain.value, 4), round(gain.low, 4), round(gain.high, 4))
        chosen = best if gain.low > 0 else 0
        templates, texts = candidates[chosen]
        self.templates_ = [bank[i] for i in templates]
        self.phrasings_ = {c: phrased for c, pool, indices in zip(self.classes_, self.pools_, texts)
                           if (phrased := [pool[i] for i in indices]) != [c]}
        self.accuracy_, self.baseline_accuracy_, self.tried_ = scores[chosen], scores[0], len(candidates)
        self.kept_baseline_ = chosen == 0
        return self

    def _candidate(self, templates: Sequence[str], phrasings: Mapping[str, Sequence[str]]) -> Candidate:
        """The indices of ``templates`` in the fitted bank and of each label's ``phrasings`` in its texts."""
        try:
            return (tuple(self.bank_.index(t) for t in templates),
                    tuple(tuple(pool.index(text) for text in phrasings.get(c, (c,)))
                          for c, pool in zip(self.classes_, self.pools_)))
        except ValueError:
            raise MedfmError("the templates and phrasings to predict with must be among those searched") from None

    def _predict_indices(self, image_embeddings: np.ndarray, candidate: Candidate) -> np.ndarray:
        """Each image's class index under ``candidate``: each label's embedding is the renormalised mean of its
        prompts, the chosen templates × its chosen texts (CLIP's prompt ensembling)."""
        templates, texts = candidate
        mean = np.stack([prompts[np.ix_(templates, indices)].mean(axis=(0, 1))
                         for prompts, indices in zip(self.text_embeddings_, texts)])
        mean /= np.linalg.norm(mean, axis=1, keepdims=True)
        return (image_embeddings @ mean.T).argmax(axis=1)

    def predict(self, image_embeddings: np.ndarray, templates: Sequence[str] | None = None,
                phrasings: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """Labels of ``(N, D)`` unit image embeddings under the chosen templates and phrasings, or under
        ``templates`` with ``phrasings`` (default: each label as itself)."""
        if not hasattr(self, "templates_"):
            raise MedfmError("TemplateSearch is not fitted; call fit(...) first")
        candidate = (self._candidate(self.templates_, self.phrasings_) if templates is None
                     else self._candidate(templates, phrasings or {}))
        return [self.classes_[i] for i in self._predict_indices(image_embeddings, candidate)]


def split_rows(labels: Sequence[str], splits: Sequence[str] | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(validation rows, test rows)``: the ``split`` column's ``val`` and ``test`` rows, or
    without one, each label's rows shuffled (``seed``) and halved, the odd one to validation."""
    if splits is not None:
        return (np.flatnonzero(np.asarray(splits) == "val"), np.flatnonzero(np.asarray(splits) == "test"))
    rng = np.random.default_rng(seed)
    validation, test = [], []
    for label in sorted(set(labels)):
        rows = rng.permutation([n for n, value in enumerate(labels) if value == label])
        validation += rows[: (len(rows) + 1) // 2].tolist()
        test += rows[(len(rows) + 1) // 2:].tolist()
    return np.array(sorted(validation), int), np.array(sorted(test), int)


def optimize_prompts(manifest: str | os.PathLike, label_column: str, encoder: Encoder, *, path_column: str = "path",
                     split_column: str | None = None, baseline: Sequence[str] = DEFAULT_TEMPLATES,
                     baseline_phrasings: Mapping[str, Sequence[str]] | None = None,
                     phrasings: Mapping[str, Sequence[str]] | None = None, budget: int = DEFAULT_BUDGET,
                     max_templates: int = DEFAULT_MAX_TEMPLATES, seed: int = 0,
                     cache: bool | str | os.PathLike = True) -> dict[str, Any]:
    """Choose zero-shot templates for ``label_column`` on the manifest's validation rows, and with
    ``phrasings`` (``{label: [alternative texts]}``) each label's phrasings, and measure them against
    ``baseline`` (with ``baseline_phrasings``; default: each label as itself) on its test rows
    (:func:`split_rows`): ``{"templates", "phrasings" (the chosen texts of each label not phrased as
    itself alone), "labels", "validation": {"n", "chosen", "baseline", "tried", "best_gain",
    "kept_baseline"}, "test": {"n", "chosen", "baseline", "gain"} (each [value, low, high], 95 %
    paired bootstrap), "provenance"}``."""
    manifest = Path(manifest)
    rows = read_rows(manifest, (path_column, label_column, *([split_column] if split_column else [])))
    for line, row in enumerate(rows, start=2):
        if not row[path_column] or not row[label_column]:
            raise MedfmError(f"{display_path(manifest)}, line {line}: empty {path_column!r} or {label_column!r}")
    labels = [row[label_column] for row in rows]
    validation, test = split_rows(labels, [row[split_column] for row in rows] if split_column else None, seed)
    if len(validation) == 0 or len(test) == 0:
        raise MedfmError(f"{display_path(manifest)}: the search needs validation and test rows; "
                         f"got {len(validation)} and {len(test)} (split values must be 'val' and 'test')")
    if not encoder.info.has_text:
        raise MedfmError(f"encoder {encoder.info.name!r} has no text tower; prompt search needs an image-text model")
    chosen_rows = np.r_[validation, test]
    embeddings = np.zeros((len(rows), encoder.info.embed_dim), np.float32)
    embeddings[chosen_rows] = embed_paths([str((manifest.parent / rows[n][path_column]).resolve()) for n in chosen_rows],
                                          encoder, cache=cache)
    search = TemplateSearch(baseline, phrasings=phrasings, baseline_phrasings=baseline_phrasings, budget=budget,
                            max_templates=max_templates, seed=seed)
    search.fit(embeddings[validation], [labels[n] for n in validation], encoder)
    unknown = sorted({labels[n] for n in test} - set(search.classes_))
    if unknown:
        raise MedfmError(f"{display_path(manifest)}: test labels {unknown} never occur on the validation split")
    truth = np.array([labels[n] for n in test])
    chosen = np.array(search.predict(embeddings[test])) == truth
    base = np.array(search.predict(embeddings[test], list(baseline), baseline_phrasings)) == truth

    def statistic(picked: np.ndarray) -> dict[str, float]:
        return {"chosen": float(chosen[picked].mean()), "baseline": float(base[picked].mean()),
                "gain": float(chosen[picked].mean() - base[picked].mean())}

    estimates = bootstrap(statistic, len(test), seed=seed)
    return {
        "templates": search.templates_, "phrasings": search.phrasings_, "labels": search.classes_,
        "validation": {"n": len(validation), "chosen": round(search.accuracy_, 4), "baseline": round(search.baseline_accuracy_, 4),
                       "tried": search.tried_, "best_gain": list(search.best_gain_),
                       "kept_baseline": search.kept_baseline_},
        "test": {"n": len(test), **{k: [round(e.value, 4), round(e.low, 4), round(e.high, 4)] for k, e in estimates.items()}},
        "provenance": Provenance(kind="classification", model=encoder.info.name, weights_sha256=encoder.info.weights_sha256,
                                 parameters={"method": "template random search", "label_column": label_column, "budget": budget,
                                             "max_templates": max_templates, "seed": seed, "baseline": list(baseline),
                                             "baseline_phrasings": dict(baseline_phrasings or {}),
                                             "phrasings": dict(phrasings or {}),
                                             "split": split_column or f"stratified halves, seed {seed}"}),
    }


def write_templates(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """The chosen prompts of an :func:`optimize_prompts` result, the file ``medfm classify --templates`` reads
    (:func:`~medfm.tasks.classify.read_templates`), with the model and the measured accuracies: for a ``.json``
    path an object ``{"templates", "phrasings", "labels", "model", "weights_sha256", "validation", "test"}``; for
    any other the templates one per line after ``#`` lines, which cannot hold phrasings (refused when some were chosen)."""
    from medfm.io.formats import atomic_path

    provenance: Provenance = result["provenance"]
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps({"templates": result["templates"], "phrasings": result["phrasings"], "labels": result["labels"],
                           "model": provenance.model, "weights_sha256": provenance.weights_sha256,
                           "validation": result["validation"], "test": result["test"]}, indent=2) + "\n"
    elif result["phrasings"]:
        raise MedfmError(f"{display_path(path)}: label phrasings were chosen, which a templates file of one per line "
                         "cannot hold; write a .json file")
    else:
        test = result["test"]
        header = [f"# zero-shot templates chosen by medfm optimize-prompts for {provenance.model} "
                  f"(weights sha256 {provenance.weights_sha256}) on labels {', '.join(result['labels'])}",
                  f"# validation accuracy {result['validation']['chosen']} (baseline {result['validation']['baseline']}, "
                  f"{result['validation']['n']} images); test accuracy {test['chosen'][0]} (baseline {test['baseline'][0]}, "
                  f"gain {test['gain'][0]} [{test['gain'][1]}, {test['gain'][2]}], {test['n']} images)"]
        text = "\n".join([*header, *result["templates"]]) + "\n"
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
