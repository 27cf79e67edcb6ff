"""Header scanning in worker processes gives exactly what a scan in this process gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import medfm.io.dicom.scan as scan_module
from medfm.io.dicom import read_series, scan_dicom
from medfm.io.synthetic import phantom, write_dicom_series


def _summary(series_list):
    return [(s.series_uid, s.files, s.duplicates, s.shape, s.metadata, s.phi, s.problem,
             [(f.path, f.index, f.position, f.rescale, f.layout) for f in s.frames]) for s in series_list]


def test_parallel_scan_equals_the_scan_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_series(phantom((16, 12, 6)), tmp_path / "a", series_number=1, rescale=(1.0, -1024.0), bits_stored=12)
    written = write_dicom_series(phantom((8, 8, 3), seed=2), tmp_path / "b", modality="MR", series_number=2, seed=2)
    shutil.copy(written[1], tmp_path / "b" / "copy.dcm")
    (tmp_path / "b" / "notes.dcm").write_bytes(b"not DICOM at all" * 20)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    monkeypatch.setattr(scan_module, "PARALLEL_SCAN_FILES", 10**9)
    alone, alone_bad = scan_dicom(files)
    monkeypatch.setattr(scan_module, "PARALLEL_SCAN_FILES", 2)
    monkeypatch.setattr(scan_module, "SCAN_CHUNK_FILES", 3)  # several chunks, a series split across them
    parallel, parallel_bad = scan_dicom(files)
    assert _summary(parallel) == _summary(alone) and parallel_bad == alone_bad
    assert {s.metadata["series_number"]: len(s.duplicates) for s in parallel} == {1: 0, 2: 1} and len(parallel_bad) == 1
    assert np.array_equal(read_series(parallel[0])[0].array, read_series(alone[0])[0].array)
