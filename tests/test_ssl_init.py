"""``--init ENCODER_DIR``: a ``medfm pretrain`` encoder starts ``train seg``'s and ``train clip``'s encoders.
The copied tensors equal the encoder's, mismatches are refused in one line, and training then runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clipdata import write_cache
from clitools import run_cli
from safetensors.torch import load_file
from segdata import write_discs

from medfm.errors import MedfmError
from medfm.models.automatic.network import build_network
from medfm.models.encoders.medfm_clip import build_model
from medfm.models.encoders.transfer import load_pretrained_trunk, read_pretrained_trunk
from medfm.models.registry import list_auto_architectures, list_encoders
from medfm.train.clip import train_clip
from medfm.train.pretrain import pretrain
from medfm.train.pretrain_data import pretraining_inputs
from medfm.train.seg import train_segmenter
from medfm.train.seg_plan import make_plan

NET_OF = {"cnn-small": "auto-backbone-cnn", "vit-tiny": "auto-backbone-vit"}


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_discs(tmp_path_factory.mktemp("discs"))


@pytest.fixture(scope="module")
def encoders(discs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One pretrained encoder folder per backbone, pretrained (two steps) on the discs' images without their masks."""
    folder = tmp_path_factory.mktemp("encoders")
    torch.set_num_threads(1)
    for method, arch in (("barlow", "cnn-small"), ("mae", "vit-tiny")):
        pretrain(pretraining_inputs(discs.parent / "images"), folder / arch, method=method, arch=arch, max_steps=2, batch_size=4)
    return {arch: folder / arch for arch in NET_OF}


def trunk_tensors(encoder_dir: Path) -> dict[str, torch.Tensor]:
    return {key.removeprefix("trunk."): value for key, value in load_file(encoder_dir / "encoder.safetensors").items()}


@pytest.mark.parametrize("arch", sorted(NET_OF))
def test_the_loaded_encoder_equals_the_pretrained_one(encoders, arch):
    network = build_network(list_auto_architectures()[NET_OF[arch]], 1, 2, 2)
    before = {key: value.clone() for key, value in network.trunk.state_dict().items()}
    load_pretrained_trunk(network.trunk, read_pretrained_trunk(encoders[arch], arch, "the test net"), "the test net")
    expected = trunk_tensors(encoders[arch])
    assert network.trunk.state_dict().keys() == expected.keys()
    assert all(torch.equal(network.trunk.state_dict()[key], expected[key]) for key in expected)
    assert not all(torch.equal(before[key], expected[key]) for key in expected)  # random init differed
    assert network(torch.zeros(2, 1, 64, 64)).shape == (2, 2, 64, 64)


@pytest.mark.parametrize("arch", sorted(NET_OF))
def test_train_seg_from_a_pretrained_encoder_starts_from_it_and_records_it(discs, encoders, arch, tmp_path):
    out = tmp_path / "model"
    summary = train_segmenter(discs, out, architecture=NET_OF[arch], init=encoders[arch], max_steps=1,
                              plan_overrides={"batch_size": "2"})
    sha256 = json.loads((encoders[arch] / "config.json").read_text())["weights"]["sha256"]
    assert summary["steps"] == 1 and summary["initialised_from"]["weights_sha256"] == sha256
    assert sha256 in (out / "card.md").read_text()
    # one AdamW step at lr 1e-3 moves a weight by about 1e-3: the trained trunk is still the pretrained one
    trained = {key.removeprefix("trunk."): value for key, value in load_file(out / "weights.safetensors").items()
               if key.startswith("trunk.")}
    pretrained = trunk_tensors(encoders[arch])
    weights = [key for key in pretrained if key.endswith("weight") and pretrained[key].ndim > 1]
    assert weights and all(torch.allclose(trained[key], pretrained[key], atol=3e-3) for key in weights)
    random = build_network(list_auto_architectures()[NET_OF[arch]], 1, 2, 2).trunk.state_dict()
    assert not all(torch.allclose(random[key], pretrained[key], atol=3e-3) for key in weights)


def test_an_architecture_without_a_backbone_is_refused_before_the_data_is_read(encoders, tmp_path, capsys):
    code, _, stderr = run_cli(["train", "seg", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "model"),
                               "--arch", "auto-unet", "--init", str(encoders["cnn-small"])], capsys)
    assert code != 0 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "architecture auto-unet has no encoder that a pretrained cnn-small fits" in stderr
    assert not (tmp_path / "model").exists()


def test_an_encoder_of_another_backbone_is_refused_naming_both(discs, encoders, tmp_path):
    with pytest.raises(MedfmError, match="a vit-tiny encoder does not fit architecture auto-backbone-cnn, whose encoder is cnn-small"):
        train_segmenter(discs, tmp_path / "model", architecture="auto-backbone-cnn", init=encoders["vit-tiny"], max_steps=1)
    with pytest.raises(MedfmError, match="a vit-tiny encoder does not fit medfm-clip-small's image tower, whose encoder is cnn-small"):
        train_clip(tmp_path, tmp_path / "run", epochs=1, init=encoders["vit-tiny"])
    assert not (tmp_path / "model").exists() and not (tmp_path / "run").exists()


def test_tensors_of_another_shape_are_refused_naming_the_first(encoders):
    other = build_model({**list_encoders()["medfm-clip-small"], "widths": [16, 32, 64, 128]})
    pretrained = read_pretrained_trunk(encoders["cnn-small"], "cnn-small", "a narrower tower")
    with pytest.raises(MedfmError, match=r"cnn-small encoder does not fit a narrower tower: .*tensors of another shape, first: stem.0.weight"):
        load_pretrained_trunk(other.image_tower, pretrained, "a narrower tower")


def test_folders_that_are_not_pretrained_encoders_are_refused(encoders, tmp_path):
    with pytest.raises(MedfmError, match="not an encoder folder"):
        read_pretrained_trunk(tmp_path, "cnn-small", "x")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("config.json", "encoder.safetensors"):
        (damaged / name).write_bytes((encoders["cnn-small"] / name).read_bytes())
    with (damaged / "encoder.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\0\0\0\0")
    with pytest.raises(MedfmError, match="does not match the sha256 in its config"):
        read_pretrained_trunk(damaged, "cnn-small", "x")


def test_train_clip_starts_its_image_tower_from_the_encoder(encoders, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    write_cache(tmp_path / "cache.pt")
    monkeypatch.setattr("medfm.train.clip.MedfmClipEncoder.encode_text",
                        lambda self, texts: np.random.default_rng(len(texts)).normal(size=(len(texts), 256)).astype(np.float32))
    model = build_model(list_encoders()["medfm-clip-small"])
    load_pretrained_trunk(model.image_tower, read_pretrained_trunk(encoders["cnn-small"], "cnn-small", "tower"), "tower")
    expected = trunk_tensors(encoders["cnn-small"])
    assert all(torch.equal(model.image_tower.state_dict()[key], value) for key, value in expected.items())
    weights = train_clip(tmp_path, tmp_path / "run", epochs=1, batch_size=8, cache=tmp_path / "cache.pt", init=encoders["cnn-small"])
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as handle:
        recorded = handle.metadata()["initialised_from"]
    assert recorded == json.loads((encoders["cnn-small"] / "config.json").read_text())["weights"]["sha256"]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])


def test_a_2d_only_architecture_plans_volumes_slice_by_slice():
    volume = {"kind": "volume", "shape": {"median": [64, 64, 64]}, "spacing_mm": {"median": [1.0, 1.0, 1.0]},
              "modality": ["MR"], "channels": 1, "intensity": {}}
    assert make_plan(volume, {1: "x"}, "auto-unet").dims == 3
    plan = make_plan(volume, {1: "x"}, "auto-backbone-cnn")
    assert plan.dims == 2 and all(side % 32 == 0 for side in plan.patch_size)


def test_finetune_takes_an_encoder_folder_as_its_base(discs, encoders, tmp_path):
    from medfm.models.adapters.file import read_adapter
    from medfm.train.finetune import finetune

    labels = tmp_path / "labels.csv"
    images = sorted((discs.parent / "images").glob("*.png"))
    labels.write_text("image,label\n" + "".join(f"{path},{'odd' if n % 2 else 'even'}\n" for n, path in enumerate(images)))
    summary = finetune(str(encoders["cnn-small"]), labels, tmp_path / "full.safetensors", method="full",
                       label_column="label", max_steps=2, batch_size=4)
    _, metadata = read_adapter(tmp_path / "full.safetensors", tensors=False)
    assert summary["steps"] == 2
    assert metadata["base_sha256"] == json.loads((encoders["cnn-small"] / "config.json").read_text())["weights"]["sha256"]
