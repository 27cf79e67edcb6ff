"""open_clip family: official checkpoint files and BiomedCLIP's hub folder, loaded offline.

Every model here is random and tiny; checkpoints are saved in the official formats and
layouts, loaded back through medfm with the network blocked, and must give exactly the
embeddings of the in-memory original.
"""

import json
import socket

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CustomTextCLIP
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image as PILImage
from safetensors.torch import save_file
from transformers import BertConfig, BertTokenizer

from medfm.errors import MedfmError
from medfm.models import create_encoder
from medfm.models.encoders.open_clip import build_open_clip

BIOMEDBERT = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
WORDS = "a an of the chest x ray lung with pneumonia normal brain mri ct scan showing tumour".split()
TEXTS = ["a chest x ray showing pneumonia", "brain mri", "normal lung ct scan"]
BIOMEDCLIP_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def grey_planes(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (70, 90), dtype=np.uint8), rng.integers(0, 256, (64, 64), dtype=np.uint8)]


def reference_image_embeddings(model, preprocess_cfg: dict, planes: list[np.ndarray]) -> np.ndarray:
    """What open_clip itself gives for grey uint8 planes shown as RGB pictures."""
    transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
    pixels = torch.stack([transform(PILImage.fromarray(np.repeat(p[:, :, None], 3, axis=2))) for p in planes])
    with torch.inference_mode():
        return model.eval().encode_image(pixels, normalize=True).numpy()


def tiny_biomedclip_folder(folder, with_text_config: bool = True):
    """A random BiomedCLIP-shaped model (timm ViT + BERT text tower), tiny, saved in the hub layout.

    The ``open_clip_config.json`` names the text tower as the official one does
    (``hf_model_name`` on the hub); ``config.json`` describes the tiny BERT.
    """
    folder.mkdir()
    vocab = folder / "vocab-source.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer(vocab=str(vocab)).save_pretrained(folder)
    vocab.unlink()
    bert = BertConfig(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    bert_dir = folder.parent / "bert-config"
    bert.save_pretrained(bert_dir)
    if with_text_config:
        bert.save_pretrained(folder)
    vision_cfg = {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                  "timm_proj": "linear", "image_size": 160}
    text_cfg = {"hf_model_name": BIOMEDBERT, "hf_tokenizer_name": BIOMEDBERT, "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32}
    torch.manual_seed(0)
    model = CustomTextCLIP(embed_dim=24, vision_cfg=vision_cfg,
                           text_cfg={**text_cfg, "hf_model_name": str(bert_dir), "hf_model_pretrained": False})
    config = {"model_cfg": {"embed_dim": 24, "vision_cfg": vision_cfg, "text_cfg": text_cfg},
              "preprocess_cfg": BIOMEDCLIP_PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return model.eval(), {**BIOMEDCLIP_PREPROCESS, "size": 160}


def test_biomedclip_hub_folder_loads_offline_with_the_original_embeddings(tmp_path, no_network):
    model, preprocess = tiny_biomedclip_folder(tmp_path / "BiomedCLIP")
    encoder = create_encoder("biomedclip", checkpoint=tmp_path / "BiomedCLIP")

    assert encoder.info.embed_dim == 24 and encoder.info.has_text
    assert len(encoder.info.weights_sha256) == 64
    planes = grey_planes()
    np.testing.assert_allclose(encoder.encode_planes(planes), reference_image_embeddings(model, preprocess, planes),
                               atol=1e-6)
    tokenizer = open_clip.tokenizer.HFTokenizer(str(tmp_path / "BiomedCLIP"), context_length=32)
    with torch.inference_mode():
        expected_text = model.encode_text(tokenizer(TEXTS), normalize=True).numpy()
    text = encoder.encode_text(TEXTS)
    np.testing.assert_allclose(text, expected_text, atol=1e-6)
    assert text.shape == (3, 24) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    # the texts differ, so must their embeddings (a tokenizer that lost the vocabulary would not)
    assert np.abs(text[0] - text[1]).max() > 1e-3


def test_biomedclip_without_text_config_uses_the_shipped_biomedbert_config(tmp_path, no_network):
    # Without config.json the folder is read as the official one: BiomedBERT-base, whose
    # shapes the tiny checkpoint does not have -- refused in one line naming the file.
    tiny_biomedclip_folder(tmp_path / "BiomedCLIP", with_text_config=False)
    with pytest.raises(MedfmError) as error:
        create_encoder("biomedclip", checkpoint=tmp_path / "BiomedCLIP")
    message = str(error.value)
    assert "\n" not in message and "open_clip_pytorch_model.bin" in message
    assert "text.transformer.embeddings.word_embeddings.weight" in message and "(30522, 768) in the model" in message


def test_biomedclip_refuses_what_is_not_its_hub_folder(tmp_path):
    with pytest.raises(MedfmError, match="needs a checkpoint: a local folder"):
        create_encoder("biomedclip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedfmError, match="no open_clip_config.json"):
        create_encoder("biomedclip", checkpoint=tmp_path / "empty")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(MedfmError, match="needs a folder"):
        create_encoder("biomedclip", checkpoint=tmp_path / "weights.bin")


TINY_ARCHITECTURE = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_architecture(tmp_path_factory):
    """Registers a tiny built-in-style open_clip architecture, ``medfm-test-tiny``."""
    path = tmp_path_factory.mktemp("open_clip_configs") / "medfm-test-tiny.json"
    path.write_text(json.dumps(TINY_ARCHITECTURE))
    open_clip.add_model_config(path)
    return "medfm-test-tiny"


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_official_state_dict_round_trip(tmp_path, tiny_architecture, suffix, no_network):
    torch.manual_seed(1)
    model = open_clip.create_model(tiny_architecture).eval()
    path = tmp_path / f"open_clip_model{suffix}"
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)

    encoder = build_open_clip({"name": "tiny", "family": "open_clip", "architecture": tiny_architecture}, path)

    planes = grey_planes(1)
    preprocess = open_clip.get_model_preprocess_cfg(model)
    np.testing.assert_allclose(encoder.encode_planes(planes), reference_image_embeddings(model, preprocess, planes),
                               atol=1e-6)
    with torch.inference_mode():
        expected_text = model.encode_text(open_clip.get_tokenizer(tiny_architecture)(TEXTS), normalize=True).numpy()
    np.testing.assert_allclose(encoder.encode_text(TEXTS), expected_text, atol=1e-6)


def test_wrong_architecture_is_refused_in_one_line(tmp_path, tiny_architecture):
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model(tiny_architecture).state_dict().items()}, path)
    with pytest.raises(MedfmError) as error:
        create_encoder("open-clip-vit-b-16", checkpoint=path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "not a checkpoint of ViT-B-16" in message and "tensors of another shape, first:" in message

    (tmp_path / "notes.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(MedfmError, match="notes.bin: cannot read as a checkpoint"):
        build_open_clip({"name": "tiny", "family": "open_clip", "architecture": tiny_architecture},
                        tmp_path / "notes.bin")
