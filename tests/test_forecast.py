"""Forecasting: baselines, the latent neural-ODE network, the CLI, training with resume after SIGKILL, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from killtools import kill_after_checkpoint, step_of

from medfm.errors import MedfmError
from medfm.io import load, save
from medfm.io.image import Image
from medfm.io.sidecar import sidecar_path
from medfm.models.registry import create_forecaster
from medfm.tasks.forecast import forecast_frames
from medfm.train.forecast import evaluate_forecaster, train_forecaster

TINY_RECIPE = {"size": 16, "features": 4, "latent": 2, "horizon": 2, "frame_stride": 1, "batch_size": 4}


def moving_disc(frames: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """``(frames, size, size)`` uint8: a bright disc moving one pixel a frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    start = rng.integers(4, 8, size=2)
    return np.stack([((y - start[0] - t) ** 2 + (x - start[1] - t) ** 2 < 16) * 200 + 20 for t in range(frames)]).astype(np.uint8)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    for n in range(6):
        save(Image(moving_disc(10, seed=n).transpose(2, 1, 0)[:, :, None, :, None]), folder / f"clip{n}.gif")
    return folder


@pytest.fixture(scope="module")
def tiny_model(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-forecast"
    train_forecaster([videos], out, max_steps=3, **TINY_RECIPE)
    return out


def test_baselines_repeat_and_extrapolate():
    ramp = np.stack([np.full((4, 5), v, np.float32) for v in (0.1, 0.2, 0.3)])
    assert np.allclose(forecast_frames(ramp, 3, "last"), 0.3)
    assert np.allclose(forecast_frames(ramp, 3, "linear")[:, 0, 0], [0.4, 0.5, 0.6])
    assert np.allclose(forecast_frames(ramp, 9, "linear")[-1], 1.0)  # clipped to the value range


def test_evaluation_names_the_winner_per_step(tiny_model):
    ramp = np.stack([np.full((16, 16), 10 * t, np.uint8) for t in range(10)])
    results = evaluate_forecaster(create_forecaster(tiny_model), [ramp], horizon=2)
    assert results["windows"] == 4 and results["best"]["psnr"] == ["linear", "linear"]
    assert results["mean"]["last"]["psnr"][0] > results["mean"]["last"]["psnr"][1]  # further ahead is harder


def test_model_folder_is_complete_and_the_network_forecasts_at_full_size(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["kind"] == "forecaster" and config["training"]["steps"] == 3
    model = create_forecaster(tiny_model)
    assert model.weights_sha256 == config["weights"]["sha256"]
    frames = moving_disc(3, size=40).astype(np.float32) / 255
    future = forecast_frames(frames, 4, "ode", model)
    assert future.shape == (4, 40, 40) and 0 <= future.min() and future.max() <= 1


def test_cli_forecasts_a_video_and_a_sequence_of_images(tiny_model, videos, tmp_path, capsys):
    code, out, err = run_cli(["forecast", str(videos / "clip0.gif"), "--steps", "3", "--model", str(tiny_model),
                              "-o", str(tmp_path / "next.gif")], capsys)
    assert code == 0, err
    assert load(tmp_path / "next.gif").shape[:4] == (24, 24, 1, 3)
    assert json.loads(sidecar_path(tmp_path / "next.gif").read_text())["parameters"]["observed"] == 10
    stills = []
    for t, frame in enumerate(moving_disc(3)):
        stills.append(tmp_path / f"visit{t}.png")
        save(Image(frame.T), stills[-1])
    code, out, err = run_cli(["forecast", *map(str, stills), "--method", "linear", "--steps", "2",
                              "-o", str(tmp_path / "next.nii.gz")], capsys)
    assert code == 0, err
    forecast = load(tmp_path / "next.nii.gz")
    assert forecast.shape == (24, 24, 1, 2, 1) and forecast.provenance.synthetic
    assert forecast.provenance.parameters["method"] == "forecast-linear" and json.loads(out)["observed_frames"] == 3


@pytest.mark.parametrize("case", ["one image", "unreadable video", "sizes differ"])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(case, tmp_path, capsys):
    first = tmp_path / "a.png"
    save(Image(moving_disc(1)[0].T), first)
    inputs, expected = [first], "a.png: a sequence of one image"
    if case == "unreadable video":
        inputs = [tmp_path / "cine.mp4"]
        inputs[0].write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
        expected = "cine.mp4"
    elif case == "sizes differ":
        save(Image(np.zeros((30, 20), np.uint8)), tmp_path / "b.png")
        inputs, expected = [first, tmp_path / "b.png"], "b.png: is 30x20 pixels"
    target = tmp_path / "out" / "f.nii.gz"
    target.parent.mkdir()
    code, out, err = run_cli(["forecast", *map(str, inputs), "--method", "last", "-o", str(target)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err
    assert list(target.parent.iterdir()) == []


def test_training_resumes_after_sigkill(videos, tmp_path):
    out, build = tmp_path / "model", tmp_path / ".model.partial"
    recipe = ", ".join(f"{k}={v!r}" for k, v in TINY_RECIPE.items())
    script = ("from medfm.train.forecast import train_forecaster; "
              f"train_forecaster([{str(videos)!r}], {str(out)!r}, budget_minutes=30, checkpoint_seconds=0, {recipe})")
    kill_after_checkpoint(["-c", script], build / "checkpoint.pt")
    assert not out.exists()
    done = step_of(build / "checkpoint.pt")
    with pytest.raises(MedfmError, match="pass --resume"):
        train_forecaster([videos], out, max_steps=done + 2)
    summary = train_forecaster([videos], out, resume=True, max_steps=done + 2)
    assert summary["steps"] == done + 2 and summary["resumed_at_steps"] == [done]
    assert not build.exists()


def test_the_network_method_needs_a_model_folder(videos, tmp_path, capsys):
    code, out, err = run_cli(["forecast", str(videos / "clip0.gif"), "-o", str(tmp_path / "next.gif")], capsys)
    assert code == 2 and "--method ode needs --model" in err and not (tmp_path / "next.gif").exists()
