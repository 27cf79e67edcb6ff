"""Every registered model config builds and embeds as documented (timm's test_models, in small).

Configs that need a checkpoint folder (BiomedCLIP) are built from saved tiny layouts in
their family's tests; here they must refuse, in one line, to build without one.
"""

import os

import numpy as np
import pytest
import torch

from medfm.errors import MedfmError
from medfm.models import Encoder, create_encoder, list_encoders

CONFIGS = list_encoders()
BUILDABLE = [name for name, config in CONFIGS.items() if not config.get("checkpoint_required")]
NEEDS_CHECKPOINT = [name for name, config in CONFIGS.items() if config.get("checkpoint_required")]


@pytest.mark.parametrize("name", BUILDABLE)
def test_config_builds_and_embeds_unit_rows_of_its_dimension(name):
    config = CONFIGS[name]
    encoder = create_encoder(name)
    assert isinstance(encoder, Encoder) and encoder.info.name == name
    assert encoder.info.embed_dim == config["embed_dim"]
    rng = np.random.default_rng(0)
    planes = [rng.normal(size=(40, 56)).astype(np.float32), rng.integers(0, 256, (33, 33, 3), dtype=np.uint8)]
    embeddings = encoder.encode_planes(planes)
    assert embeddings.shape == (2, config["embed_dim"]) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_planes([]).shape == (0, config["embed_dim"])
    if encoder.info.has_text:
        text = encoder.encode_text(["a chest x ray", "an axial brain MRI"])
        assert text.shape == (2, config["embed_dim"]) and text.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    else:
        with pytest.raises(MedfmError, match="no text tower"):
            encoder.encode_text(["a chest x ray"])


@pytest.mark.parametrize("name", NEEDS_CHECKPOINT)
def test_config_that_needs_a_checkpoint_says_so(name):
    with pytest.raises(MedfmError, match=f"model '{name}' needs a checkpoint: "):
        create_encoder(name)


def test_every_config_names_a_family_and_its_dimension():
    for name, config in CONFIGS.items():
        assert config["family"] in {"medfm_clip", "open_clip", "timm"}, name
        assert isinstance(config["embed_dim"], int), name


def test_unknown_model_lists_the_choices():
    with pytest.raises(MedfmError, match="unknown model 'resnet-9000'; choose one of: .*timm-resnet18"):
        create_encoder("resnet-9000")


def test_saved_weights_get_the_permissions_of_any_output_and_a_failed_save_leaves_nothing(tmp_path):
    from safetensors.torch import load_file

    from medfm.models.registry import save_weights

    path = save_weights({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "net.safetensors", metadata={"loss": "dice"})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors alone writes 0600
    assert torch.equal(load_file(str(path))["w"], torch.arange(6.0).reshape(2, 3))
    with pytest.raises(AttributeError):
        save_weights({"w": "not a tensor"}, tmp_path / "broken.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.safetensors"]
