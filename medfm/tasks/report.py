"""Retrieval-augmented report drafting (MMed-RAG style), offline on a CPU with the shipped encoder.

1. **Route** the study: zero-shot modality and body region (:mod:`medfm.tasks.domains`),
   with abstention; a modality the study's DICOM header records is taken as recorded.
2. **Retrieve** the nearest *captioned* cases of the user's index (built with captions,
   e.g. ``medfm index build --manifest M.csv --columns caption``), keeping only cases the
   router puts in the study's modality (their stored vectors are routed; nothing is
   re-read), when neither abstains.
3. **Cut** weak contexts: keep those whose similarity is at least ``ratio`` × the best
   one's (MMed-RAG's similarity-ratio cut; at most ``k``).
4. **Compose**: split the kept captions into sentences and pick, greedily, the sentences
   the other kept cases agree with most (the similarity-weighted ROUGE-L of the sentence
   against the other captions: a consensus, minimum-Bayes-risk choice), skipping
   near-repeats. Every sentence names the case it came from and its score. (Two other
   consensus rules were tried on MedPix-2.0's validation split, k 8 and ratio 0.8, 2026-12-05:
   agreement by clinical terms instead of ROUGE-L, and the whole caption most like the others.
   With two sentences both fell behind on ROUGE-L and term F1, by 0.016–0.021; with one they
   led on term F1 by 0.003 and trailed on ROUGE-L by 0.009–0.015.)

No language model writes anything: each sentence is a finding written for a similar past
case, which the reader must check against the study. Sentences are scrubbed of dates and
long digit runs (record numbers); index paths are never output. Names written into a
caption's free text are not detected: captions should be de-identified text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rouge_score import rouge_scorer

from medfm.errors import MedfmError, display_path
from medfm.io.formats import check_output_folder
from medfm.index import Index
from medfm.io import Image, load
from medfm.models.encoders.base import Encoder
from medfm.provenance import Provenance, pixels_id
from medfm.tasks.domains import AbstainBelow, Routed, recorded_modality, recorded_route, route
from medfm.tasks.embed import content_sha256
from medfm.tasks.search import embed_query

if TYPE_CHECKING:
    from medfm.io.dicom import DicomSeries

#: Contexts kept at most, the similarity-ratio cut and the sentences in a draft at most: the settings
#: ``benchmarks/language_medpix.py`` chose on MedPix-2.0's validation split (by ROUGE-L plus clinical-term F1).
DEFAULT_K = 8
DEFAULT_RATIO = 0.8
DEFAULT_SENTENCES = 3
#: Candidates retrieved per kept context, before the domain filter and the cut.
OVERFETCH = 4
#: A sentence whose ROUGE-L F1 with one already chosen exceeds this repeats it.
REPEAT_OVERLAP = 0.5
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])|\n+|\s+\d\.\s+")
_IDENTIFYING = re.compile(r"\b\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}\b|\b\d{5,}\b")
_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@dataclass(frozen=True)
class Context:
    """A retrieved case: its index ``id``, cosine ``score`` to the study and its ``caption``."""

    id: int
    score: float
    caption: str


@dataclass(frozen=True)
class Sentence:
    """A drafted sentence, the case it came from (``source``, ``score``) and its ``support``:
    the similarity-weighted agreement of the other kept cases (0 when it stands alone)."""

    text: str
    source: int
    score: float
    support: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "score": round(self.score, 6), "support": round(self.support, 6)}


def scrub(text: str) -> str:
    """``text`` with dates and long digit runs (record numbers) replaced by ``[redacted]``."""
    return _IDENTIFYING.sub("[redacted]", text)


def sentences(caption: str) -> list[str]:
    """The sentences of a caption, whitespace normalised, each ending with a full stop."""
    parts = [" ".join(part.split()).strip(" :;-") for part in _SENTENCE_END.split(caption)]
    return [part if part.endswith((".", "!", "?")) else part + "." for part in parts if len(part.split()) >= 2]


def cut_by_ratio(contexts: Sequence[Context], ratio: float) -> list[Context]:
    """The contexts, best first, whose score is at least ``ratio`` × the best score (the best
    is always kept; with a best score ≤ 0 nothing else is similar enough)."""
    if not 0 <= ratio <= 1:
        raise MedfmError(f"the similarity ratio must be between 0 and 1; got {ratio}")
    ranked = sorted(contexts, key=lambda c: -c.score)
    if not ranked:
        return []
    best = ranked[0].score
    return [ranked[0], *(c for c in ranked[1:] if best > 0 and c.score >= ratio * best)]


def compose(contexts: Sequence[Context], max_sentences: int = DEFAULT_SENTENCES) -> list[Sentence]:
    """Up to ``max_sentences`` sentences from the contexts' captions, most agreed-on first (see
    the module docstring); a lone context gives its own first sentences."""
    if max_sentences < 1:
        raise MedfmError(f"a draft needs at least one sentence; got max_sentences={max_sentences}")
    candidates = []
    for order, context in enumerate(contexts):
        others = [c for c in contexts if c.id != context.id]
        weight = sum(max(c.score, 0.0) for c in others) or 1.0
        for position, text in enumerate(sentences(context.caption)):
            support = sum(max(c.score, 0.0) * _SCORER.score(c.caption, text)["rougeL"].fmeasure for c in others) / weight
            # ties (a lone context) fall back to retrieval rank, then the caption's own order
            candidates.append((-support, order, position, Sentence(scrub(text), context.id, context.score, support)))
    chosen: list[Sentence] = []
    for *_, candidate in sorted(candidates, key=lambda c: c[:3]):
        if len(chosen) == max_sentences:
            break
        if all(_SCORER.score(s.text, candidate.text)["rougeL"].fmeasure <= REPEAT_OVERLAP for s in chosen):
            chosen.append(candidate)
    return chosen


def retrieve(vector: np.ndarray, encoder: Encoder, index: Index, *, k: int = DEFAULT_K, ratio: float = DEFAULT_RATIO,
             abstain_below: AbstainBelow = None, exclude: Collection[int] = (), recorded: str | None = None
             ) -> tuple[dict[str, Routed], list[Context], dict[str, int]]:
    """Route the study's ``(D,)`` unit embedding (its modality by the modality key it ``recorded`` in its
    DICOM header, when it did), retrieve and cut its captioned contexts (never the index items ``exclude``:
    the study itself, when it is indexed, is no past case):
    ``(route by axis, kept contexts best first, counts dropped by reason)``."""
    if k < 1:
        raise MedfmError(f"k must be at least 1; got {k}")
    index.check_model(encoder.info)
    routed = {axis: route(vector[None], encoder, axis, abstain_below)[0] for axis in ("modality", "region")}
    if recorded is not None:
        routed["modality"] = recorded_route(recorded, routed["modality"])
    hits = [hit for hit in index.search(vector, k * OVERFETCH + len(exclude))
            if hit.id not in exclude and (hit.metadata.get("caption") or "").strip()]
    dropped = {"uncaptioned_or_beyond_k": 0, "other_modality": 0, "ratio_cut": 0}
    if not hits:
        raise MedfmError(f"{index.location}: no indexed case has a caption; build the index with captions "
                         "(medfm index build --manifest M.csv --columns caption)")
    study_modality = routed["modality"].key
    if study_modality is not None:
        cases = route(index.vectors([hit.id for hit in hits]), encoder, "modality", abstain_below)
        kept = [hit for hit, case in zip(hits, cases, strict=True) if case.key in (None, study_modality)]
        dropped["other_modality"] = len(hits) - len(kept)
        hits = kept or hits[:1]
    contexts = [Context(hit.id, hit.score, hit.metadata["caption"]) for hit in hits[:k]]
    dropped["uncaptioned_or_beyond_k"] = len(hits) - len(contexts)
    kept_contexts = cut_by_ratio(contexts, ratio)
    dropped["ratio_cut"] = len(contexts) - len(kept_contexts)
    return routed, kept_contexts, dropped


def draft_report(study: str | os.PathLike | Image, encoder: Encoder, index: Index, *, k: int = DEFAULT_K,
                 ratio: float = DEFAULT_RATIO, max_sentences: int = DEFAULT_SENTENCES,
                 abstain_below: AbstainBelow = None, exclude: Collection[int] = ()) -> dict[str, Any]:
    """A retrieval-augmented draft report for ``study`` (a file, DICOM folder or :class:`Image`),
    from indexed cases other than ``exclude`` (the study's own index ids, when it is indexed):

    ``{"draft": text, "sentences": [{"text", "source", "score", "support"}], "route":
    {"modality", "region"}, "contexts": [{"id", "score", "caption"}], "dropped": counts,
    "provenance"}``. ``abstain_below`` is where the router abstains, one similarity or one per axis
    (:func:`medfm.models.registry.question_abstention`). The provenance
    (kind ``report``) names the encoder, the study by hash and the contexts by index id.
    """
    image = study if isinstance(study, Image) else load(study)  # load's errors name the file
    vector = embed_query(encoder, image=image)
    routed, contexts, dropped = retrieve(vector, encoder, index, k=k, ratio=ratio, abstain_below=abstain_below,
                                         exclude=exclude, recorded=recorded_modality([image.modality]))
    drafted = compose(contexts, max_sentences)
    study_id = pixels_id(study.array) if isinstance(study, Image) else f"file-sha256:{content_sha256(Path(study))}"
    provenance = Provenance(
        kind="report", model=encoder.info.name, weights_sha256=encoder.info.weights_sha256,
        inputs=(study_id, *(f"index-item:{c.id}" for c in contexts)),
        parameters={"method": "retrieval-augmented draft", "index": index.location, "size": len(index), "k": k,
                    "ratio": ratio, "max_sentences": max_sentences, "abstain_below": abstain_below},
    )
    return {"draft": " ".join(s.text for s in drafted), "sentences": [s.to_dict() for s in drafted],
            "route": {axis: r.to_dict() for axis, r in routed.items()},
            "contexts": [{"id": c.id, "score": round(c.score, 6), "caption": scrub(c.caption)} for c in contexts],
            "dropped": dropped, "provenance": provenance}


def check_sr_path(path: str | os.PathLike) -> Path:
    """``path`` if a DICOM SR can be written there (a ``.dcm`` name in an existing folder), else a one-line error."""
    path = Path(path)
    if path.suffix.lower() != ".dcm":
        raise MedfmError(f"{display_path(path)}: a DICOM SR is written to a .dcm file")
    check_output_folder(path.parent)
    return path


def save_report_sr(result: dict[str, Any], path: str | os.PathLike, series: DicomSeries | None = None) -> Path:
    """A draft (of :func:`draft_report`, or a language model's with its ``draft`` text) as a DICOM Comprehensive
    SR at ``path`` (:func:`medfm.io.dicom.sr.write_report_sr`), referencing the study's ``series`` when it is DICOM."""
    from medfm.io.dicom.sr import write_report_sr

    texts = [s["text"] for s in result.get("sentences") or []] or sentences(result["draft"])
    return write_report_sr(texts, result["provenance"], check_sr_path(path), series)
