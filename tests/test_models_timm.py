"""timm family: random backbones saved as timm checkpoints, loaded back through medfm."""

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from medfm.errors import MedfmError
from medfm.models import create_encoder
from medfm.models.encoders.timm import build_timm


def planes() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (80, 100), dtype=np.uint8), rng.integers(0, 256, (50, 50), dtype=np.uint8)]


def reference_embeddings(model: torch.nn.Module, data_config: dict) -> np.ndarray:
    """timm's own pooled features of the grey planes shown as RGB pictures, L2-normalised."""
    transform = create_transform(**data_config, is_training=False)
    pixels = torch.stack([transform(PILImage.fromarray(np.repeat(p[:, :, None], 3, axis=2))) for p in planes()])
    with torch.inference_mode():
        return F.normalize(model.eval().forward_head(model.forward_features(pixels), pre_logits=True), dim=-1).numpy()


def save(model: torch.nn.Module, path) -> None:
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_imagenet_style_checkpoint_round_trip(tmp_path, suffix):
    # An ImageNet checkpoint carries a 1000-class head: medfm keeps the backbone's features.
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / f"resnet18{suffix}"
    save(model, path)

    encoder = create_encoder("timm-resnet18", checkpoint=path)

    assert encoder.info.embed_dim == 512 and not encoder.info.has_text and len(encoder.info.weights_sha256) == 64
    np.testing.assert_allclose(encoder.encode_planes(planes()),
                               reference_embeddings(model, resolve_data_config(model=model)), atol=1e-5)
    with pytest.raises(MedfmError, match="no text tower"):
        encoder.encode_text(["a chest x ray"])


def test_hub_folder_uses_its_weights_and_preprocessing(tmp_path):
    torch.manual_seed(1)
    model = timm.create_model("test_vit", pretrained=False, num_classes=0)
    folder = tmp_path / "test_vit.hub"
    folder.mkdir()
    save(model, folder / "model.safetensors")
    pretrained_cfg = {"input_size": [3, 160, 160], "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7],
                      "interpolation": "bilinear", "crop_pct": 1.0}
    (folder / "config.json").write_text(json.dumps({"architecture": "test_vit", "pretrained_cfg": pretrained_cfg}))

    encoder = build_timm({"name": "tiny", "family": "timm", "architecture": "test_vit"}, folder)

    data_config = {"input_size": (3, 160, 160), "mean": (0.2, 0.3, 0.4), "std": (0.5, 0.6, 0.7),
                   "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
    np.testing.assert_allclose(encoder.encode_planes(planes()), reference_embeddings(model, data_config), atol=1e-5)


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tmp_path):
    path = tmp_path / "vit.safetensors"
    save(timm.create_model("test_vit", pretrained=False, num_classes=0), path)
    with pytest.raises(MedfmError) as error:
        create_encoder("timm-resnet18", checkpoint=path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a checkpoint of timm 'resnet18': ") and "\n" not in message
    assert "missing keys, first: conv1.weight" in message and "unexpected keys, first:" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(MedfmError, match="no weights file in the folder; expected one of model.safetensors"):
        create_encoder("timm-resnet18", checkpoint=tmp_path / "empty")
    with pytest.raises(MedfmError, match="checkpoint not found"):
        create_encoder("timm-resnet18", checkpoint=tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(MedfmError, match="list.pth: not a state dict"):
        create_encoder("timm-resnet18", checkpoint=tmp_path / "list.pth")
