"""A trained conditional generator: the EMA U-Net, its conditioning and its sampling settings.

A GEN_DIR (written by ``medfm train generator``) holds:

- ``config.json``: name, ``kind: "generator"``, ``method`` (``flow`` or ``ddpm``),
  ``condition`` (``class``, ``text`` or ``none``), ``classes`` (the class names, or the
  training texts' distinct values), ``size``, ``channels``, ``network`` (the U-Net's
  arguments), ``weights`` (file and sha256), ``sampling`` defaults, ``training`` summary and
  ``quality`` (radiomic statistics of the training images and regions, for the edit gate:
  :mod:`medfm.models.generators.quality`); image–mask pair generators also ``mask_labels`` (the
  label values of their masks, which the network makes as one channel after the image's); latent
  generators ``latent`` (the autoencoder's arguments, weights file and sha256, ``scale_factor`` and
  ``factor``: :mod:`medfm.models.generators.latent`);
- ``ema.safetensors``: the exponential-moving-average weights, verified against the sha256 (and a latent
  generator's ``autoencoder.safetensors``);
- ``card.md``: the model card.

It loads with :func:`medfm.models.registry.create_generator`, as a shipped generator does
(``configs/NAME.json`` of the same form, its weights in ``weights/``).

Pixels: ``(N, C, S, S)`` float tensors in [0, 1] outside, ``2p - 1`` inside the network.
Flow generators learn the velocity ``ε - x`` of the straight path ``x_t = (1 - t) x + t ε``
(rectified flow, t = 0 data, t = 1 noise); DDPM generators predict the noise ε under MONAI's
1,000-step linear schedule and are sampled with MONAI's DDIM scheduler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm.errors import MedfmError, display_path
from medfm.models.generators.latent import LatentSpace, build_autoencoder
from medfm.models.generators.network import CONDITIONS, TEXT_DIM, build_unet

CONFIG_FILE, WEIGHTS_FILE, CARD_FILE, AUTOENCODER_FILE = "config.json", "ema.safetensors", "card.md", "autoencoder.safetensors"
METHODS = ("flow", "ddpm")
#: Training timesteps of DDPM generators (MONAI's default linear-beta schedule).
DDPM_TIMESTEPS = 1000
#: Default sampling steps and guidance scale by method (guidance 1 means none).
DEFAULT_STEPS = {"flow": 30, "ddpm": 50}
DEFAULT_GUIDANCE = 2.0


class Generator:
    """``velocity``/noise predictions with classifier-free guidance for one conditional U-Net.

    ``config`` is the GEN_DIR's ``config.json`` (see the module docstring); ``network`` the
    EMA U-Net, in eval mode.
    """

    def __init__(self, network: nn.Module, config: dict[str, Any], weights_sha256: str | None = None,
                 latent: LatentSpace | None = None) -> None:
        self.network = network.eval()
        self.config = config
        self.weights_sha256 = weights_sha256
        self.latent = latent
        self._text_tower: nn.Module | None = None
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def condition(self) -> str:
        return self.config["condition"]

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes", []))

    @property
    def size(self) -> int:
        return int(self.config["size"])

    @property
    def channels(self) -> int:
        return int(self.config["channels"])

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, S, S)`` of what the network generates: the image (and its mask), or a latent generator's latents."""
        side = self.size // int(self.config["latent"]["factor"]) if "latent" in self.config else self.size
        return network_channels(self.config), side, side

    @property
    def mask_labels(self) -> list[int]:
        """The label values of the masks an image–mask pair generator makes with each image (empty otherwise)."""
        return [int(v) for v in self.config.get("mask_labels", [])]

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The values the network sees for black and white: (-1, 1) for medfm's generators; a checkpoint
        from elsewhere says its own in config ``pixel_range`` (MONAI's tutorials train on [0, 1])."""
        low, high = self.config.get("pixel_range", (-1.0, 1.0))
        return float(low), float(high)

    def resolve(self, condition: str | None = None, class_: str | int | None = None) -> str | None:
        """The condition a request names: a class by name or index (class generators), a text (text
        generators; a class generator also takes a class name as text), or None; MedfmError otherwise."""
        if condition is not None and class_ is not None:
            raise MedfmError("give a text condition or a class, not both")
        if self.condition == "none":
            if condition is not None or class_ is not None:
                raise MedfmError(f"generator {self.name!r} is unconditional: it takes no condition or class")
            return None
        if self.condition == "text":
            if class_ is not None and not (isinstance(class_, str) and class_ in self.classes):
                raise MedfmError(f"generator {self.name!r} is text-conditioned: give --condition TEXT")
            text = condition if condition is not None else class_
            if text is not None and not str(text).strip():
                raise MedfmError("the text condition is empty")
            return None if text is None else str(text).strip()
        wanted = class_ if class_ is not None else condition
        if wanted is None:
            return None
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.strip().isdigit() and wanted not in self.classes):
            index = int(wanted)
            if not 0 <= index < len(self.classes):
                raise MedfmError(f"class index {index} is out of range: generator {self.name!r} has classes "
                                 + ", ".join(f"{i}={c}" for i, c in enumerate(self.classes)))
            return self.classes[index]
        if wanted not in self.classes:
            raise MedfmError(f"unknown class {wanted!r}; generator {self.name!r} has classes: {', '.join(self.classes)}")
        return wanted

    def _text_embeddings(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            if self._text_tower is None:
                from medfm.models.encoders.medfm_clip import MiniLM

                self._text_tower = MiniLM()
            for text, embedding in zip(missing, self._text_tower(missing), strict=True):
                self._text_cache[text] = embedding
        return torch.stack([self._text_cache[t] for t in texts])

    def conditioning(self, labels: list[str | None]) -> dict[str, torch.Tensor]:
        """The U-Net's keyword arguments for resolved conditions (None: no condition)."""
        if self.condition == "class":
            null = len(self.classes)
            return {"class_labels": torch.tensor([null if c is None else self.classes.index(c) for c in labels])}
        if self.condition == "text":
            context = torch.zeros(len(labels), 1, TEXT_DIM)
            given = [i for i, c in enumerate(labels) if c is not None]
            if given:
                context[given, 0] = self._text_embeddings([labels[i] for i in given])
            return {"context": context}
        return {}

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: list[str | None], guidance: float) -> torch.Tensor:
        """The network's guided prediction at ``x`` ``(N, C, S, S)``, time ``t`` ``(N,)`` (flow: in [0, 1];
        DDPM: timestep indices): ``uncond + guidance · (cond - uncond)``, one batched pass."""
        timesteps = t * (DDPM_TIMESTEPS - 1) if self.method == "flow" else t
        if self.condition == "none" or guidance == 1.0 or all(c is None for c in labels):
            return self.network(x, timesteps, **self.conditioning(labels))
        both = self.network(torch.cat([x, x]), torch.cat([timesteps, timesteps]),
                            **self.conditioning(list(labels) + [None] * len(labels)))
        conditional, unconditional = both.chunk(2)
        return unconditional + guidance * (conditional - unconditional)


def network_channels(config: dict[str, Any]) -> int:
    """The U-Net's channels: the image's, and one for the mask of an image–mask pair generator; a latent
    generator's latent channels."""
    if "latent" in config:
        return int(config["latent"]["autoencoder"]["latent_channels"])
    return int(config["channels"]) + (1 if config.get("mask_labels") else 0)


def _read_state(weights: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a PyTorch ``.pt``/``.pth`` file (MONAI checkpoints) read without
    running any of its code (``weights_only``)."""
    from safetensors.torch import load_file

    if weights.suffix in (".pt", ".pth"):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for files that are not plain tensor dicts
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise MedfmError(f"{display_path(weights)}: not a PyTorch state dict ({reason})") from None
        if not isinstance(state, dict):
            raise MedfmError(f"{display_path(weights)}: holds a {type(state).__name__}, not a state dict")
        return state
    return load_file(str(weights))


def build_generator(config: dict[str, Any], weights: Path | None) -> Generator:
    """The generator of ``config`` with the ``weights`` (safetensors, or a MONAI ``.pt`` state dict; checked against
    the config's sha256; a latent generator's autoencoder from the file its config names beside them)."""
    if config.get("method") not in METHODS or config.get("condition") not in CONDITIONS:
        raise MedfmError(f"generator {config.get('name')!r}: its config needs method {'/'.join(METHODS)} and condition "
                         f"{'/'.join(CONDITIONS)}")
    pixel_range = config.get("pixel_range", [-1.0, 1.0])
    if (not isinstance(pixel_range, list | tuple) or len(pixel_range) != 2
            or not all(isinstance(v, int | float) for v in pixel_range) or not pixel_range[0] < pixel_range[1]):
        raise MedfmError(f"generator {config.get('name')!r}: its config's pixel_range must be [black, white] with black < white; "
                         f"got {pixel_range!r}")
    network = build_unet(config["network"], network_channels(config), config["condition"], len(config.get("classes", [])))
    digest = None if weights is None else _load_checked(network, weights, config.get("weights", {}).get("sha256"), "network")
    latent = None
    if "latent" in config:
        autoencoder = build_autoencoder(config["latent"]["autoencoder"], int(config["channels"]))
        if weights is not None:
            _load_checked(autoencoder, weights.parent / config["latent"]["weights"]["file"], config["latent"]["weights"]["sha256"],
                          "autoencoder")
        latent = LatentSpace(autoencoder, config["latent"]["scale_factor"])
    return Generator(network, config, digest, latent)


def _load_checked(module: nn.Module, weights: Path, recorded: str | None, role: str) -> str:
    """Load ``weights`` into ``module`` after checking them against the ``recorded`` sha256; returns the file's sha256."""
    from medfm.models.registry import sha256_of

    if not weights.is_file():
        raise MedfmError(f"{display_path(weights)}: the generator's {role} weights are missing")
    digest = sha256_of(weights)
    if recorded and digest != recorded:
        raise MedfmError(f"{display_path(weights)}: does not match its recorded sha256; the file is damaged")
    state = {k: v.float() for k, v in _read_state(weights).items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise MedfmError(f"{display_path(weights)}: does not fit the generator's {role} ({str(exc).splitlines()[0]})") from None
    return digest
