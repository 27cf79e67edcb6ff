"""Header scanning in worker processes gives exactly what a scan in this process gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
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


def test_a_forked_scan_worker_imports_no_module(tmp_path: Path) -> None:
    """A server thread may be importing a module as the scan pool forks; a worker importing that module would then
    wait forever for the import lock it inherited held (seen: an orphaned worker hung in ``import mosaic``). So the
    workers must find everything they use already imported. A fresh interpreter, so no earlier test imported it."""
    probe = textwrap.dedent("""
        import json, os, sys
        from pathlib import Path
        import medfm.io.dicom.scan as scan
        from medfm.io.dicom import scan_dicom
        from medfm.io.synthetic import phantom, write_dicom_series
        folder = Path(sys.argv[1])
        files = write_dicom_series(phantom((8, 8, 6)), folder / "ct")
        scan.PARALLEL_SCAN_FILES, scan.SCAN_CHUNK_FILES, scan.usable_cpus = 2, 2, lambda: 2
        scan_in_this_process = scan.scan_files
        def scan_recording_imports(paths, checksums):
            before = set(sys.modules)
            result = scan_in_this_process(paths, checksums)
            (folder / f"imports-{os.getpid()}.json").write_text(json.dumps(sorted(set(sys.modules) - before)))
            return result
        scan.scan_files = scan_recording_imports
        series, bad = scan_dicom(files)
        assert len(series) == 1 and len(series[0].files) == 6 and not bad
        print(os.getpid())
    """)
    parent = int(subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                                check=True, timeout=120).stdout)
    workers = {int(path.stem.split("-")[1]): json.loads(path.read_text()) for path in tmp_path.glob("imports-*.json")}
    workers.pop(parent, None)
    assert workers, "no scan ran in a worker process"
    assert all(imported == [] for imported in workers.values()), workers
