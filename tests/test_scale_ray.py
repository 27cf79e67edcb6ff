"""Ray runners: the same index as a local build, a killed worker retried, mismatched or broken
workers refused in one line. One local Ray cluster (head + 2 worker CPUs on 127.0.0.1) serves the module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from fakeencoder import FakeEncoder
from medfm.errors import MedfmError
from medfm.index import open_index
from medfm.scale import LocalRunner, ray_runner
from medfm.scale.runners import weights_sha256
from medfm.tasks.search import build_index

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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == [
        "MedfmError cannot reach the Ray cluster at 127.0.0.1:1: Connection refused",
        "MedfmError --ray takes local, HOST:PORT or ray://HOST:PORT; got 'nonsense'",
    ]
