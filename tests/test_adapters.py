"""Adapter modules (LoRA through peft, DD-Adapter, VPT) and the adapter file loaded through the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clitools import run_cli

from medfm.errors import MedfmError
from medfm.models.adapters import add_adapter, trainable_state
from medfm.models.adapters.dd_adapter import DDAdapter
from medfm.models.adapters.file import save_adapter
from medfm.models.registry import create_encoder, create_segmenter
from medfm.models.segmenters.prompt import Prompt


def _interactive_output(net: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pictures = torch.rand(2, 3, 128, 128, generator=generator)
    maps = (torch.rand(2, 7, 128, 128, generator=generator) > 0.9).float()
    with torch.no_grad():
        return net.decode(net.encode(pictures), maps)


@pytest.mark.parametrize("method", ["lora", "dd-adapter"])
def test_an_adapted_model_starts_equal_to_its_base(method):
    net = create_segmenter("medfm-interactive").net
    before = _interactive_output(net)
    add_adapter(net, method, rank=4)
    assert torch.equal(_interactive_output(net), before) if method == "dd-adapter" else torch.allclose(_interactive_output(net), before)
    trainable = trainable_state(net, method)
    assert trainable and all(("lora_" in key) if method == "lora" else (".adapter." in key) for key in trainable)
    assert sum(v.numel() for v in trainable.values()) < 0.1 * sum(p.numel() for p in net.parameters())


def test_dd_adapter_is_dilated_depthwise_and_learns():
    adapter = DDAdapter(channels=16, rank=4)
    assert (adapter.local.dilation, adapter.wide.dilation) == ((1, 1), (3, 3))
    assert adapter.local.groups == adapter.wide.groups == 4 and adapter.down.kernel_size == adapter.up.kernel_size == (1, 1)
    x = torch.randn(2, 16, 12, 12)
    assert torch.equal(adapter(x), x)  # zero-initialised up-projection
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        (adapter(x) - 2 * x).pow(2).mean().backward()
        optimizer.step()
    assert not torch.equal(adapter(x), x)


def test_vpt_prepends_prompts_in_every_vit_block_and_keeps_the_output_shape():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=32, depth=2, num_heads=2)
    x = torch.randn(2, 3, 32, 32)
    before = vit(x)
    add_adapter(vit, "vpt", rank=3)
    trainable = trainable_state(vit, "vpt")
    assert sorted(trainable) == ["blocks.0.prompts", "blocks.1.prompts"]
    assert trainable["blocks.0.prompts"].shape == (1, 3, 32)
    after = vit(x)
    assert after.shape == before.shape and not torch.allclose(after, before)
    after.sum().backward()
    assert vit.blocks[0].prompts.grad is not None and vit.patch_embed.proj.weight.grad is None


def test_dd_adapter_on_vit_tokens_passes_the_class_token_and_starts_equal():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                            embed_dim=32, depth=2, num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    before = vit.forward_features(x)
    add_adapter(vit, "dd-adapter", rank=4)
    assert torch.allclose(vit.forward_features(x), before, atol=1e-6)
    with torch.no_grad():
        vit.blocks[0].adapter.up.weight.normal_()
    after = vit.forward_features(x)
    assert not torch.allclose(after[:, 1:], before[:, 1:], atol=1e-3)


def test_vpt_and_dd_adapter_refuse_networks_without_their_blocks():
    with pytest.raises(MedfmError, match="vpt needs transformer blocks on tokens"):
        add_adapter(create_segmenter("medfm-interactive").net, "vpt")
    with pytest.raises(MedfmError, match="unknown fine-tuning method 'prefix'; choose one of: lora, dd-adapter, vpt, full"):
        add_adapter(torch.nn.Linear(2, 2), "prefix")
    with pytest.raises(MedfmError, match="dd-adapter needs encoder blocks"):
        add_adapter(torch.nn.Sequential(torch.nn.Linear(2, 2)), "dd-adapter")


def _trained_adapter(tmp_path, method: str = "lora", base_sha256: str | None = None):
    """An adapter file with random (non-zero) trained tensors; returns the path and the segmenter it came from."""
    segmenter = create_segmenter("medfm-interactive")
    add_adapter(segmenter.net, method, rank=4)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in segmenter.net.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 0.05)
    segmenter.net.eval()
    path = tmp_path / f"{method}.safetensors"
    save_adapter(path, trainable_state(segmenter.net, method), "medfm-interactive",
                 base_sha256 or create_segmenter("medfm-interactive").info.weights_sha256, method, 4)
    return path, segmenter


@pytest.mark.parametrize("method", ["lora", "dd-adapter"])
def test_adapter_file_round_trips_through_the_registry(tmp_path, method):
    path, trained = _trained_adapter(tmp_path, method)
    base = create_segmenter("medfm-interactive")
    loaded = create_segmenter("medfm-interactive", adapter=path)
    assert torch.allclose(_interactive_output(loaded.net), _interactive_output(trained.net), atol=1e-5)
    assert not torch.allclose(_interactive_output(loaded.net), _interactive_output(base.net), atol=1e-3)
    assert loaded.info.weights_sha256 not in (None, base.info.weights_sha256)  # outputs name the adapted weights
    plane = np.random.default_rng(0).integers(0, 255, (64, 80)).astype(np.uint8)
    loaded.set_image(plane)
    assert loaded.predict(Prompt(boxes=[(10, 10, 40, 40)])).mask.shape == (64, 80)
    assert path.stat().st_size < 0.1 * 10_408_692  # ≤ 10 % of the base weights file


def test_adapter_for_other_weights_is_refused_in_one_line(tmp_path, capsys):
    path, _ = _trained_adapter(tmp_path, base_sha256="0" * 64)
    with pytest.raises(MedfmError, match=r"an adapter for medfm-interactive \(weights 000000000000\), not for medfm-interactive"):
        create_segmenter("medfm-interactive", adapter=path)
    with pytest.raises(MedfmError, match="an adapter for medfm-interactive .*, not for medfm-clip-small"):
        create_encoder("medfm-clip-small", adapter=path)
    image = tmp_path / "plane.png"
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    code, _, err = run_cli(["segment", str(image), "--box", "2,2,20,20", "--adapter", str(path), "-o", str(tmp_path / "o.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "an adapter for medfm-interactive" in err
    assert not (tmp_path / "o.png").exists()


def test_a_file_that_is_not_an_adapter_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(MedfmError, match="not a medfm adapter file"):
        create_segmenter("medfm-interactive", adapter=tmp_path / "weights.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    with pytest.raises(MedfmError, match="not a safetensors adapter file"):
        create_segmenter("medfm-interactive", adapter=tmp_path / "text.safetensors")
    with pytest.raises(MedfmError, match="adapter file not found"):
        create_segmenter("medfm-interactive", adapter=tmp_path / "missing.safetensors")


def test_serve_attaches_an_adapter_to_the_model_it_was_made_for(tmp_path, capsys):
    from medfm.server.settings import ServerSettings, attach_adapter

    path, _ = _trained_adapter(tmp_path)
    settings = ServerSettings(data_dir=tmp_path)
    attach_adapter(settings, path)
    assert (settings.segmenter_adapter, settings.encoder_adapter) == (path, None)
    other = ServerSettings(data_dir=tmp_path, segmenter="sam-vit-b")
    with pytest.raises(MedfmError, match="an adapter for medfm-interactive; the server runs sam-vit-b and medfm-clip-small"):
        attach_adapter(other, path)
    code, _, err = run_cli(["serve", "--adapter", str(tmp_path / "missing.safetensors"), "--port", "1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "adapter file not found" in err


@pytest.mark.parametrize("method", ["lora", "dd-adapter"])
def test_medfm_clip_adapts_and_starts_equal(method):
    encoder = create_encoder("medfm-clip-small")
    planes = [np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)]
    before = encoder.encode_planes(planes)
    add_adapter(encoder.model, method, rank=4)
    encoder.model.eval()
    assert np.allclose(encoder.encode_planes(planes), before, atol=1e-6)
    assert 0 < sum(p.numel() for p in encoder.model.parameters() if p.requires_grad) < 300_000


@pytest.mark.parametrize(("arch", "method", "blocks"), [
    ("vit-tiny", "vpt", 6), ("vit-tiny", "dd-adapter", 6), ("kan-vit-tiny", "vpt", 6), ("dct-vit-tiny", "dd-adapter", 6),
    ("cnn-small", "dd-adapter", 6),
])
def test_medfm_pretrain_encoders_adapt_in_their_blocks_and_start_equal(arch, method, blocks):
    from medfm.models.adapters.dd_adapter import DDAdaptedBlock
    from medfm.models.adapters.vpt import PromptedBlock
    from medfm.models.encoders.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone({"arch": arch}).eval()
    pixels = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        before = backbone(pixels)
    add_adapter(backbone, method, rank=2, model_name=arch)
    wrapped = DDAdaptedBlock if method == "dd-adapter" else PromptedBlock
    assert sum(isinstance(module, wrapped) for module in backbone.modules()) == blocks
    with torch.no_grad():
        after = backbone(pixels)
    assert after.shape == before.shape
    if method == "dd-adapter":  # a zero-initialised adapter leaves the encoder as it was; prompts change the tokens
        assert torch.allclose(after, before, atol=1e-5)


def test_vpt_refuses_medfm_encoders_that_cannot_take_prompt_tokens():
    from medfm.models.encoders.backbone import build_backbone

    with pytest.raises(MedfmError, match=r"^--method vpt adds prompt tokens, but dct's DCT attention needs exactly the "
                                         r"image's token grid \(use dd-adapter, lora or full\)$"):
        add_adapter(build_backbone({"arch": "dct-vit-tiny"}), "vpt", model_name="dct")
    with pytest.raises(MedfmError, match="vpt needs transformer blocks on tokens"):
        add_adapter(build_backbone({"arch": "cnn-small"}), "vpt", model_name="cnn")
