"""``medfm train seg --workers N``: N processes (torch DDP, gloo) take the same steps as one with the same global batch."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from clitools import run_cli
from killtools import kill_after_checkpoint, step_of
from segdata import write_discs
from medfm.errors import MedfmError
from medfm.models.automatic.network import build_network
from medfm.scale import ddp
from medfm.scale.ddp import Group, check_workers, local_group
from medfm.train.seg import train_segmenter
from medfm.train.seg_plan import architecture_config

#: Global batch 4: one process takes 4 patches a step, each of two takes 2.
BATCH = {"batch_size": "4"}
STEPS = 6
#: Measured: the largest relative loss difference over the 6 steps was 1.2e-7 (float rounding of the split
#: gradient sum); the bounds leave room for it to grow through Adam's steps. A weight once differed by
#: 1.09e-5 on a loaded machine; 5e-5 is still 5 % of one step at learning rate 1e-3, so a wrong split shows.
LOSS_RTOL = 1e-4
WEIGHTS_ATOL = 5e-5
OUTPUT_ATOL = 1e-4


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_discs(tmp_path_factory.mktemp("discs"), count=8)


def train(discs: Path, out: Path, workers: int) -> tuple[list[float], dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    losses: list[float] = []
    summary = train_segmenter(discs, out, max_steps=STEPS, budget_minutes=10_000, plan_overrides=BATCH, workers=workers,
                              on_step=lambda step, loss: losses.append(loss))
    return losses, load_file(out / "weights.safetensors"), summary


@pytest.mark.parametrize("architecture", ["auto-unet", "auto-dynunet", "auto-transunet"])
def test_the_segmenters_normalise_each_sample_alone(architecture):
    """The premise of the equivalence: no BatchNorm, whose statistics would differ per process."""
    network = build_network(architecture_config(architecture), 1, 2, 2)
    assert not any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in network.modules())


def test_one_process_trains_the_network_itself():
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    assert Group().wrap(network) is network and isinstance(network[1], torch.nn.BatchNorm2d)


def test_two_processes_follow_one_process_with_the_same_global_batch(discs, tmp_path):
    one_losses, one_weights, one = train(discs, tmp_path / "one", workers=1)
    two_losses, two_weights, two = train(discs, tmp_path / "two", workers=2)
    assert one["processes"] == 1 and two["processes"] == 2
    assert len(one_losses) == len(two_losses) == STEPS
    assert len(set(np.round(one_losses, 4))) > 1  # the loss moves, so equal trajectories say something
    np.testing.assert_allclose(two_losses, one_losses, rtol=LOSS_RTOL)
    assert one_weights.keys() == two_weights.keys()
    for name, weight in one_weights.items():
        # a bias ahead of an instance norm has no true gradient (the norm removes it): Adam turns its rounding
        # noise into steps of up to the learning rate, which change no output; the outputs are compared below
        if not name.endswith("bias"):
            torch.testing.assert_close(two_weights[name], weight, rtol=0, atol=WEIGHTS_ATOL)
    torch.testing.assert_close(predict(two_weights), predict(one_weights), rtol=0, atol=OUTPUT_ATOL)


def predict(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The trained disc network's softmax on fixed noise images."""
    network = build_network(architecture_config("auto-unet"), 1, 2, 2)
    network.load_state_dict(weights)
    with torch.no_grad():
        return network.eval()(torch.randn((2, 1, 32, 32), generator=torch.Generator().manual_seed(0))).softmax(1)


def test_the_global_batch_is_split_in_contiguous_equal_shares():
    batch = list(range(8))
    assert [Group(rank, 2).share(batch) for rank in range(2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert Group().share(batch) == batch


@pytest.mark.parametrize("workers, batch, samples, message", [
    (0, None, None, "--workers must be at least 1; got 0"),
    (3, 4, 8, "--workers 3 does not divide the batch of 4"),
    (9, 8, 8, "--workers 9: more worker processes than the 8 training samples"),
])
def test_bad_worker_counts_are_refused(workers, batch, samples, message):
    with pytest.raises(MedfmError, match=message):
        check_workers(workers, batch, samples)


@pytest.mark.parametrize("workers, expected", [("0", "--workers must be at least 1; got 0"),
                                               ("8", "--workers 8: more worker processes than the 6 training samples")])
def test_bad_worker_counts_on_the_command_line_are_one_line(discs, tmp_path, capsys, workers, expected):
    code, _, stderr = run_cli(["train", "seg", str(discs), "-o", str(tmp_path / "model"), "--workers", workers,
                               "--plan", "batch_size=8"], capsys)
    errors = [line for line in stderr.splitlines() if line.startswith("medfm: error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    assert expected in errors[0]
    assert not (tmp_path / "model").exists() and not (tmp_path / ".model.partial").exists()


def test_a_two_process_training_whose_driver_is_killed_resumes(discs, tmp_path):
    out = tmp_path / "model"
    checkpoint = tmp_path / ".model.partial" / "checkpoint.pt"
    code = ("from medfm.train.seg import train_segmenter\n"
            f"train_segmenter({str(discs)!r}, {str(out)!r}, max_steps=10**6, checkpoint_seconds=0, workers=2, "
            "plan_overrides={'batch_size': '2'})\n")
    kill_after_checkpoint(["-c", code], checkpoint)
    step = step_of(checkpoint)
    summary = train_segmenter(discs, out, max_steps=step + 2, resume=True, workers=2)
    assert step >= 1 and summary["steps"] == step + 2 and summary["resumed_at_steps"] == [step]
    assert summary["processes"] == 2 and (out / "weights.safetensors").is_file() and not checkpoint.parent.exists()


def refusing_follower(group: Group) -> None:
    raise MedfmError(f"rank {group.rank}: cannot read case03.png")


def test_a_failing_process_is_reported_by_rank_0_in_one_line():
    with pytest.raises(MedfmError, match="^rank 1: cannot read case03.png$"):
        with local_group(2, refusing_follower) as group:
            group.broadcast("the set-up")


def end_while_starting(how: str) -> None:
    """End this process as a crash at import (exit code 3) or a SIGKILL would."""
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


class FollowerThatCannotStart:
    """A follower whose unpickling in rank 1's new interpreter ends that process before it joins the group."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __reduce__(self):
        return end_while_starting, (self.how,)


@pytest.mark.parametrize("how, status", [("exit", "exit code 3"), ("sigkill", r"exit code -9 \(SIGKILL\)")])
def test_a_process_that_dies_before_joining_is_reported_at_once(monkeypatch, how, status):
    """Rank 0 does not sit out the rendezvous's timeout (shortened here from 10 minutes so that a regression
    fails in one), and leaves no process behind."""
    monkeypatch.setattr(ddp, "TIMEOUT", timedelta(seconds=60))
    with pytest.raises(MedfmError, match=f"^training process rank 1 ended before joining the group: {status}$"):
        with local_group(2, FollowerThatCannotStart(how)):
            pytest.fail("the group formed without rank 1")
    assert multiprocessing.active_children() == []
