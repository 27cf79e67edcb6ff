"""Every registered segmenter config builds, encodes once and decodes a box (timm's test_models, in small).

Each config is built as a tiny variant of itself — its own family, preprocessing and prompt
rules, with fewer and narrower layers and a small input — from a randomly initialised
checkpoint saved in the family's official format (segment-anything ``.pth`` state dict,
SAM 2 ``{"model": state_dict}`` ``.pt``, medfm safetensors), through ``create_segmenter``
with a ``.json`` config: the path a user with a local checkpoint takes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medfm.errors import MedfmError
from medfm.models.registry import create_segmenter, list_segmenters, sha256_of
from medfm.models.segmenters import Prompt, Segmenter

CONFIGS = list_segmenters()
SAM2_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# sam2 1.1.0 scripts its input transforms with torch.jit, which torch 2.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _tiny_sam(config: dict[str, Any], folder: Path) -> tuple[dict[str, Any], Path]:
    from medfm.models.segmenters.sam import build_sam_model

    architecture = {"encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
                    "encoder_global_attn_indexes": [0], "image_size": 256}
    if not (folder / "tiny.pth").exists():
        torch.save(build_sam_model(architecture).state_dict(), folder / "tiny.pth")
    return {**config, "architecture": architecture}, folder / "tiny.pth"


def _tiny_sam2(config: dict[str, Any], folder: Path) -> tuple[dict[str, Any], Path]:
    pytest.importorskip("sam2", reason="sam2 not installed: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0")
    from medfm.models.segmenters.sam2 import build_sam2_model

    if not (folder / "tiny.pt").exists():
        torch.save({"model": build_sam2_model(SAM2_TINY_CONFIG, 256).state_dict()}, folder / "tiny.pt")
    return {**config, "config": SAM2_TINY_CONFIG, "image_size": 256}, folder / "tiny.pt"


def _tiny_medfm_interactive(config: dict[str, Any], folder: Path) -> tuple[dict[str, Any], Path]:
    from safetensors.torch import save_file

    from medfm.models.segmenters.interactive_net import InteractiveNet

    tiny = {**config, "widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "image_size": 64}
    tiny.pop("weights", None)
    if not (folder / "tiny.safetensors").exists():
        net = InteractiveNet(tiny["widths"], tiny["blocks"], tiny["pixel_mean"], tiny["pixel_std"])
        save_file({key: value.contiguous() for key, value in net.state_dict().items()}, str(folder / "tiny.safetensors"))
    return tiny, folder / "tiny.safetensors"


#: How to make a tiny variant of a config of each family, with its random checkpoint in the official format
#: (saved once in ``folder``: the configs of a family share it).
TINY: dict[str, Callable[[dict[str, Any], Path], tuple[dict[str, Any], Path]]] = {
    "sam": _tiny_sam, "sam2": _tiny_sam2, "medfm_interactive": _tiny_medfm_interactive,
}


def _planes() -> list[np.ndarray]:
    """A grey float plane and an RGB uint8 one, not square, each with a bright rectangle inside the box."""
    rng = np.random.default_rng(0)
    grey = rng.normal(0, 1, (90, 120)).astype(np.float32)
    grey[30:60, 40:80] += 4
    rgb = rng.integers(0, 60, (90, 120, 3), dtype=np.uint8)
    rgb[30:60, 40:80] = 220
    return [grey, rgb]


def test_every_family_has_a_tiny_variant() -> None:
    assert {config["family"] for config in CONFIGS.values()} <= set(TINY)
    assert all(config["kind"] == "segmenter" for config in CONFIGS.values())


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory) -> dict[str, Path]:
    """A folder per family for its tiny checkpoint."""
    return {family: tmp_path_factory.mktemp(family) for family in TINY}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_builds_and_segments_a_box(name: str, family_folders: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    family = CONFIGS[name]["family"]
    config, checkpoint = TINY[family](CONFIGS[name], family_folders[family])
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    segmenter = create_segmenter(str(tmp_path / f"{name}.json"), checkpoint)
    assert isinstance(segmenter, Segmenter)
    assert segmenter.info.name == name and segmenter.info.weights_sha256 == sha256_of(checkpoint)
    for plane in _planes():
        segmenter.set_image(plane)
        prediction = segmenter.predict(Prompt(boxes=[(40, 30, 79, 59)]))
        assert prediction.mask.shape == (90, 120) and prediction.mask.dtype == np.bool_
        assert prediction.logits.shape == (90, 120) and prediction.logits.dtype == np.float32
        assert np.isfinite(prediction.logits).all() and np.isfinite(prediction.score)
        segmenter.reset_image()
    with pytest.raises(MedfmError, match="no image set"):
        segmenter.predict(Prompt(boxes=[(40, 30, 79, 59)]))


@pytest.mark.parametrize("name", [name for name, config in CONFIGS.items() if config.get("checkpoint_required")])
def test_config_that_needs_a_checkpoint_says_so(name: str) -> None:
    if CONFIGS[name]["family"] == "sam2":
        pytest.importorskip("sam2", reason="sam2 not installed")
    with pytest.raises(MedfmError, match=f"model '{name}' needs a checkpoint: ") as caught:
        create_segmenter(name)
    assert "\n" not in str(caught.value)


def test_the_shipped_segmenter_loads_its_checked_weights() -> None:
    shipped = [name for name, config in CONFIGS.items() if "weights" in config]
    assert shipped == ["medfm-interactive"]
    segmenter = create_segmenter("medfm-interactive")
    assert segmenter.info.weights_sha256 == CONFIGS["medfm-interactive"]["weights"]["sha256"]
