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

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import medfm
from medfm.errors import MedfmError
from medfm.io.synthetic import phantom, write_dicom_series

EXAMPLES = int(os.environ.get("MEDFM_FUZZ_EXAMPLES", "800"))
#: A single read longer than this counts as a hang.
HANG_SECONDS = 10


def seed_files(folder: Path) -> dict[str, bytes]:
    """Small valid files by suffix, made by medfm's writers (and PyAV/pydicom through them)."""
    rng = np.random.default_rng(0)
    volume = phantom((12, 10, 4))
    grey = rng.integers(0, 256, (16, 12), dtype=np.uint8)
    clip = medfm.Image(rng.integers(0, 256, (16, 12, 1, 3, 1), dtype=np.uint8), metadata={"fps": 5.0})
    images = {
        ".png": medfm.Image(grey),
        ".jpg": medfm.Image(grey),
        ".bmp": medfm.Image(grey),
        ".tiff": medfm.Image(volume),
        ".nii": medfm.Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])),
        ".nii.gz": medfm.Image(volume),
        ".nrrd": medfm.Image(volume),
        ".mha": medfm.Image(volume),
        ".npz": medfm.Image(volume),
        ".mp4": clip,
        ".gif": clip,
    }
    seeds = {suffix: medfm.save(image, folder / f"seed{suffix}").read_bytes() for suffix, image in images.items()}
    seeds[".dcm"] = write_dicom_series(volume[:, :, :1], folder / "dicom")[0].read_bytes()
    return seeds


SUFFIXES = (".png", ".jpg", ".bmp", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha", ".npz", ".mp4", ".gif", ".dcm")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return seed_files(tmp_path_factory.mktemp("seeds"))


EXTREMES = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("overwrite"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    # Header fields: dimensions, offsets, counts and lengths mostly live in the first bytes.
    st.tuples(st.just("field"), st.integers(0, 511), st.sampled_from(EXTREMES), st.sampled_from([1, 2, 4]), st.sampled_from(["little", "big"])),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    buffer = bytearray(data)
    for kind, *args in mutations:
        size = max(len(buffer), 1)
        if kind == "flip":
            position, bit = args
            if buffer:
                buffer[position % size] ^= 1 << bit
        elif kind == "truncate":
            del buffer[int(len(buffer) * args[0]) :]
        elif kind == "insert":
            position, chunk = args
            buffer[position % size : position % size] = chunk
        elif kind == "overwrite":
            position, chunk = args
            start = position % size
            buffer[start : start + len(chunk)] = chunk
        else:
            position, value, width, order = args
            start = position % size
            buffer[start : start + width] = (value % (1 << (8 * width))).to_bytes(width, order)
    return bytes(buffer)


def _hang(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise TimeoutError(f"read took over {HANG_SECONDS} s")


@pytest.mark.parametrize("suffix", SUFFIXES)
@settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=HANG_SECONDS),
    derandomize="MEDFM_FUZZ_EXAMPLES" not in os.environ,  # CI reruns the same cases
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_damaged_file_gives_image_or_medfm_error(seeds: dict[str, bytes], tmp_path: Path, suffix: str, mutations: list[tuple]) -> None:
    path = tmp_path / f"fuzzed{suffix}"
    path.write_bytes(mutate(seeds[suffix], mutations))
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


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_seed_files_read(seeds: dict[str, bytes], tmp_path: Path, suffix: str) -> None:
    """The fuzz starts from files that read, so mutations, not the seeds, are under test."""
    path = tmp_path / f"seed{suffix}"
    path.write_bytes(seeds[suffix])
    assert medfm.load(path).array.size > 0
