"""One factory for every model: name → config → family builder → weights.

Architectures are data (open_clip's way): each ``configs/<name>.json`` names a
``family`` and the family's arguments; a family module registers its builder with
:func:`register_family`. :func:`create_encoder` resolves in a fixed order — the config,
then the builder, then the weights (a path the user gives, else the weights the config
ships with, checked against their sha256) — and never touches the network.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.errors import MedfmError, display_path
from medfm.models.encoders.base import Encoder
from medfm.threads import ensure_threads

if TYPE_CHECKING:
    import torch

    from medfm.models.automatic import AutoSegmenter
    from medfm.models.generators import Generator
    from medfm.models.grounding import TextGrounder
    from medfm.models.language import LanguageModel
    from medfm.models.router import DomainRouter
    from medfm.models.segmenters.base import Segmenter

# The field's libraries (huggingface_hub under timm, open_clip, transformers) read this
# when first imported: with it, an accidental hub lookup fails at once instead of
# waiting on a network that offline sites do not have.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The image-text encoder used wherever none is named (CLI, server, zero-shot classification, training).
DEFAULT_ENCODER = "medfm-clip-small"
#: The promptable segmenter used wherever none is named (CLI, server, evaluation).
DEFAULT_SEGMENTER = "medfm-interactive"
#: The super-resolution network used wherever none is named (``medfm upscale``).
DEFAULT_UPSCALER = "medfm-upscale"

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The config file of an encoder folder (``medfm pretrain -o ENCODER_DIR``), beside its weights and card.
ENCODER_DIR_CONFIG = "config.json"

#: Family name → module that registers it on import (imported only when needed).
_FAMILY_MODULES = {
    "medfm_clip": "medfm.models.encoders.medfm_clip",
    "open_clip": "medfm.models.encoders.open_clip",
    "timm": "medfm.models.encoders.timm",
    "medfm_backbone": "medfm.models.encoders.backbone",
    "sam": "medfm.models.segmenters.sam",
    "sam2": "medfm.models.segmenters.sam2",
    "medfm_interactive": "medfm.models.segmenters.medfm_interactive",
    "medfm_generator": "medfm.models.generators",
    "medfm_upscale": "medfm.models.upscaler",
    "medfm_forecast": "medfm.models.forecaster",
    "medfm_captioner": "medfm.models.language.captioner",
    "medfm_grounding": "medfm.models.grounding",
    "medfm_router": "medfm.models.router",
}
Builder = Callable[[dict[str, Any], Path | None], "Encoder | Segmenter"]
_BUILDERS: dict[str, Builder] = {}


def register_family(family: str) -> Callable[[Builder], Builder]:
    """Decorator: ``builder(config, weights_path_or_None) -> Encoder`` for configs of ``family``."""

    def decorate(builder: Builder) -> Builder:
        _BUILDERS[family] = builder
        return builder

    return decorate


def all_configs() -> dict[str, dict[str, Any]]:
    """Every shipped model config by name, of every kind (``"kind"``, default ``"encoder"``)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(CONFIG_DIR.glob("*.json"))}


@cache
def _configs(kind: str) -> dict[str, dict[str, Any]]:
    return {name: config for name, config in all_configs().items() if config.get("kind", "encoder") == kind}


def reload_configs() -> None:
    """Forget the configs read so far: the next ``list_*`` call reads :data:`CONFIG_DIR` again (tests that point
    it elsewhere call this before and after)."""
    _configs.cache_clear()


def list_encoders() -> dict[str, dict[str, Any]]:
    """Every shipped encoder config by name."""
    return _configs("encoder")


def list_segmenters() -> dict[str, dict[str, Any]]:
    """Every shipped interactive segmenter config (``"kind": "segmenter"``) by name."""
    return _configs("segmenter")


def list_auto_architectures() -> dict[str, dict[str, Any]]:
    """Every architecture ``medfm train seg`` can train (``"kind": "auto-segmenter"``) by name."""
    return _configs("auto-segmenter")


def list_generators() -> dict[str, dict[str, Any]]:
    """Every shipped image generator config (``"kind": "generator"``) by name."""
    return _configs("generator")


def list_upscalers() -> dict[str, dict[str, Any]]:
    """Every shipped super-resolution config (``"kind": "upscaler"``) by name."""
    return _configs("upscaler")


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """``tensors`` as a safetensors file at ``path`` (an existing folder), replaced whole, with the permissions
    any other output gets: safetensors alone writes owner-only files, which a shared model folder must not hold."""
    from safetensors.torch import save_file

    from medfm.io.formats import atomic_path

    with atomic_path(path, create_folders=False) as partial:
        save_file({key: value.detach().contiguous() for key, value in tensors.items()}, str(partial), metadata=metadata)
    return Path(path)


def _shipped_weights(name: str, config: dict[str, Any]) -> Path | None:
    weights = config.get("weights")
    if not weights:
        return None
    path = WEIGHTS_DIR / weights["file"]
    if not path.exists():
        raise MedfmError(f"model {name!r}: its weights {display_path(path)} are missing from the installation")
    if sha256_of(path) != weights["sha256"]:
        raise MedfmError(f"model {name!r}: {display_path(path)} does not match its recorded sha256; the file is damaged")
    return path


def abstention_threshold(name: str, weights_sha256: str | None, kind: str) -> float:
    """The similarity under which encoder ``name``'s ``kind`` answers abstain (``zero_shot``: an
    image's best label; ``search``: a text query's best hit), as calibrated on held-out data
    and stored in its config (``"abstention"``, see :mod:`medfm.train.abstention`). Refused
    for a model without one, or whose weights are not those it was calibrated for."""
    config = list_encoders().get(name, {})
    calibrated = config.get("abstention", {})
    if kind not in calibrated or weights_sha256 != config.get("weights", {}).get("sha256"):
        raise MedfmError(f"model {name!r} (these weights) has no calibrated {kind.replace('_', '-')} abstention threshold; "
                         "give one explicitly (--abstain-threshold)")
    return float(calibrated[kind])


def abstain_below(abstain: bool, given: float | None, name: str, weights_sha256: str | None, kind: str) -> float | None:
    """The similarity under which answers abstain: ``given`` when the user names one, else the calibrated
    :func:`abstention_threshold` when ``abstain`` is asked for, else ``None`` (no abstention)."""
    if given is not None:
        return given
    return abstention_threshold(name, weights_sha256, kind) if abstain else None


def question_abstention(abstain: bool, given: float | None, name: str, weights_sha256: str | None
                        ) -> float | dict[str, float] | None:
    """The similarity under which closed questions and routing abstain: ``given`` for every question when the
    user names one; else, when ``abstain``, the calibrated zero-shot thresholds by question axis (the body-region
    label set's own, ``zero_shot_region``, where calibrated; ``default``, the modality set's, for every other);
    else ``None``. See :func:`medfm.tasks.domains.threshold_for`."""
    default = abstain_below(abstain, given, name, weights_sha256, "zero_shot")
    if given is not None or default is None:
        return default
    if "zero_shot_region" not in list_encoders().get(name, {}).get("abstention", {}):
        return {"default": default}
    return {"default": default, "region": abstention_threshold(name, weights_sha256, "zero_shot_region")}


def create_encoder(name: str, checkpoint: str | os.PathLike | None = None,
                   adapter: str | os.PathLike | None = None) -> Encoder:
    """The encoder ``name`` (see :func:`list_encoders`), with weights from ``checkpoint`` if given
    and the fine-tuned ``adapter`` file (``medfm finetune``) over them if given.

    A ``checkpoint`` is a local file or folder in the family's official layout; without
    one, the weights shipped with medfm are used (verified), or the model is randomly
    initialised when the config ships none (e.g. an open_clip architecture). A config
    with ``checkpoint_required`` (what to give, in words) refuses to build without one.

    ``name`` may also be an encoder folder (``config.json``, weights and card, as ``medfm
    pretrain`` writes it): its weights are checked against the sha256 its config records, and
    the encoder is named by the folder's absolute path, so that indexes and probes find it again.
    """
    folder = Path(name)
    if (folder / ENCODER_DIR_CONFIG).is_file():
        return _adapted(_create_from_folder(folder, checkpoint), adapter)
    return _adapted(_create(name, checkpoint, list_encoders()), adapter)


def _create_from_folder(folder: Path, checkpoint: str | os.PathLike | None) -> Encoder:
    config = read_model_folder_config(folder, "encoder")
    if config.get("family") not in _FAMILY_MODULES or Path(str(config["weights"].get("file"))).name != config["weights"].get("file"):
        raise MedfmError(f"{display_path(folder)}: not an encoder folder (unknown family, or weights outside the folder)")
    weights = folder / config["weights"]["file"]
    if checkpoint is None:
        if not weights.is_file():
            raise MedfmError(f"{display_path(weights)}: the encoder folder's weights are missing")
        if sha256_of(weights) != config["weights"].get("sha256"):
            raise MedfmError(f"{display_path(weights)}: does not match the sha256 in its config; the file is damaged")
    name = str(folder.resolve())
    return _create(name, checkpoint if checkpoint is not None else weights, {name: config})


def create_segmenter(name: str, checkpoint: str | os.PathLike | None = None,
                     adapter: str | os.PathLike | None = None) -> Segmenter:
    """The interactive segmenter ``name`` (see :func:`list_segmenters`), resolved as encoders are,
    with the fine-tuned ``adapter`` file (``medfm finetune``) over it if given.

    ``name`` may also be the path of a ``.json`` config in the same format, for an
    architecture medfm does not ship.
    """
    configs = list_segmenters()
    if name.endswith(".json") and Path(name).is_file():
        try:
            configs = {Path(name).stem: json.loads(Path(name).read_text())}
        except (OSError, ValueError) as exc:
            raise MedfmError(f"{display_path(name)}: cannot read as a model config ({exc})") from None
        name = Path(name).stem
    return _adapted(_create(name, checkpoint, configs), adapter)


def _adapted(model: Any, adapter: str | os.PathLike | None) -> Any:
    if adapter is None:
        return model
    from medfm.models.adapters.file import apply_adapter

    return apply_adapter(model, adapter)


def create_auto_segmenter(model_dir: str | os.PathLike) -> AutoSegmenter:
    """The automatic segmenter that ``medfm train seg`` wrote to ``model_dir`` (weights verified)."""
    from medfm.models.automatic import load_auto_segmenter

    return load_auto_segmenter(model_dir)


def create_generator(name_or_dir: str | os.PathLike) -> Generator:
    """The generator ``name_or_dir``: a shipped generator's name (see :func:`list_generators`), or the
    folder that ``medfm train generator`` wrote (weights checked against the recorded sha256)."""
    return _create_named_or_folder(name_or_dir, "generator", list_generators())


def create_upscaler(name: str | os.PathLike = DEFAULT_UPSCALER) -> Any:
    """The super-resolution network ``name`` (see :func:`list_upscalers`), or the model folder that
    ``medfm train upscale`` wrote (``config.json`` + weights, checked against the recorded sha256)."""
    return _create_named_or_folder(name, "upscaler", list_upscalers())


def list_grounders() -> dict[str, dict[str, Any]]:
    """Every shipped text grounding head config (``"kind": "grounder"``) by name."""
    return _configs("grounder")


def create_grounder(name: str | os.PathLike) -> TextGrounder:
    """The text grounding head ``name`` (see :func:`list_grounders`) over its own encoder, or the model folder that
    ``medfm train grounding`` wrote (weights checked against the recorded sha256)."""
    return _create_named_or_folder(name, "grounder", list_grounders())


def grounder_for(encoder: Encoder) -> TextGrounder | None:
    """The shipped grounding head trained over exactly ``encoder``'s weights, reading ``encoder`` itself (not a second
    copy); ``None`` when medfm ships none for them (text prompts then use the encoder's class activation map)."""
    from medfm.models.grounding import ground_with

    return _shipped_head_over(encoder, list_grounders(), ground_with)


def list_routers() -> dict[str, dict[str, Any]]:
    """Every shipped domain router config (``"kind": "router"``) by name."""
    return _configs("router")


def create_router(name: str | os.PathLike) -> DomainRouter:
    """The domain router ``name`` (see :func:`list_routers`) over its own encoder, or the model folder that
    ``medfm train router`` wrote (weights checked against the recorded sha256)."""
    return _create_named_or_folder(name, "router", list_routers())


def router_for(encoder: Encoder) -> DomainRouter | None:
    """The shipped domain router trained over exactly ``encoder``'s weights, reading ``encoder`` itself; ``None`` when
    medfm ships none for them (modality and region are then zero-shot)."""
    from medfm.models.router import route_with

    return _shipped_head_over(encoder, list_routers(), route_with)


def _shipped_head_over(encoder: Encoder, configs: dict[str, dict[str, Any]], attach: Callable[..., Any]) -> Any:
    for name, config in configs.items():
        if config["encoder_sha256"] == encoder.info.weights_sha256:
            return attach({"name": name, **config}, _shipped_weights(name, config), encoder)
    return None


def list_forecasters() -> dict[str, dict[str, Any]]:
    """Every shipped forecaster config (``"kind": "forecaster"``) by name."""
    return _configs("forecaster")


def create_forecaster(name: str | os.PathLike) -> Any:
    """The forecaster ``name`` (see :func:`list_forecasters`), or the model folder that ``medfm train forecast`` wrote."""
    return _create_named_or_folder(name, "forecaster", list_forecasters())


def _create_named_or_folder(name: str | os.PathLike, kind: str, configs: dict[str, dict[str, Any]]) -> Any:
    folder = Path(name)
    if not folder.is_dir():
        return _create(os.fspath(name), None, configs)
    config = read_model_folder_config(folder, kind)
    weights = folder / config["weights"]["file"]
    if not weights.is_file() or sha256_of(weights) != config["weights"]["sha256"]:
        raise MedfmError(f"{display_path(weights)}: missing, or does not match the sha256 in its config.json; the model folder is damaged")
    return _create(config["name"], weights, {config["name"]: config})


#: Each kind of model folder in words, for refusals that say what a folder is.
FOLDER_KINDS = {
    "encoder": "an image encoder",
    "segmenter": "an interactive segmenter",
    "auto-segmenter": "an automatic segmenter (`medfm train seg`)",
    "router": "a domain router (`medfm train router`)",
    "grounder": "a text grounding head (`medfm train grounding`)",
    "generator": "an image generator (`medfm train generator`)",
    "forecaster": "a forecaster",
    "upscaler": "a super-resolution model",
    "language": "a language model",
}


def describe_model_config(config: Any) -> str:
    """What a model folder's parsed config.json says the folder holds, in words (``an image-only encoder
    (`medfm pretrain` vit-tiny)``, ``a domain router (`medfm train router`)``, ``a 'bert' checkpoint``)."""
    if not isinstance(config, dict):
        return "nothing medfm knows"
    kind = config.get("kind")
    if kind == "encoder" and config.get("family") == "medfm_backbone":  # no text tower: image-only
        return f"an image-only encoder (`medfm pretrain` {config['arch']})" if config.get("arch") else "an image-only encoder"
    if kind == "encoder":
        return f"an image encoder ({config['family']})" if config.get("family") else "an image encoder"
    if kind in FOLDER_KINDS:
        return FOLDER_KINDS[kind]
    if kind:
        return f"a {kind!r} model"
    if config.get("model_type"):
        return f"a {config['model_type']!r} checkpoint"
    return "nothing medfm knows"


def read_model_folder_config(folder: Path, kind: str) -> dict[str, Any]:
    """``folder/config.json`` of a trained model of ``kind``, or a one-line error naming the folder."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise MedfmError(f"{display_path(folder)}: not a model folder (config.json: {exc})") from None
    if not isinstance(config, dict) or config.get("kind") != kind or not isinstance(config.get("weights"), dict):
        wanted = FOLDER_KINDS.get(kind, f"a {kind!r} model")
        raise MedfmError(f"{display_path(folder)}: holds {describe_model_config(config)}, not {wanted}")
    return config


def list_language_models() -> dict[str, dict[str, Any]]:
    """Every shipped language model config (``"kind": "language"``) by name."""
    return _configs("language")


def create_language_model(name_or_folder: str | os.PathLike, family: str | None = None) -> LanguageModel:
    """A shipped language model by name (see :func:`list_language_models`), a folder that ``medfm train
    captioner`` wrote, or the local vision-language checkpoint in a folder (Gemma 3 / MedGemma, PaliGemma,
    Qwen2-VL, LLaVA: :data:`medfm.models.language.transformers_backend.FAMILIES`), loaded with transformers
    without any network call; a checkpoint folder is refused in one line when it is of another family than
    ``family`` (if given) or of none medfm drives."""
    from medfm.models.language.transformers_backend import load_transformers_model

    folder = Path(name_or_folder)
    if not folder.is_dir() and os.fspath(name_or_folder) in list_language_models():
        return _create(os.fspath(name_or_folder), None, list_language_models())
    if _is_model_folder(folder, "language"):
        return _create_named_or_folder(folder, "language", {})
    return load_transformers_model(folder, family)


def _is_model_folder(folder: Path, kind: str) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("kind") == kind
    except (OSError, ValueError, AttributeError):
        return False


def _create(name: str, checkpoint: str | os.PathLike | None, configs: dict[str, dict[str, Any]]) -> Any:
    if name not in configs:
        offered = f"choose one of: {', '.join(configs)}" if configs else "none of this kind is registered"
        raise MedfmError(f"unknown model {name!r}; {offered}")
    config = configs[name]
    family = config["family"]
    if family not in _BUILDERS:
        importlib.import_module(_FAMILY_MODULES[family])
    if checkpoint is not None:
        weights = Path(checkpoint)
        if not weights.exists():
            raise MedfmError(f"{display_path(weights)}: checkpoint not found")
    elif config.get("checkpoint_required"):
        raise MedfmError(f"model {name!r} needs a checkpoint: {config['checkpoint_required']}")
    else:
        weights = _shipped_weights(name, config)
    ensure_threads()  # after the family's import, which loads torch
    return _BUILDERS[family]({"name": name, **config}, weights)
