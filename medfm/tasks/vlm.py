"""Questions and report drafts from a local vision-language model (:class:`~medfm.models.language.LanguageModel`).

**Pictures the model sees** (:func:`model_pictures`). A language model takes 2D RGB
pictures, so medfm chooses and windows them:

* a volume's slices and a video's frames are planes in slice-then-frame order; the
  ``n`` chosen are evenly spaced, the centre of each of ``n`` equal runs of planes (one
  plane: the middle one), ``n`` being the model's image limit shared among the inputs;
* grey planes of any type but 8-bit are windowed by :func:`medfm.io.windowing.initial_window`
  (the DICOM header's window, else the modality's preset, CT 40/400, else the 0.5–99.5th
  percentile of the image's values), and 8-bit grey and colour pictures are kept as they
  are (:func:`medfm.models.encoders.planes.to_rgb_uint8`);
* the choice (slice and frame indices, window and where it came from) is returned and
  recorded in the provenance's ``parameters["pictures"]``.

**Prompts.** Only the user's question (with, when given, a prompt set of
``medfm optimize-prompts --vlm``: an instruction and question–answer demonstrations,
:class:`PromptSet`), or a fixed instruction and the captions of retrieved cases (scrubbed of
dates and record numbers by :func:`medfm.tasks.report.scrub`), go into a prompt: never file
names or header fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.index import Index
from medfm.io import Image, load
from medfm.io.windowing import initial_window
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import to_rgb_uint8
from medfm.models.language import LanguageModel
from medfm.models.language.base import DEFAULT_MAX_NEW_TOKENS
from medfm.provenance import Provenance, pixels_id, text_id
from medfm.tasks.report import DEFAULT_K, DEFAULT_RATIO, retrieve, scrub
from medfm.tasks.search import embed_query

#: The instruction of a report draft (retrieved cases' captions, if any, go before it).
REPORT_INSTRUCTION = "Write the findings of a radiology report for this study, in a few sentences."
#: What a prompt-set file of ``medfm optimize-prompts --vlm`` says it is.
PROMPT_SET_KIND = "medfm-vlm-prompt-set"


@dataclass(frozen=True)
class PromptSet:
    """An instruction and question–answer demonstrations placed before a question (DSPy's few-shot
    program); the empty set asks the bare question."""

    instruction: str = ""
    demonstrations: tuple[tuple[str, str], ...] = ()

    def render(self, question: str) -> str:
        """The prompt for ``question``: the instruction, each demonstration, then the question."""
        if not self.instruction and not self.demonstrations:
            return question
        parts = [self.instruction] if self.instruction else []
        parts += [f"Question: {asked}\nAnswer: {answer}" for asked, answer in self.demonstrations]
        return "\n\n".join([*parts, f"Question: {question}\nAnswer:"])

    def to_dict(self) -> dict[str, Any]:
        return {"instruction": self.instruction,
                "demonstrations": [{"question": q, "answer": a} for q, a in self.demonstrations]}


def read_prompt_set(path: str | os.PathLike, model: LanguageModel) -> PromptSet:
    """The prompt set of a ``medfm optimize-prompts --vlm`` file, chosen for ``model``'s weights (else a one-line error)."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("kind") != PROMPT_SET_KIND:
            raise ValueError("not a prompt set")
        prompt = PromptSet(str(saved["instruction"]), tuple((str(d["question"]), str(d["answer"])) for d in saved["demonstrations"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a prompt set of medfm optimize-prompts --vlm"
        raise MedfmError(f"{display_path(path)}: {reason}") from None
    if saved.get("weights_sha256") != model.info.weights_sha256:
        raise MedfmError(f"{display_path(path)}: chosen for {saved.get('model')!r} (weights sha256 "
                         f"{str(saved.get('weights_sha256'))[:12]}…), not for {model.info.name!r}; choose one for this model")
    return prompt


def model_pictures(image: Image, count: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Up to ``count`` ``(rows, columns, 3)`` uint8 pictures of ``image`` (see the module) and
    the record of the choice: ``{"planes": [{"slice_index", "frame_index"}], "window":
    {"center", "width", "source"} or None}``."""
    if count < 1:
        raise MedfmError(f"at least one picture per image is needed; got {count}")
    slices, planes = image.shape[2], image.shape[2] * image.shape[3]
    chosen = [int((n + 0.5) * planes / min(count, planes)) for n in range(min(count, planes))]
    window = None
    if image.num_channels == 1 and image.array.dtype != np.uint8:
        center, width, source = initial_window(image)
        window = {"center": float(center), "width": float(width), "source": source}
    bounds = (window["center"] - window["width"] / 2, window["center"] + window["width"] / 2) if window else None
    pictures = [to_rgb_uint8(image.frame(flat % slices, flat // slices), bounds) for flat in chosen]
    record = {"planes": [{"slice_index": flat % slices, "frame_index": flat // slices} for flat in chosen], "window": window}
    return pictures, record


def _pictures(images: Sequence[str | os.PathLike | Image], model: LanguageModel) -> tuple[list[np.ndarray], list[dict], list[str]]:
    """Every input's pictures (the model's image limit shared evenly), their records and the inputs' ids."""
    if not images:
        raise MedfmError("a question needs at least one image")
    if len(images) > model.info.max_images:
        raise MedfmError(f"model {model.info.name!r} ({model.info.family}) takes at most {model.info.max_images} "
                         f"image(s) per prompt; got {len(images)} inputs")
    share = model.info.max_images // len(images)
    pictures, records, ids = [], [], []
    for item in images:
        image = item if isinstance(item, Image) else load(Path(item))
        chosen, record = model_pictures(image, share)
        pictures += chosen
        records.append(record)
        ids.append(pixels_id(image.array))
    return pictures, records, ids


def _provenance(model: LanguageModel, inputs: Sequence[str], prompt: str, parameters: dict[str, Any]) -> Provenance:
    return Provenance(kind="report", model=model.info.name, weights_sha256=model.info.weights_sha256, inputs=tuple(inputs),
                      prompts=({"prompt": text_id(prompt)},),
                      parameters={"family": model.info.family, "decoding": "greedy", **parameters})


def stream_answer(images: Sequence[str | os.PathLike | Image], question: str, model: LanguageModel, *,
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, prompts: PromptSet = PromptSet()
                  ) -> tuple[Iterator[str], dict[str, Any]]:
    """``model``'s answer to ``question`` (put in ``prompts``) about ``images`` as it is written: ``(pieces,
    {"pictures", "provenance"})``; the images are read and checked before the first piece is asked for."""
    if not model.reads_prompt:
        raise MedfmError(f"{model.info.name} describes images and does not read questions; ask without --model "
                         "(zero-shot answers), or give a vision-language model folder")
    pictures, records, ids = _pictures(images, model)
    prompt = prompts.render(question)
    model.check_request(pictures, prompt, max_new_tokens)
    provenance = _provenance(model, ids, prompt, {"method": "local vision-language model", "pictures": records,
                                                  "max_new_tokens": max_new_tokens,
                                                  "demonstrations": len(prompts.demonstrations)})
    return model.stream(pictures, prompt, max_new_tokens=max_new_tokens), {"pictures": records, "provenance": provenance}


def ask_model(images: Sequence[str | os.PathLike | Image], question: str, model: LanguageModel, *,
              max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, prompts: PromptSet = PromptSet()) -> dict[str, Any]:
    """``model``'s answer to a (closed or open) ``question`` about ``images`` (files, DICOM
    folders or :class:`Image`; several are one question's frames or slices), asked within ``prompts``:
    ``{"answer", "pictures": per input, "provenance"}``."""
    pieces, record = stream_answer(images, question, model, max_new_tokens=max_new_tokens, prompts=prompts)
    return {"answer": "".join(pieces).strip(), **record}


def report_prompt(captions: Sequence[str]) -> str:
    """The drafting prompt: the retrieved cases' scrubbed captions, numbered, then :data:`REPORT_INSTRUCTION`."""
    if not captions:
        return REPORT_INSTRUCTION
    cases = "\n".join(f"{n}. {scrub(' '.join(caption.split()))}" for n, caption in enumerate(captions, 1))
    return f"Reports of similar past cases:\n{cases}\n\n{REPORT_INSTRUCTION}"


def draft_report_with_model(study: str | os.PathLike | Image, model: LanguageModel, *, encoder: Encoder | None = None,
                            index: Index | None = None, k: int = DEFAULT_K, ratio: float = DEFAULT_RATIO,
                            abstain_below: float | None = None,
                            max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> dict[str, Any]:
    """A draft report for ``study`` written by ``model``; with an ``index`` (and its ``encoder``)
    the retrieved, ratio-cut captioned cases (:func:`medfm.tasks.report.retrieve`) go into the
    prompt: ``{"draft", "contexts": [{"id", "score", "caption"}], "pictures", "provenance"}``."""
    if (index is None) != (encoder is None):
        raise MedfmError("retrieved cases need both the index and its encoder")
    if index is not None and not model.reads_prompt:
        raise MedfmError(f"{model.info.name} writes from the image alone and would not read the retrieved cases; "
                         "drop --index, or use a vision-language model folder")
    image = study if isinstance(study, Image) else load(Path(study))
    contexts = []
    if index is not None and encoder is not None:
        _, contexts, _ = retrieve(embed_query(encoder, image=image), encoder, index, k=k, ratio=ratio,
                                  abstain_below=abstain_below)
    prompt = report_prompt([c.caption for c in contexts])
    pictures, records, ids = _pictures([image], model)
    draft = model.generate(pictures, prompt, max_new_tokens=max_new_tokens)
    parameters: dict[str, Any] = {"method": "local vision-language model draft", "pictures": records,
                                  "max_new_tokens": max_new_tokens}
    if index is not None and encoder is not None:
        parameters["retrieval"] = {"index": index.location, "encoder": encoder.info.name, "k": k, "ratio": ratio}
    return {"draft": draft, "contexts": [{"id": c.id, "score": round(c.score, 6), "caption": scrub(c.caption)} for c in contexts],
            "pictures": records[0],
            "provenance": _provenance(model, [*ids, *(f"index-item:{c.id}" for c in contexts)], prompt, parameters)}
