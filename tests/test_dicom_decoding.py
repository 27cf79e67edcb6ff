"""Compressed series decoded in worker processes give exactly what decoding in this process gives."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medfm.io
from medfm.errors import UnreadableFileError
from medfm.io.dicom import decoding
from medfm.io.synthetic import phantom, write_dicom_series

VOLUME = phantom((24, 20, 9))


def _shared(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a shared mapping (the worker processes' output buffer)."""
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return isinstance(base.obj if isinstance(base, memoryview) else base, mmap.mmap)


def _load(folder: Path, in_processes: bool, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    monkeypatch.setattr(decoding, "PARALLEL_DECODE_FILES", 2 if in_processes else 10**9)
    monkeypatch.setattr(decoding, "PARALLEL_DECODE_BYTES", 0)  # this test's small volume too
    monkeypatch.setattr(decoding, "usable_cpus", lambda: 2)  # workers even where one CPU is allowed
    return medfm.io.load(folder).array


def test_series_decoded_in_processes_equals_decoding_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless, rescale=(1.0, -1024.0), bits_stored=12)
    here = _load(tmp_path, False, monkeypatch)
    elsewhere = _load(tmp_path, True, monkeypatch)
    assert not _shared(here) and _shared(elsewhere)
    assert elsewhere.dtype == here.dtype and np.array_equal(elsewhere, here)
    assert np.array_equal(elsewhere[..., 0, 0], VOLUME[:, ::-1])


def test_damaged_file_decoded_in_a_worker_is_named_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless)  # in slice order
    damaged = files[5]  # not the first slice, which is decoded before the workers start
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) - 200])
    messages = []
    for in_processes in (False, True):
        with pytest.raises(UnreadableFileError) as caught:
            _load(tmp_path, in_processes, monkeypatch)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert damaged.name in messages[1] and "\n" not in messages[1]


def test_killed_decoding_worker_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from medfm.io.dicom import pixels

    write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless)
    parent, real = os.getpid(), pixels.decode

    def dies_in_a_worker(*args: object) -> np.ndarray:
        if os.getpid() != parent:
            os._exit(9)  # as the kernel's OOM killer would end it
        return real(*args)

    monkeypatch.setattr(pixels, "decode", dies_in_a_worker)
    with pytest.raises(UnreadableFileError) as caught:
        _load(tmp_path, True, monkeypatch)
    assert caught.value.reason == "a pixel-decoding worker process died; load the series again"
