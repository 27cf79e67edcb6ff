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


def test_a_run_killed_before_its_first_checkpoint_says_to_remove_it(videos, tmp_path):
    from medfm.train.forecast import STATE_FILE

    out, build = tmp_path / "model", tmp_path / ".model.partial"
    recipe = ", ".join(f"{k}={v!r}" for k, v in TINY_RECIPE.items())
    script = ("from medfm.train.forecast import train_forecaster; "
              f"train_forecaster([{str(videos)!r}], {str(out)!r}, budget_minutes=30, checkpoint_seconds=3600, {recipe})")
    kill_after_checkpoint(["-c", script], build / STATE_FILE)
    assert not (build / "checkpoint.pt").exists()
    for resume in (False, True):
        with pytest.raises(MedfmError, match=r"before its first checkpoint, so there is nothing to resume; remove it") as refused:
            train_forecaster([videos], out, resume=resume, max_steps=2)
        assert "--resume" not in str(refused.value)


def test_an_unknown_training_setting_is_refused_before_anything_is_written(videos, tmp_path):
    with pytest.raises(MedfmError, match="unknown training setting 'learning_rat'"):
        train_forecaster([videos], tmp_path / "model", learning_rat=1e-3)
    assert list(tmp_path.iterdir()) == []


def test_the_network_method_needs_a_model_folder(videos, tmp_path, capsys):
    code, out, err = run_cli(["forecast", str(videos / "clip0.gif"), "-o", str(tmp_path / "next.gif")], capsys)
    assert code == 2 and "--method ode needs --model" in err and not (tmp_path / "next.gif").exists()


def dated_dicoms(folder: Path, dates: dict[str, str]) -> dict[str, Path]:
    """One CT file per name with its pixels set to a frame of :func:`moving_disc` (in date order) and its
    AcquisitionDate/Time set; the patient's own dates and name stay in the file."""
    import pydicom
    from pydicom.data import get_testdata_file

    frames = moving_disc(len(dates), size=128)
    paths = {}
    for rank, (name, stamp) in enumerate(sorted(dates.items(), key=lambda item: item[1])):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PixelData = frames[rank].astype(np.int16).tobytes()
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{rank + 1}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{rank + 1}.1"
        ds.AcquisitionDate, ds.AcquisitionTime = stamp.split(" ")
        paths[name] = folder / f"{name}.dcm"
        ds.save_as(paths[name])
    return paths


def test_order_date_sorts_dicom_visits_by_acquisition_and_reports_gaps_not_dates(tmp_path, capsys):
    visits = dated_dicoms(tmp_path, {"c": "20240301 090000", "a": "20240101 090000", "b": "20240131 210000"})
    code, out, err = run_cli(["forecast", *(str(visits[n]) for n in "cba"), "--order", "date", "--method", "linear",
                              "--steps", "1", "-o", str(tmp_path / "dated.nii.gz")], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert [Path(p).stem for p in result["inputs"]] == ["a", "b", "c"] and result["gaps_days"] == [30.5, 29.5]
    assert "2024" not in out and "CompressedSamples" not in out  # no dates, no patient name
    code, _, err = run_cli(["forecast", *(str(visits[n]) for n in "abc"), "--method", "linear", "--steps", "1",
                            "-o", str(tmp_path / "given.nii.gz")], capsys)
    assert code == 0, err
    assert np.array_equal(np.asarray(load(tmp_path / "dated.nii.gz").array), np.asarray(load(tmp_path / "given.nii.gz").array))
    code, out, err = run_cli(["forecast", *(str(visits[n]) for n in "cba"), "--method", "linear", "--steps", "1",
                              "-o", str(tmp_path / "as_given.nii.gz")], capsys)
    assert code == 0 and "gaps_days" not in out  # without --order date the command line's order stands
    assert not np.array_equal(np.asarray(load(tmp_path / "as_given.nii.gz").array), np.asarray(load(tmp_path / "given.nii.gz").array))


@pytest.mark.parametrize("case", ["undated", "same time", "bad order"])
def test_order_date_refuses_what_it_cannot_sort_in_one_line(case, tmp_path, capsys):
    visits = dated_dicoms(tmp_path, {"a": "20240101 090000", "b": "20240201 090000"})
    inputs, order, expected = [visits["a"], visits["b"]], "date", ""
    if case == "undated":
        save(Image(moving_disc(1, size=128)[0].T), tmp_path / "still.png")
        inputs, expected = [visits["a"], tmp_path / "still.png"], "still.png: has no acquisition, series or study date"
    elif case == "same time":
        (tmp_path / "twin").mkdir()
        twin = dated_dicoms(tmp_path / "twin", {"t": "20240101 090000"})
        inputs, expected = [visits["a"], twin["t"]], "was acquired at the same time as"
    else:
        order, expected = "newest", "--order must be one of given, date; got 'newest'"
    code, out, err = run_cli(["forecast", *map(str, inputs), "--order", order, "--method", "last",
                              "-o", str(tmp_path / "f.nii.gz")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "f.nii.gz").exists()
