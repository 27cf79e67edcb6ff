"""``medfm pretrain --workers N``: N processes (torch DDP, gloo) take the same steps as one with the same global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from PIL import Image as PILImage

from medfm.train.pretrain import pretrain
from medfm.train.pretrain_data import pretraining_inputs

STEPS = 4
#: Measured (2026-12-04) over the 4 steps, largest relative loss difference: MAE 9e-8 (no BatchNorm, a loss per
#: sample), SimDINO 6.3e-5, Barlow Twins 1.4e-3 (its projector's BatchNorm, and the batch's cross-correlation, over
#: the gathered batch); the first loss, before any update, within 1.3e-6. As for `train clip`, Adam turns the
#: rounding of a split gradient sum into sign flips of the smallest gradients, which the later steps carry.
FIRST_LOSS_RTOL = 1e-5
LOSS_RTOL = 5e-3


def images(folder: Path, count: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        PILImage.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8)).save(folder / f"i{index}.png")
    return folder


def losses(data: Path, out: Path, method: str, arch: str, workers: int) -> list[float]:
    steps: list[float] = []
    pretrain(pretraining_inputs(data), out, method=method, arch=arch, max_steps=STEPS, batch_size=4, workers=workers,
             on_step=lambda step, loss: steps.append(loss))
    return steps


@pytest.mark.parametrize(("method", "arch"), [("mae", "vit-tiny"), ("simdino", "cnn-small"), ("barlow", "cnn-small")])
def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path, method, arch):
    torch.set_num_threads(1)
    data = images(tmp_path / "data")
    one = losses(data, tmp_path / "one", method, arch, 1)
    two = losses(data, tmp_path / "two", method, arch, 2)
    assert len(one) == len(two) == STEPS
    assert len(set(np.round(one, 3))) > 1  # the loss moves, so equal trajectories say something
    assert two[0] == pytest.approx(one[0], rel=FIRST_LOSS_RTOL)
    np.testing.assert_allclose(two, one, rtol=LOSS_RTOL)
    assert (tmp_path / "two" / "encoder.safetensors").is_file()


def test_a_worker_count_that_does_not_divide_the_batch_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["pretrain", str(images(tmp_path / "data")), "-o", str(tmp_path / "encoder"), "--method", "barlow",
                            "--batch-size", "4", "--workers", "3"], capsys)
    assert code == 2 and err.strip() == ("medfm: error: --workers 3 does not divide the batch of 4: each process takes "
                                         "an equal share of it; choose a divisor or another batch size")
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]


def test_every_training_command_refuses_workers_and_ray_under_a_launcher(tmp_path, monkeypatch):
    """Under torchrun (a group already started), --workers and --ray would each start another: refused before any work."""
    from medfm.errors import MedfmError
    from medfm.scale import ddp
    from medfm.train.clip import train_clip
    from medfm.train.finetune import finetune
    from medfm.train.seg import train_segmenter

    monkeypatch.setattr(ddp, "launched_group", lambda: ddp.Group(0, 2))
    assert ddp.launcher_group(1, None) == ddp.Group(0, 2)
    data, out = images(tmp_path / "data"), tmp_path / "out"
    calls = [lambda **extra: pretrain([data], out, method="mae", batch_size=4, **extra),
             lambda **extra: train_segmenter(tmp_path / "manifest.csv", out, **extra),
             lambda **extra: finetune("medfm-interactive", tmp_path / "manifest.csv", out, **extra),
             lambda **extra: train_clip(tmp_path / "data", out, **extra)]
    for call in calls:
        with pytest.raises(MedfmError, match="^--workers starts processes on this machine; under torchrun, --nproc-per-node does$"):
            call(workers=2)
        with pytest.raises(MedfmError, match="^--ray starts its own training group; under torchrun leave it out$"):
            call(ray="local")
    assert not out.exists()
