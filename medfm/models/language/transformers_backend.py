"""Local image-text-to-text checkpoints through Hugging Face transformers, never the network.

A checkpoint folder is what ``save_pretrained`` (or a hub snapshot copied by hand) holds:
``config.json``, ``*.safetensors`` weights and the processor's files (tokenizer, image
processor, chat template). :func:`load_transformers_model` reads the folder's
``config.json`` first and refuses, in one line, a family medfm does not drive (see
:data:`FAMILIES`), a family other than the one asked for, or a folder without safetensors
weights; only then does transformers load it, with ``local_files_only`` and the offline
flags set, so a missing file is an error rather than a download.

The prompt is the processor's chat template applied to one user turn (the images, then
the text) when the checkpoint has one (MedGemma, Qwen2-VL, LLaVA instruct models), else
the family's image placeholders followed by the text (PaliGemma's processor adds its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.models.language.base import DEFAULT_MAX_NEW_TOKENS, LanguageModel, LanguageModelInfo

# read by huggingface_hub and transformers when first imported: no hub lookups, no telemetry
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass(frozen=True)
class Family:
    """How medfm drives one architecture: the text that stands for one image in a prompt
    without a chat template, what separates the images from the text, and the images one
    prompt takes at most."""

    placeholder: str
    separator: str
    max_images: int


#: ``config.json`` ``model_type`` → how medfm drives it.
FAMILIES = {
    "gemma3": Family("<start_of_image>", "\n", 8),  # Gemma 3 and MedGemma
    "paligemma": Family("<image>", "", 1),  # its processor adds <bos> after the images and "\n" after the text
    "qwen2_vl": Family("<|vision_start|><|image_pad|><|vision_end|>", "\n", 8),
    "qwen2_5_vl": Family("<|vision_start|><|image_pad|><|vision_end|>", "\n", 8),
    "llava": Family("<image>", "\n", 4),
}


def checkpoint_family(folder: Path) -> str:
    """The ``model_type`` of the checkpoint in ``folder``, refused unless medfm drives it."""
    config_path = folder / "config.json"
    if not folder.is_dir():
        raise MedfmError(f"{display_path(folder)}: not a model folder (a folder holding config.json and safetensors weights)")
    try:
        config = json.loads(config_path.read_text())
        model_type = config.get("model_type")
    except FileNotFoundError:
        raise MedfmError(f"{display_path(folder)}: no config.json; not a transformers checkpoint folder") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise MedfmError(f"{display_path(config_path)}: cannot read as a model config ({exc})") from None
    if model_type not in FAMILIES:
        from medfm.models.registry import describe_model_config

        raise MedfmError(f"{display_path(folder)}: {describe_model_config(config)}, not an image-text model medfm can run; "
                         f"families: {', '.join(FAMILIES)}")
    return model_type


def weights_sha256(files: Sequence[Path]) -> str:
    """One sha256 for a checkpoint's weight files: of their names and each file's sha256, in name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        with open(path, "rb") as handle:
            digest.update(f"{path.name}:{hashlib.file_digest(handle, 'sha256').hexdigest()}\n".encode())
    return digest.hexdigest()


class TransformersLanguageModel(LanguageModel):
    """A loaded checkpoint (see the module): ``model`` and ``processor`` are transformers' own."""

    def __init__(self, model: Any, processor: Any, info: LanguageModelInfo) -> None:
        self.model = model.eval()
        self.processor = processor
        self.info = info

    def prompt_text(self, image_count: int, prompt: str) -> str:
        """The text handed to the processor: chat template or placeholders (see the module)."""
        if getattr(self.processor, "chat_template", None):
            content = [*({"type": "image"} for _ in range(image_count)), {"type": "text", "text": prompt}]
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        family = FAMILIES[self.info.family]
        return family.placeholder * image_count + family.separator + prompt

    def inputs(self, images: Sequence[np.ndarray], prompt: str) -> Any:
        """The processor's tensors for ``images`` (``(rows, columns, 3)`` uint8) and ``prompt``."""
        from PIL import Image as PILImage

        pictures = [PILImage.fromarray(picture) for picture in images]
        inputs = self.processor(images=pictures, text=self.prompt_text(len(pictures), prompt), return_tensors="pt")
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels, which generation does not take
        return inputs

    def stream(self, images: Sequence[np.ndarray], prompt: str, *,
               max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        self.check_request(images, prompt, max_new_tokens)
        inputs = self.inputs(images, prompt)
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
            except BaseException as exc:  # handed to the reading thread, which raises it
                failure.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        yield from (piece for piece in streamer if piece)
        worker.join()
        if failure:
            raise MedfmError(f"model {self.info.name!r} failed while generating ({failure[0]})")


def load_transformers_model(folder: str | os.PathLike, family: str | None = None) -> TransformersLanguageModel:
    """The image-text-to-text checkpoint in ``folder`` (see the module), refused in one line
    when it is not of ``family`` (if given), of no family medfm drives, or has no safetensors weights."""
    folder = Path(folder)
    model_type = checkpoint_family(folder)
    if family is not None and family != model_type:
        raise MedfmError(f"{display_path(folder)}: a {model_type!r} checkpoint, not the {family!r} model asked for")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise MedfmError(f"{display_path(folder)}: no *.safetensors weights in the folder")
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as transformers_logging

    from medfm.threads import ensure_threads

    ensure_threads()
    transformers_logging.disable_progress_bar()  # medfm's output stays its own
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype="auto")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise MedfmError(f"{display_path(folder)}: cannot load the {model_type} checkpoint ({reason})") from None
    info = LanguageModelInfo(name=folder.resolve().name, family=model_type, weights_sha256=weights_sha256(weights),
                             max_images=FAMILIES[model_type].max_images)
    return TransformersLanguageModel(model, processor, info)
