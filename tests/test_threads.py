"""The thread count: one documented default, MEDFM_THREADS, --threads and medfm.set_threads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import run_cli

from medfm import threads
from medfm.errors import MedfmError

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, **env: str) -> str:
    """``code`` in a fresh interpreter (torch's thread pools are per process); its stdout."""
    environment = {k: v for k, v in os.environ.items() if k not in ("MEDFM_THREADS", *threads.THREAD_ENV_VARS)}
    environment.update(env, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def clean_env(monkeypatch):
    for variable in ("MEDFM_THREADS", *threads.THREAD_ENV_VARS):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (64, threads.MAX_DEFAULT_THREADS)])
def test_default_is_half_the_available_cpus(clean_env, monkeypatch, cpus, expected):
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    assert threads.default_threads() == expected


def test_medfm_threads_then_omp_num_threads_override_the_default(clean_env, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("MEDFM_THREADS", "5")
    assert threads.default_threads() == 5


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_medfm_threads_is_refused_by_name(clean_env, monkeypatch, value):
    monkeypatch.setenv("MEDFM_THREADS", value)
    with pytest.raises(MedfmError, match=f"MEDFM_THREADS must be .*{value!r}"):
        threads.default_threads()


def test_a_container_cpu_quota_caps_the_available_cpus(monkeypatch, tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", cpu_max)
    assert threads.available_cpus() == 1
    cpu_max.write_text("max 100000\n")
    assert threads.available_cpus() == len(os.sched_getaffinity(0))


def test_set_threads_reaches_torch_and_the_environment_of_child_processes():
    out = run_python("import os, torch, medfm; n = medfm.set_threads(3); "
                     "print(n, torch.get_num_threads(), os.environ['OMP_NUM_THREADS'], os.environ['OPENBLAS_NUM_THREADS'])")
    assert out.split() == ["3", "3", "3", "3"]


def test_set_threads_before_torch_is_imported_reaches_torch_when_a_model_is_created():
    out = run_python("import medfm; medfm.set_threads(3); import torch; torch.set_num_threads(1); "
                     "from medfm.models.registry import create_segmenter; create_segmenter('medfm-interactive'); "
                     "print(torch.get_num_threads())")
    assert out == "3"


def test_creating_a_model_applies_the_default_without_being_asked():
    out = run_python("import torch; torch.set_num_threads(1); from medfm.models.registry import create_segmenter; "
                     "create_segmenter('medfm-interactive'); print(torch.get_num_threads())", MEDFM_THREADS="2")
    assert out == "2"


def test_the_threads_option_is_validated(capsys):
    code, _, err = run_cli(["--threads", "0", "info", "x.png"], capsys)
    assert code == 2 and "--threads" in err


def test_a_bad_medfm_threads_is_one_line_on_the_command_line(clean_env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MEDFM_THREADS", "many")
    code, _, err = run_cli(["info", str(tmp_path / "x.png")], capsys)
    assert code == 2
    assert err.strip().splitlines() == ["medfm: error: MEDFM_THREADS must be a whole number of threads, 1 or more; got 'many'"]


def test_the_threads_option_sets_the_count_for_the_command(clean_env, monkeypatch, capsys, tmp_path):
    chosen = []
    monkeypatch.setattr("medfm.cli.set_threads", chosen.append)
    run_cli(["--threads", "3", "info", str(tmp_path / "x.png")], capsys)
    run_cli(["info", str(tmp_path / "x.png")], capsys)
    assert chosen == [3, None]
