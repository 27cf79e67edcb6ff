"""``medfm train clip --workers N``: N processes (torch DDP, gloo) take the same steps as one with the same global batch."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from clipdata import write_cache
from clitools import run_cli
from safetensors.torch import load_file

from medfm.scale.batchnorm import GlobalBatchNorm, use_global_batchnorm
from medfm.scale.ddp import Group, local_group
from medfm.train.clip import train_clip

#: Global batch 24, the whole training split of the generated cache: one step per epoch, so that the epochs'
#: losses are the steps' losses. One process takes 24 images a step, each of two takes 12.
BATCH = 24
EPOCHS = 6
#: Measured (2026-12-04): the gradients of one step agree to 3.3e-6 of their norm (float rounding; bound 1e-5).
GRADIENT_RTOL = 1e-5
#: Over whole steps Adam amplifies that rounding: its first step moves every weight by the learning rate times the
#: sign of its gradient, and the few hundred of 1.7M gradients that are smaller than their rounding error (mostly
#: where BatchNorm cancels them) flip sign. Measured: the first loss equal to 1e-7, the six losses within 1.1e-3
#: (relative), the weights' updates differing by 2.6 % of their norm; a missing gradient average or per-process
#: statistics differ from the first step on, by far more (see test_two_processes_compute_one_process_gradients...).
FIRST_LOSS_RTOL = 1e-6
LOSS_RTOL = 5e-3
UPDATE_RTOL = 0.1


@pytest.fixture
def fake_text(monkeypatch):
    """A frozen-MiniLM stand-in for the validation prompts (rank 0 alone validates, in this process)."""
    monkeypatch.setattr("medfm.train.clip.MedfmClipEncoder.encode_text",
                        lambda self, texts: np.random.default_rng(len(texts)).normal(size=(len(texts), 256)).astype(np.float32))


def train(tmp_path, out, workers, loss="clip"):
    weights = train_clip(tmp_path, tmp_path / out, epochs=EPOCHS, loss=loss, batch_size=BATCH, cache=tmp_path / "cache.pt",
                         workers=workers)
    history = [json.loads(line) for line in (tmp_path / out / "history.jsonl").read_text().splitlines()]
    return [record["train_loss"] for record in history], load_file(weights)


@pytest.mark.usefixtures("fake_text")
def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path):
    from medfm.models.encoders.medfm_clip import build_model
    from medfm.models.registry import list_encoders

    torch.set_num_threads(2)
    write_cache(tmp_path / "cache.pt")
    one_losses, one_weights = train(tmp_path, "one", 1)
    two_losses, two_weights = train(tmp_path, "two", 2)
    assert len(one_losses) == len(two_losses) == EPOCHS
    assert len(set(np.round(one_losses, 3))) > 1  # the loss moves, so equal trajectories say something
    assert two_losses[0] == pytest.approx(one_losses[0], rel=FIRST_LOSS_RTOL)
    np.testing.assert_allclose(two_losses, one_losses, rtol=LOSS_RTOL)
    torch.manual_seed(0)  # train_clip's seed: the weights both runs started from
    start = build_model({"name": "medfm-clip-small", **list_encoders()["medfm-clip-small"]}).state_dict()
    assert one_weights.keys() == two_weights.keys()
    floats = [name for name, weight in one_weights.items() if weight.is_floating_point()]  # BatchNorm's statistics too
    apart = sum(float((two_weights[name] - one_weights[name]).norm()) ** 2 for name in floats) ** 0.5
    moved = sum(float((one_weights[name] - start[name]).norm()) ** 2 for name in floats) ** 0.5
    assert apart < UPDATE_RTOL * moved


def contrastive_step(group: Group, loss: str) -> tuple[float, dict[str, torch.Tensor]]:
    """One medfm-clip-small step's loss and gradients (summed over the group's ranks, as DDP gives them to each),
    and BatchNorm's updated statistics, on a fixed global batch of 8 generated images and texts."""
    from medfm.models.encoders.medfm_clip import build_model
    from medfm.models.registry import list_encoders
    from medfm.train.clip import contrastive_loss

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((8, 3, 112, 112), generator=generator)
    text_features = torch.nn.functional.normalize(torch.randn((8, 384), generator=generator), dim=1)
    positives = torch.eye(8, dtype=torch.bool) | torch.tensor([[i // 4 == j // 4 and i % 2 == j % 2 for j in range(8)] for i in range(8)])
    torch.manual_seed(0)
    model = build_model({"name": "medfm-clip-small", **list_encoders()["medfm-clip-small"]})
    model.logit_bias.requires_grad_(loss == "siglip")
    network = group.wrap(model)  # held until the backward pass, whose gradients it averages
    image, text = network(group.share(pixels), text_features)
    value = contrastive_loss(loss, model, group.gather(image), text, positives)
    value.backward()
    state = {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}
    return value.item(), {**state, **{name: buffer for name, buffer in model.named_buffers() if "running" in name}}


def contrastive_step_follower(loss: str, group: Group) -> None:
    contrastive_step(group, loss)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_two_processes_compute_one_process_gradients_and_batchnorm_statistics(loss):
    """The mechanism alone, without the optimiser: the global batch's BatchNorm statistics (GlobalBatchNorm) and
    contrastive loss (Group.gather), and DDP's averaged gradients."""
    torch.set_num_threads(1)
    one_loss, one = contrastive_step(Group(), loss)
    with local_group(2, partial(contrastive_step_follower, loss)) as group:
        two_loss, two = contrastive_step(group, loss)
    assert two_loss == pytest.approx(one_loss, rel=1e-6)
    assert one.keys() == two.keys() and any("running_var" in name for name in one)
    assert ("logit_bias" in one) == (loss == "siglip")
    for name, value in one.items():
        assert float((two[name] - value).norm() / value.norm()) < GRADIENT_RTOL, name


def test_batchnorm_layers_become_global_ones_that_keep_their_parameters():
    """So that an optimiser made before the swap still holds the network's parameters, and checkpoints keep their keys."""
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
    parameters, keys = list(network.parameters()), list(network.state_dict())
    use_global_batchnorm(network)
    assert isinstance(network[1][0], GlobalBatchNorm) and list(network.parameters()) == parameters
    assert list(network.state_dict()) == keys
    network.eval()  # alone and evaluating: plain BatchNorm with the running statistics, no process group needed
    torch.testing.assert_close(network[1][0](torch.ones((2, 4, 5, 5))), torch.ones((2, 4, 5, 5)) / (1 + 1e-5) ** 0.5)


def test_a_worker_count_that_does_not_divide_the_batch_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["train", "clip", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--workers", "3"],
                             capsys)
    assert code == 2 and err.strip() == ("medfm: error: --workers 3 does not divide the batch of 128: each process takes "
                                         "an equal share of it; choose a divisor or another batch size")
    assert not (tmp_path / "run").exists()
