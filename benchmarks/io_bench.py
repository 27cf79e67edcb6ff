"""DICOM series loading speed: medfm against SimpleITK and a plain pydicom loop, plus catalog ingest.

Run ``python benchmarks/io_bench.py [--slices 300] [--size 512] [--repeats 3]``; prints one
JSON object. The series is synthetic (``medfm.io.synthetic``), written to a temporary folder;
times are the best of ``--repeats`` runs, after one warm-up run each so that every reader
sees the files in the page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def best_time(function, repeats: int) -> tuple[float, object]:
    result = function()  # warm-up: page cache, imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def load_medfm(folder: Path) -> np.ndarray:
    import medfm.io

    return medfm.io.load(folder).array


def load_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def load_pydicom(folder: Path) -> np.ndarray:
    import pydicom

    datasets = [pydicom.dcmread(path) for path in folder.iterdir()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return np.stack([ds.pixel_array for ds in datasets])


def ingest_rate(folder: Path, files: int) -> dict:
    from medfm.catalog import ingest

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = ingest([folder], catalog=f"sqlite:///{tmp}/c.db", progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 4), "files": files, "files_per_s": round(files / seconds, 1), "added": report.added}


def main() -> None:
    from medfm.io.synthetic import phantom, write_dicom_series

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        start = time.perf_counter()
        volume = phantom((args.size, args.size, args.slices))
        write_dicom_series(volume, folder, spacing=(0.7, 0.7, 1.0), rescale=(1.0, -1024.0))
        generate = time.perf_counter() - start
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        medfm_s, ours = best_time(lambda: load_medfm(folder), args.repeats)
        sitk_s, theirs = best_time(lambda: load_sitk(folder), args.repeats)
        pydicom_s, _ = best_time(lambda: load_pydicom(folder), args.repeats)
        # SimpleITK gives (K, J, I) with rows as stored; medfm (I, J, K) with rows flipped.
        same = bool(np.array_equal(ours[..., 0, 0][:, ::-1].transpose(2, 1, 0), theirs))
        result = {
            "series": {"slices": args.slices, "rows": args.size, "columns": args.size, "megabytes": round(size_mb, 1),
                       "generate_s": round(generate, 2)},
            "load_s": {"medfm": round(medfm_s, 4), "simpleitk": round(sitk_s, 4), "pydicom_loop": round(pydicom_s, 4)},
            "ratio_sitk_over_medfm": round(sitk_s / medfm_s, 2),
            "ratio_pydicom_over_medfm": round(pydicom_s / medfm_s, 2),
            "medfm_equals_simpleitk": same,
            "catalog_ingest": ingest_rate(folder, args.slices),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
