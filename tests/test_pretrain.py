"""``medfm pretrain``: the three objectives against hand-computed values, resuming after SIGKILL,
the encoder folder in the registry, and one-line refusals of bad input. Tiny generated data only."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from killtools import child_env, kill_after_checkpoint
from PIL import Image as PILImage

from medfm.errors import MedfmError
from medfm.models import create_encoder
from medfm.train.pretrain import pretrain
from medfm.train.pretrain_data import pretraining_inputs
from medfm.train.ssl_losses import barlow_twins_loss, coding_rate, mae_loss, patchify, simdino_loss

REPOSITORY = Path(__file__).resolve().parents[1]


def test_mae_loss_normalises_each_target_patch_and_scores_masked_patches_only():
    # patch [1, 2, 3]: mean 2, unbiased variance 1 → target [-1, 0, 1]; predicting zeros costs 2/3.
    # patch [2, 2, 2]: constant → target 0; predicting zeros costs 0.
    target = torch.tensor([[[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]]])
    predicted = torch.zeros_like(target)
    assert mae_loss(predicted, target, torch.tensor([[True, False]])).item() == pytest.approx(2 / 3, rel=1e-5)
    assert mae_loss(predicted, target, torch.tensor([[True, True]])).item() == pytest.approx(1 / 3, rel=1e-5)
    assert mae_loss(predicted, target, torch.tensor([[False, True]])).item() == pytest.approx(0.0, abs=1e-9)


def test_patchify_orders_patches_row_major():
    pixels = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(pixels, 2)
    assert patches.shape == (1, 4, 4)
    assert patches[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # the top-right patch


def test_coding_rate_of_orthonormal_features_by_hand():
    # Z = I₂ (n = 2, d = 2), ε = 1: ½ logdet(I + 2/(2·1)·I) = ½ · 2 ln 2 = ln 2
    assert coding_rate(torch.eye(2), eps=1.0).item() == pytest.approx(math.log(2), rel=1e-6)
    # collapsed features (both rows equal) code less than spread ones
    assert coding_rate(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item() < coding_rate(torch.eye(2)).item()


def test_simdino_loss_by_hand():
    s0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    s1 = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # pairs of other crops: (student 0, teacher 1) distance 0; (student 1, teacher 0) ‖[0,1]-[1,0]‖² = 2 per row
    # → mean distance 1; each global view's Z has ZᵀZ = I: R = ½ logdet(I + 2/(2·0.25)·I) = ln 5
    loss = simdino_loss([s0, s1], [s0, s0], weight=0.1, eps=0.5)
    assert loss.item() == pytest.approx(1 - 0.1 * math.log(5), rel=1e-5)


def test_barlow_twins_loss_by_hand():
    # each column standardises to [1, -1]: identical views give C = [[1, 1], [1, 1]] → 0 + λ·2
    first = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert barlow_twins_loss(first, first, off_diagonal_weight=0.005).item() == pytest.approx(0.01, rel=1e-3)
    # second view's column 1 flipped: C = [[1, -1], [1, -1]] → (1-1)² + (1+1)² + λ(1 + 1)
    second = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    assert barlow_twins_loss(first, second, off_diagonal_weight=0.005).item() == pytest.approx(4.01, rel=1e-3)


def images(folder: Path, count: int = 6, size: tuple[int, int] = (40, 48)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        PILImage.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(folder / f"i{index}.png")
    return folder


@pytest.mark.parametrize(("method", "arch"), [("mae", "vit-tiny"), ("simdino", "cnn-small"), ("barlow", "cnn-small")])
def test_each_method_writes_an_encoder_folder_the_registry_loads(tmp_path, method, arch):
    data = images(tmp_path / "data")
    out = tmp_path / "encoder"
    summary = pretrain(pretraining_inputs(data), out, method=method, arch=arch, max_steps=2, batch_size=4)
    assert summary["steps"] == 2 and math.isfinite(summary["loss_last_10"])
    assert sorted(p.name for p in out.iterdir()) == ["card.md", "config.json", "encoder.safetensors", "pretraining.json"]
    encoder = create_encoder(str(out))
    assert encoder.info.name == str(out.resolve()) and encoder.info.weights_sha256
    vectors = encoder.encode_planes([np.zeros((30, 30), np.uint8), np.random.default_rng(1).random((50, 60))])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert f"**{method}**" in (out / "card.md").read_text()


def test_the_encoder_folder_works_with_fit_probe_and_classify(tmp_path, capsys):
    data = images(tmp_path / "data", count=8)
    out = tmp_path / "encoder"
    pretrain(pretraining_inputs(data), out, method="barlow", arch="cnn-small", max_steps=1, batch_size=4)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"data/i{i}.png,{'a' if i % 2 else 'b'}\n" for i in range(8)))
    code, _, err = run_cli(["fit-probe", str(manifest), "--label-column", "label", "--model", str(out),
                            "-o", str(tmp_path / "probe.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "probe.json").read_text())["model"]["name"] == str(out.resolve())
    code, out_text, err = run_cli(["classify", str(data / "i0.png"), "--probe", str(tmp_path / "probe.json"), "--json"], capsys)
    assert code == 0, err
    assert set(json.loads(out_text)[0]["probabilities"]) == {"a", "b"}


def test_a_damaged_encoder_folder_is_refused(tmp_path):
    out = tmp_path / "encoder"
    pretrain(pretraining_inputs(images(tmp_path / "data")), out, method="barlow", max_steps=1, batch_size=4)
    weights = out / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(MedfmError, match="does not match the sha256 in its config"):
        create_encoder(str(out))


PRETRAIN_IN_CHILD = """
import sys
from medfm.train.pretrain import pretrain
from medfm.train.pretrain_data import pretraining_inputs
pretrain(pretraining_inputs(sys.argv[1]), sys.argv[2], method="simdino", arch="cnn-small", batch_size=4, max_steps=int(sys.argv[3]),
         checkpoint_seconds=0.0, resume=sys.argv[4] == "resume")
"""


def test_pretraining_resumes_after_sigkill_to_the_same_weights(tmp_path):
    data = images(tmp_path / "data")
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    command = ["-c", PRETRAIN_IN_CHILD, str(data), str(killed), "8", "fresh"]
    kill_after_checkpoint(command, tmp_path / ".killed.partial" / "checkpoint.pt")
    assert not killed.exists()  # never a half-written ENCODER_DIR
    with pytest.raises(MedfmError, match="pass --resume"):
        pretrain(pretraining_inputs(data), killed, method="simdino", batch_size=4, max_steps=8)
    subprocess.run([sys.executable, *command[:-1], "resume"], env=child_env(), check=True)
    subprocess.run([sys.executable, *command[:3], str(straight), "8", "fresh"], env=child_env(), check=True)
    history = json.loads((killed / "pretraining.json").read_text())
    assert history["steps"] == 8 and history["resumed_at_steps"] and 0 < history["resumed_at_steps"][0] < 8
    resumed_config = json.loads((killed / "config.json").read_text())
    straight_config = json.loads((straight / "config.json").read_text())
    # each step's draws are seeded by its number, so the resumed run ends where the uninterrupted one does
    assert resumed_config["weights"]["sha256"] == straight_config["weights"]["sha256"]
    assert not (tmp_path / ".killed.partial").exists()


@pytest.mark.parametrize(("make", "args", "message"), [
    (lambda tmp: images(tmp / "one", count=1), ["--method", "barlow"], "pretraining needs at least 2 images; the data has 1"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", ["--method", "barlow"], "empty: the folder holds no images"),
    (lambda tmp: images(tmp / "small", size=(8, 8)), ["--method", "mae", "--arch", "vit-tiny"],
     "i0.png: a plane of 8x8 pixels is smaller than the model's patch (16 pixels)"),
    (lambda tmp: images(tmp / "d"), ["--method", "mae"], "MAE masks patch tokens and needs a ViT architecture"),
    (lambda tmp: images(tmp / "d"), ["--method", "byol"], "unknown method 'byol'; choose one of: mae, simdino, barlow"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, args, message):
    data = make(tmp_path)
    code, _, err = run_cli(["pretrain", str(data), "-o", str(tmp_path / "enc"), "--max-steps", "1", *args], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "enc").exists()
