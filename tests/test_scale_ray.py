"""Ray runners: the same index, catalog, labels, label maps and robustness curves as the plain path, a killed
worker retried, mismatched or broken workers and unreachable clusters refused in one line. One local Ray
cluster (head + 2 worker CPUs on 127.0.0.1) serves the module."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)
from fakesegmenter import ThresholdSegmenter, fake_segmenter  # noqa: F401  (the fixture)
from PIL import Image as PILImage
from segdata import write_discs
from test_train_clip import random_text_tower  # noqa: F401  (the fixture)

import medfm
from medfm.catalog import ingest, open_catalog
from medfm.errors import MedfmError
from medfm.eval.protocols.robustness import BoxPrompted, segmenter_robustness
from medfm.index import open_index
from medfm.io.synthetic import phantom, write_dicom_series
from medfm.models.registry import create_auto_segmenter
from medfm.scale import LocalRunner, open_runner, ray_runner
from medfm.scale.runners import weights_sha256
from medfm.tasks.auto_segment import auto_segment_files
from medfm.tasks.batch import expand_paths
from medfm.tasks.classify import classify_files
from medfm.tasks.search import build_index
from medfm.train.seg import train_segmenter

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'medfm[ray]')")
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # workers import this module and fakeencoder by name, and keep their embedding caches apart from the user's
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "MEDFM_DATA_DIR", "RAY_USAGE_STATS_ENABLED")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), saved["PYTHONPATH"]]))
    os.environ["MEDFM_DATA_DIR"] = str(tmp_path_factory.mktemp("medfm-data"))
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def slow_square(model: object, value: int) -> int:
    time.sleep(0.4)
    return value * value


def broken_model() -> None:
    raise RuntimeError("no model file on this worker")


def images(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        path = folder / f"image{number:02d}.png"
        PILImage.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_ray_build_writes_the_index_a_local_build_writes(cluster, tmp_path: Path) -> None:
    paths = images(tmp_path / "images", 18)
    encoder = FakeEncoder()
    local = build_index(paths, encoder, tmp_path / "local", runner=LocalRunner(encoder))
    runner = ray_runner("local", FakeEncoder, weights_sha256, encoder.info.weights_sha256, workers=2)
    try:
        distributed = build_index(paths, encoder, tmp_path / "ray", runner=runner)
    finally:
        runner.close()
    assert (local.added, distributed.added, distributed.bad) == (18, 18, [])
    ids = sorted(open_index(tmp_path / "local").ids())
    assert sorted(open_index(tmp_path / "ray").ids()) == ids
    np.testing.assert_allclose(open_index(tmp_path / "ray").vectors(ids), open_index(tmp_path / "local").vectors(ids), atol=1e-6)


def test_a_killed_worker_is_restarted_and_its_work_retried(cluster) -> None:
    runner = ray_runner("local", dict, lambda model: "same", "same", workers=2)
    try:
        victim = runner.pids()[0]
        results = runner.map(slow_square, range(12))
        first = next(results)
        os.kill(victim, signal.SIGKILL)
        rest = list(results)
        survivors = runner.pids()
    finally:
        runner.close()
    assert [first, *rest] == [value * value for value in range(12)]  # each once, in order
    assert victim not in survivors  # the actor was restarted in a new process


def test_a_worker_with_other_weights_is_refused(cluster) -> None:
    with pytest.raises(MedfmError, match=r"holds other weights \(sha256 fake"):
        ray_runner("local", dict, lambda model: "fake-weights", "real-weights", workers=1)


def test_a_worker_that_cannot_load_the_model_is_refused(cluster) -> None:
    with pytest.raises(MedfmError, match="a Ray worker cannot load the model: .*no model file on this worker"):
        ray_runner("local", broken_model, lambda model: None, None, workers=1)


def test_bad_addresses_are_refused_at_once() -> None:
    code = ("from medfm.scale import ray_runner\n"
            "for address in ('127.0.0.1:1', 'nonsense'):\n"
            "    try:\n        ray_runner(address, dict, str, None)\n"
            "    except Exception as exc:\n        print(type(exc).__name__, exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout.splitlines() == [
        "MedfmError cannot reach the Ray cluster at 127.0.0.1:1: Connection refused",
        "MedfmError --ray takes local, HOST:PORT or ray://HOST:PORT; got 'nonsense'",
    ]


def mixed_folder(folder: Path) -> Path:
    """PNGs, a NIfTI volume, two DICOM series (one file copied under another name), a bad image and a text file."""
    images(folder, 6)
    medfm.save(medfm.Image(phantom((12, 10, 4))), folder / "volume.nii.gz")
    write_dicom_series(phantom((16, 16, 5)), folder / "dicom", series_number=1, series_description="ct series")
    mr = write_dicom_series(phantom((12, 12, 3), seed=1), folder / "dicom", modality="MR", series_number=2,
                            series_description="mr series", seed=1)
    (folder / "dicom" / "copy.dcm").write_bytes(mr[0].read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def catalogued(url: str) -> list[dict]:
    """Every record but its times, with patient keys (keyed by each catalog's own secret) numbered in order of appearance."""
    with open_catalog(url) as store:
        records = [{key: value for key, value in dataclasses.asdict(record).items() if key not in ("added_at", "updated_at")}
                   for record in store.query(with_files=True)]
    patients: dict[str | None, int] = {}
    for record in records:
        record["patient_key"] = patients.setdefault(record["patient_key"], len(patients))
    return records


def test_ray_ingest_writes_the_catalog_a_plain_ingest_writes_even_when_a_worker_dies(cluster, tmp_path: Path) -> None:
    folder = mixed_folder(tmp_path / "archive")
    plain = ingest(folder, f"sqlite:///{tmp_path / 'plain.db'}", progress=False)
    runner = open_runner("local", 2)
    try:
        victim = runner.pids()[0]
        os.kill(victim, signal.SIGKILL)  # dead before its first task: Ray restarts it and sends the task again
        distributed = ingest(folder, f"sqlite:///{tmp_path / 'ray.db'}", progress=False, runner=runner)
        assert victim not in runner.pids()
    finally:
        runner.close()
    counts = ("added", "updated", "unchanged", "skipped", "duplicates", "bad")
    assert [getattr(distributed, name) for name in counts] == [getattr(plain, name) for name in counts]
    assert (plain.added, plain.duplicates, [path for path, _ in plain.bad]) == (9, 1, [str(folder / "broken.png")])
    assert catalogued(f"sqlite:///{tmp_path / 'ray.db'}") == catalogued(f"sqlite:///{tmp_path / 'plain.db'}")


def test_ray_classify_gives_the_labels_of_a_plain_run_and_the_same_bad_file_when_a_worker_dies(cluster, tmp_path: Path) -> None:
    paths = images(tmp_path / "images", 10)
    (tmp_path / "images" / "image99.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    inputs = expand_paths([tmp_path / "images"])
    encoder = FakeEncoder()
    plain = classify_files(inputs, encoder, labels=["bright", "dark", "striped"])
    runner = ray_runner("local", FakeEncoder, weights_sha256, encoder.info.weights_sha256, workers=2)
    try:
        os.kill(runner.pids()[1], signal.SIGKILL)  # its chunks are retried on the restarted worker
        distributed = classify_files(inputs, encoder, labels=["bright", "dark", "striped"], runner=runner)
    finally:
        runner.close()
    assert len(plain.results) == len(paths) and [f["input"] for f in plain.failures] == [str(tmp_path / "images" / "image99.png")]
    assert distributed.failures == plain.failures
    assert [(r["path"], r["prediction"], r["probabilities"]) for r in distributed.results] == \
           [(r["path"], r["prediction"], r["probabilities"]) for r in plain.results]


@pytest.fixture(scope="module")
def auto_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ``medfm train seg`` model folder (two steps: its label maps need not be good, only the same) and its images."""
    from medfm.train.seg import train_segmenter

    folder = tmp_path_factory.mktemp("discs")
    train_segmenter(write_discs(folder, count=8), folder / "model", max_steps=2, plan_overrides={"batch_size": "4"})
    return folder / "model", folder / "images"


def test_ray_auto_segment_writes_the_label_maps_of_a_plain_run(cluster, auto_model, tmp_path: Path) -> None:
    model, folder = auto_model
    inputs = expand_paths([folder])[:6]
    segmenter = create_auto_segmenter(model)
    plain = auto_segment_files(inputs, tmp_path / "plain", segmenter)
    runner = open_runner("local", 2, segmenter, partial(create_auto_segmenter, str(model)))
    try:
        distributed = auto_segment_files(inputs, tmp_path / "ray", segmenter, runner=runner)
    finally:
        runner.close()
    assert (len(plain.results), plain.failures, distributed.failures) == (6, [], [])
    assert [r["structures"] for r in distributed.results] == [r["structures"] for r in plain.results]
    for result in plain.results:
        name = Path(result["output"]).name
        np.testing.assert_array_equal(medfm.load(tmp_path / "ray" / name).array, medfm.load(tmp_path / "plain" / name).array)


def test_ray_train_workers_follow_one_process_with_the_same_global_batch(cluster, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from test_train_seg_ddp import LOSS_RTOL, OUTPUT_ATOL, STEPS, predict, train

    discs = write_discs(tmp_path / "discs", count=8)
    _, one_weights, one = train(discs, tmp_path / "one", workers=1)
    two = train_segmenter(discs, tmp_path / "two", max_steps=STEPS, budget_minutes=10_000, plan_overrides={"batch_size": "4"},
                          workers=2, ray="local")
    assert (one["processes"], two["processes"], two["steps"]) == (1, 2, STEPS)
    np.testing.assert_allclose([two["loss_first_10"], two["validation"]["1"]["dice"]["value"]],
                               [one["loss_first_10"], one["validation"]["1"]["dice"]["value"]], rtol=LOSS_RTOL)
    torch.testing.assert_close(predict(load_file(tmp_path / "two" / "weights.safetensors")), predict(one_weights),
                               rtol=0, atol=OUTPUT_ATOL)


def test_a_ray_train_worker_error_comes_back_in_one_line(cluster, tmp_path: Path) -> None:
    with pytest.raises(MedfmError) as caught:
        train_segmenter(tmp_path / "missing.csv", tmp_path / "out", max_steps=1, workers=1, ray="local")
    assert str(caught.value) == (f"training on Ray failed: {tmp_path / 'missing.csv'}: not found (DATA is a CSV manifest or a "
                                 "folder of saved annotations)")
    assert not (tmp_path / "out").exists()


def record_loss(path: Path, step: int, loss: float) -> None:
    """An ``on_step`` that a Ray Train worker can run: the losses, one a line, in a file the test reads."""
    with open(path, "a") as handle:
        handle.write(f"{loss!r}\n")


def test_ray_finetune_workers_take_the_steps_of_one_process_with_the_same_global_batch(cluster, tmp_path: Path) -> None:
    """Classification has no per-sample randomness: 2 Ray Train workers x 2 images take 1 process x 4's steps. Measured
    (2026-12-04): the 4 losses within 1.4e-7 (relative) of one process's, as with 2 local processes (bound 1e-5)."""
    from test_finetune import write_labelled_pictures

    from medfm.train.finetune import finetune

    pictures = write_labelled_pictures(tmp_path)
    options = {"method": "lora", "rank": 2, "label_column": "kind", "batch_size": 4, "max_steps": 4, "checkpoint_seconds": 1e9}
    one: list[float] = []
    alone = finetune("medfm-clip-small", pictures, tmp_path / "one.safetensors", on_step=lambda _, loss: one.append(loss),
                     **options)
    two = finetune("medfm-clip-small", pictures, tmp_path / "two.safetensors", workers=2, ray="local",
                   on_step=partial(record_loss, tmp_path / "losses.txt"), **options)
    losses = [float(line) for line in (tmp_path / "losses.txt").read_text().split()]  # rank 0's alone
    assert (alone["processes"], two["processes"], two["steps"], len(losses)) == (1, 2, 4, 4)
    assert len(set(np.round(one, 6))) > 1  # the steps changed the model
    np.testing.assert_allclose(losses, one, rtol=1e-5)
    assert two["validation_best"] == alone["validation_best"] and (tmp_path / "two.safetensors").is_file()


@pytest.fixture
def ray_train_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, int]]:
    """``train_on_ray`` as one process in another folder (a Ray Train worker's, without Ray's half minute of start-up):
    the training function the command hands it must be whole, with absolute paths. Returns its calls."""
    calls: list[tuple[str, int]] = []
    elsewhere = tmp_path / "worker-folder"
    elsewhere.mkdir()

    def train_on_ray(address: str, workers: int, train):
        calls.append((address, workers))
        monkeypatch.chdir(elsewhere)
        return train()

    monkeypatch.setattr("medfm.scale.ray_train.train_on_ray", train_on_ray)
    monkeypatch.chdir(tmp_path)
    return calls


def test_pretrain_hands_ray_train_the_whole_run_with_absolute_paths(ray_train_here, tmp_path: Path) -> None:
    from test_pretrain_ddp import images

    from medfm.train.pretrain import pretrain
    from medfm.train.pretrain_data import pretraining_inputs

    class Interrupted(Exception):
        pass

    def interrupt_at_step_2(step: int, loss: float) -> None:
        if step == 2:
            raise Interrupted

    images(tmp_path / "data")
    settings = {"method": "mae", "arch": "vit-tiny", "batch_size": 4, "max_steps": 3, "checkpoint_seconds": 0}
    with pytest.raises(Interrupted):  # started here with relative paths, one process: checkpointed at step 1
        pretrain(pretraining_inputs("data"), "encoder", **settings, on_step=interrupt_at_step_2)
    summary = pretrain(pretraining_inputs("data"), "encoder", **settings, resume=True, workers=2, ray="local")
    assert ray_train_here == [("local", 2)] and summary["steps"] == 3 and summary["resumed_at_steps"] == [1]
    assert (tmp_path / "encoder" / "encoder.safetensors").is_file() and not (tmp_path / "worker-folder" / "encoder").exists()


@pytest.mark.usefixtures("random_text_tower")
def test_train_clip_hands_ray_train_the_whole_run_with_absolute_paths(ray_train_here, tmp_path: Path) -> None:
    from clipdata import write_cache

    from medfm.train.clip import train_clip

    write_cache(tmp_path / "cache.pt")
    weights = train_clip(Path("."), Path("run"), epochs=1, batch_size=8, cache=Path("cache.pt"), workers=2, ray="local")
    assert ray_train_here == [("local", 2)] and weights == tmp_path / "run" / "medfm-clip-small.safetensors"
    assert weights.is_file() and (tmp_path / "run" / "history.jsonl").is_file()


def test_ray_robustness_gives_the_metrics_of_a_plain_run(cluster, tmp_path: Path) -> None:
    rows = ["image,mask"]
    for n in range(4):
        yy, xx = np.mgrid[:40, :48]
        mask = (yy - 18 - n) ** 2 + (xx - 22 - n) ** 2 <= (8 + n) ** 2
        medfm.save(medfm.Image(np.where(mask, 200, 40).astype(np.uint8).T), tmp_path / f"img{n}.png")
        medfm.save(medfm.Image((mask * 255).astype(np.uint8).T), tmp_path / f"mask{n}.png")
        rows.append(f"img{n}.png,mask{n}.png")
    (tmp_path / "seg.csv").write_text("\n".join(rows) + "\n")
    options = {"corruptions": ("gaussian_noise", "contrast"), "severities": (1, 5), "seed": 3}
    plain = segmenter_robustness(tmp_path / "seg.csv", ThresholdSegmenter(threshold=170), **options).as_dict()
    runner = open_runner("local", 2, BoxPrompted(ThresholdSegmenter()), partial(BoxPrompted, ThresholdSegmenter(threshold=170)))
    try:
        distributed = segmenter_robustness(tmp_path / "seg.csv", ThresholdSegmenter(threshold=170), runner=runner, **options).as_dict()
    finally:
        runner.close()
    assert distributed == plain
    assert plain["n_cases"] == 4 and plain["corruptions"]["gaussian_noise"]["mean"][1] < plain["clean"]["mean"]


@pytest.mark.parametrize("command", [
    ["ingest", "{folder}", "--catalog", "{tmp}/c.db"],
    ["index", "build", "--index", "{tmp}/index", "{folder}", "--model", "fake-clip"],
    ["classify", "{folder}", "--labels", "a,b", "--model", "fake-clip"],
    ["segment", "--auto", "--model", "{auto_model}", "{folder}", "-o", "{tmp}/out"],
    ["evaluate", "robustness", "{tmp}/seg.csv", "--segmenter", "fake-threshold"],
    ["train", "seg", "{tmp}/seg.csv", "-o", "{tmp}/out"],
    ["finetune", "medfm-clip-small", "--data", "{tmp}/seg.csv", "-o", "{tmp}/out"],
    ["pretrain", "{folder}", "-o", "{tmp}/out", "--method", "mae", "--arch", "vit-tiny"],
    ["train", "clip", "--data", "{folder}", "--out", "{tmp}/out"],
])
@pytest.mark.usefixtures("fake_models", "fake_segmenter")
def test_every_ray_command_refuses_an_unreachable_cluster_in_one_line(command: list[str], auto_model, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "images"
    images(folder, 1)
    medfm.save(medfm.Image(np.full((16, 16), 200, np.uint8)), tmp_path / "mask.png")
    (tmp_path / "seg.csv").write_text(f"image,mask\n{folder / 'image00.png'},{tmp_path / 'mask.png'}\n")
    args = [part.format(folder=folder, tmp=tmp_path, auto_model=auto_model[0]) for part in command]
    args += ["--ray", "127.0.0.1:1", "--workers", "1"]
    code, _, stderr = run_cli(args, capsys)
    assert (code, stderr.strip()) == (2, "medfm: error: cannot reach the Ray cluster at 127.0.0.1:1: Connection refused")
    assert not (tmp_path / "out").exists() and not (tmp_path / "index").exists()


def test_segment_takes_ray_only_with_auto(tmp_path: Path, capsys) -> None:
    (image,) = images(tmp_path / "images", 1)
    code, _, stderr = run_cli(["segment", str(image), "-o", str(tmp_path / "out.png"), "--box", "1,1,5,5", "--ray", "local"], capsys)
    assert (code, stderr.strip()) == (2, "medfm: error: --ray runs segment --auto on a Ray cluster; give --auto too")
    assert not (tmp_path / "out.png").exists()
