"""Compressed series decoded by worker processes: one or several give the same volume, and a
file whose decoder fails, dies or never returns is named in one line."""

from __future__ import annotations

import mmap
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medfm.io
import medfm.io.dicom
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


def _load(folder: Path, parallel: bool, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    monkeypatch.setattr(decoding, "PARALLEL_DECODE_FILES", 2 if parallel else 10**9)
    monkeypatch.setattr(decoding, "PARALLEL_DECODE_BYTES", 0)  # this test's small volume too
    monkeypatch.setattr(decoding, "usable_cpus", lambda: 2)  # workers even where one CPU is allowed
    return medfm.io.load(folder).array


def test_series_decoded_by_several_workers_equals_one_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless, rescale=(1.0, -1024.0), bits_stored=12)
    one = _load(tmp_path, False, monkeypatch)
    several = _load(tmp_path, True, monkeypatch)
    assert _shared(one) and _shared(several)
    assert several.dtype == one.dtype and np.array_equal(several, one)
    assert np.array_equal(several[..., 0, 0], VOLUME[:, ::-1])


def test_rle_is_decoded_in_a_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.RLELossless)
    array = _load(tmp_path, True, monkeypatch)
    assert _shared(array) and np.array_equal(array[..., 0, 0], VOLUME[:, ::-1])


def test_a_decoder_panic_prints_nothing_but_the_one_line_error(capfd: pytest.CaptureFixture[str]) -> None:
    """pylibjpeg-rle's Rust panics on this damaged segment, and Rust prints the panic (and, with
    RUST_BACKTRACE set, a backtrace) straight to file descriptor 2, around medfm's one-line error."""
    reproducer = Path(__file__).parent / "fuzz_corpus" / "crash-a2ee74b2165f.dcm"
    with pytest.raises(UnreadableFileError, match="cannot decode RLE Lossless pixel data") as caught:
        medfm.io.load(reproducer)
    assert "\n" not in str(caught.value)
    assert "panicked" not in capfd.readouterr().err


def test_damaged_file_decoded_in_a_worker_is_named_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless)  # in slice order
    damaged = files[5]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) - 200])
    messages = []
    for parallel in (False, True):
        with pytest.raises(UnreadableFileError) as caught:
            _load(tmp_path, parallel, monkeypatch)
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


@pytest.mark.parametrize("parallel", [False, True], ids=["one worker", "several workers"])
def test_a_decode_that_never_returns_is_killed_at_its_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel: bool) -> None:
    import time

    from medfm.io.dicom import pixels

    files = write_dicom_series(VOLUME, tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless)
    stuck, real = files[3], pixels.decode

    def loops_on_one_file(path: Path, *args: object) -> np.ndarray:
        if path == stuck:
            while True:  # as libjpeg does on some damaged JPEG-LS codestreams: no signal stops it
                pass
        return real(path, *args)

    monkeypatch.setattr(pixels, "decode", loops_on_one_file)
    monkeypatch.setattr(decoding, "DECODE_FLOOR_S", 0.5)
    children = _child_pids()  # processes other tests in this worker left running (a multiprocessing helper)
    started = time.monotonic()
    with pytest.raises(UnreadableFileError) as caught:
        _load(tmp_path, parallel, monkeypatch)
    assert time.monotonic() - started < 30
    assert str(caught.value) == f"{stuck}: JPEG-LS Lossless Image Compression pixel data could not be decoded within 1 s"
    assert _child_pids() <= children  # every worker was killed and reaped: a zombie would still be listed


def _child_pids() -> set[int]:
    """This process's children, living or not yet reaped, from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while being listed
            continue
        if int(fields[1]) == os.getpid():
            children.add(int(stat.parent.name))
    return children


def test_the_time_limit_grows_with_the_decoded_size(tmp_path: Path) -> None:
    (path,) = write_dicom_series(VOLUME[:, :, :1], tmp_path, transfer_syntax=pydicom.uid.JPEGLSLossless)
    (frame,) = medfm.io.dicom.scan_dicom([path])[0][0].frames
    big = replace(frame, layout=replace(frame.layout, rows=4096, columns=4096, number_of_frames=8))
    assert decoding.decode_seconds([(frame, None)]) == pytest.approx(decoding.DECODE_FLOOR_S, abs=0.01)
    assert decoding.decode_seconds([(big, None)]) == pytest.approx(decoding.DECODE_FLOOR_S + 256 * decoding.DECODE_S_PER_MIB)


def test_libjpeg_stuck_in_a_damaged_codestream_is_killed_at_the_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz campaign's JPEG-LS reproducer with the codestream size check switched off: the
    decoder's C loop (no signal interrupts it) runs in a worker, which is killed."""
    from medfm.io.dicom import pixels

    path = Path(__file__).parent / "fuzz_corpus" / "hang-01d5d70a7b24.dcm"
    monkeypatch.setattr(pixels, "_check_codestreams", lambda *args: None)
    monkeypatch.setattr(decoding, "DECODE_FLOOR_S", 0.5)
    with pytest.raises(UnreadableFileError) as caught:
        medfm.io.load(path)
    assert caught.value.reason == "JPEG-LS Lossy (Near-Lossless) Image Compression pixel data could not be decoded within 1 s"
