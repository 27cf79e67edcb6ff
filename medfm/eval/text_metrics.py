"""Text metrics for reports and answers: pure functions over (prediction, reference) texts.

BLEU-4 is sacrebleu's corpus BLEU (its default 13a tokenisation), ROUGE-L the F1 of Google's
``rouge-score`` package (Porter stemming). METEOR is NLTK's ``meteor_score`` with its exact and
Porter-stem matching stages and **without its WordNet synonym stage**: WordNet's data is a
separate download that medfm never makes at run time, so "effusion" and "fluid" do not match
here as they would in the Java original; scores are comparable only with METEOR computed the
same way. The clinical-term F1 compares the findings and anatomy terms of :data:`TERMS_FILE`
(sources named in the file) mentioned by each text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from nltk.stem.porter import PorterStemmer
from nltk.translate.meteor_score import single_meteor_score
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from medfm.errors import MedfmError

TERMS_FILE = Path(__file__).parent / "data" / "clinical_terms.txt"
_ARTICLES = {"a", "an", "the"}


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise MedfmError(f"{len(predictions)} predictions for {len(references)} references; give one for each")
    if not predictions:
        raise MedfmError("no texts to score")


def bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 in [0, 1] of ``predictions`` against one reference each."""
    _check_pairs(predictions, references)
    return BLEU().corpus_score(list(predictions), [list(references)]).score / 100.0


@cache
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1] of one prediction against its reference."""
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader: every word has no synonym sets (see the module's note)."""

    @staticmethod
    def synsets(word: str) -> list:
        return []


@cache
def _stemmer() -> PorterStemmer:
    return PorterStemmer()


def meteor(prediction: str, reference: str) -> float:
    """METEOR in [0, 1] of one prediction against its reference: NLTK's implementation (α 0.9, β 3,
    γ 0.5) on lower-case word tokens, exact and stem matches only."""
    words = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
    return single_meteor_score(words.findall(reference.lower()), words.findall(prediction.lower()),
                               stemmer=_stemmer(), wordnet=_NoSynonyms())


def _tokens(text: str) -> list[str]:
    """Lower-case word tokens, plurals folded: a final "es" after s/x/sh/ch ("masses"), else a final "s"
    not after s or u ("effusions", but not "mass", "sinus")."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [word[:-2] if re.search(r"(s|x|sh|ch)es$", word) and len(word) > 4
            else word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")) else word
            for word in words]


@cache
def clinical_terms() -> tuple[tuple[tuple[str, ...], str], ...]:
    """The shipped terms as ``(tokens, term)``, longest first (so that "pleural effusion" wins over "effusion")."""
    lines = TERMS_FILE.read_text(encoding="utf-8").splitlines()
    terms = {tuple(_tokens(line)): line.strip() for line in lines if line.strip() and not line.startswith("#")}
    return tuple(sorted(terms.items(), key=lambda item: (-len(item[0]), item[0])))


def mentioned_terms(text: str) -> set[str]:
    """The shipped clinical terms ``text`` mentions, as whole word sequences, longest match first."""
    words = _tokens(text)
    found, used = set(), [False] * len(words)
    for tokens, term in clinical_terms():
        size = len(tokens)
        for start in range(len(words) - size + 1):
            if tuple(words[start:start + size]) == tokens and not any(used[start:start + size]):
                found.add(term)
                used[start:start + size] = [True] * size
    return found


def term_f1(prediction: str, reference: str) -> float:
    """F1 of the clinical terms mentioned by ``prediction`` against those of ``reference``;
    1.0 when neither mentions any (both agree there is nothing to name), 0.0 when one does."""
    predicted, gold = mentioned_terms(prediction), mentioned_terms(reference)
    if not predicted and not gold:
        return 1.0
    return 2 * len(predicted & gold) / (len(predicted) + len(gold))


def normalise_answer(answer: str) -> str:
    """An answer for exact matching: lower case, punctuation and articles removed."""
    return " ".join(word for word in re.findall(r"[a-z0-9-]+", answer.lower()) if word not in _ARTICLES)


def open_answer_recall(prediction: str, reference: str) -> float:
    """Share of the reference answer's words (normalised, plurals folded) that the prediction holds: the
    open-question score of LLaVA-Med's VQA evaluation; 1.0 for an empty reference."""
    gold, said = set(_tokens(normalise_answer(reference))), set(_tokens(normalise_answer(prediction)))
    return len(gold & said) / len(gold) if gold else 1.0


def answer_correct(prediction: str, reference: str) -> float:
    """1.0 when the normalised answers are equal (closed-question VQA accuracy), else 0.0."""
    return float(normalise_answer(prediction) == normalise_answer(reference))
