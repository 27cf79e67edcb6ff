"""Fuzzing the readers: a damaged file gives an Image or a MedfmError, never a crash or a hang.

Small valid files of each format are mutated (bit flips, cuts, insertions, overwrites,
header fields set to extreme values). The run is bounded for CI: derandomised, a fixed
number of examples per format; ``MEDFM_FUZZ_EXAMPLES=2000`` explores further.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medfm
from medfm.errors import MedfmError
from medfm.io.fuzzing import EXTREMES, HEADER_BYTES, MAX_POSITION, PYDICOM_SEEDS, mutate, seed_files, suffix_of

EXAMPLES = int(os.environ.get("MEDFM_FUZZ_EXAMPLES", "350"))  # per seed: 19 seeds, ~6,650 reads (the suite's time budget)
#: A single read longer than this counts as a hang.
HANG_SECONDS = 10
SEED_NAMES = ("seed.png", "seed.jpg", "seed.bmp", "seed.tiff", "seed.nii", "seed.nii.gz", "seed.nrrd", "seed.mha",
              "seed.npz", "seed.mp4", "seed.gif", "seed.dcm", *PYDICOM_SEEDS)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return seed_files(tmp_path_factory.mktemp("seeds"))


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, MAX_POSITION), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.integers(0, MAX_POSITION), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, MAX_POSITION), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("field"), st.integers(0, HEADER_BYTES - 1), st.sampled_from(EXTREMES), st.sampled_from([1, 2, 4]), st.sampled_from(["little", "big"])),
)


def _hang(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise TimeoutError(f"read took over {HANG_SECONDS} s")


@pytest.mark.parametrize("name", SEED_NAMES)
@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=HANG_SECONDS),
    derandomize="MEDFM_FUZZ_EXAMPLES" not in os.environ,  # CI reruns the same cases
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_damaged_file_gives_image_or_medfm_error(seeds: dict[str, bytes], tmp_path: Path, name: str, mutations: list[tuple]) -> None:
    path = tmp_path / f"fuzzed{suffix_of(name)}"
    path.write_bytes(mutate(seeds[name], mutations))
    previous = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(HANG_SECONDS)
    try:
        image = medfm.load(path)
    except MedfmError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
    else:
        assert isinstance(image, medfm.Image)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_seed_names_cover_every_seed(seeds: dict[str, bytes]) -> None:
    assert set(SEED_NAMES) == set(seeds)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_files_read(seeds: dict[str, bytes], tmp_path: Path, name: str) -> None:
    """The fuzz starts from files that read, so mutations, not the seeds, are under test."""
    path = tmp_path / name
    path.write_bytes(seeds[name])
    assert medfm.load(path).array.size > 0
