"""DICOM loading and catalog ingest speed: medfm against SimpleITK and plain pydicom loops.

Run ``python benchmarks/io_bench.py [--slices 300] [--size 512] [--repeats 3]
[--compressed-slices 60] [--ingest-files 20000]``; prints one JSON object.

* **load**: a synthetic CT series (``medfm.io.synthetic``; Bits Stored 12 as most CT
  scanners write, rescale intercept -1024) read by ``medfm.load``, SimpleITK's
  ImageSeriesReader and a plain pydicom loop (``dcmread`` + ``pixel_array``, sorted by
  position, stacked); uncompressed, then JPEG-LS, JPEG 2000 and RLE (lossless). Times are
  the best of ``--repeats`` runs after a warm-up run, so every reader sees the files in the
  page cache. ``peak_memory_ratio`` is the peak of memory allocated while medfm loads
  (``tracemalloc``: Python objects and numpy buffers, plus the shared volume that worker
  processes decode into) over the volume's size. Compressed series are also loaded with
  their decoding in one worker process (``medfm_one_worker``); ``worst_stall_ms`` is the longest a thread of the loading process waited
  for the GIL, measured by a thread that wakes every 5 ms (what a server's other requests see).
* **ingest**: ``--ingest-files`` small DICOM files (64x64, series of 100) and the
  uncompressed series, ingested into a new SQLite catalog, against a plain
  ``pydicom.dcmread(..., stop_before_pixels=True)`` loop over the same files; then ingested
  again unchanged (``reingest_speedup``: first time over second). On a shared machine the
  wall-clock ratio follows the CPU others leave; ``cpu_ratio_over_pydicom_header_loop``
  (the loop's CPU seconds over the ingest's, all its processes) compares the work done.

Ratios above 1 mean medfm is faster; every ratio compares runs of the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: Transfer syntaxes of the compressed runs: (name, UID).
COMPRESSED = (("jpeg_ls", "1.2.840.10008.1.2.4.80"), ("jpeg_2000", "1.2.840.10008.1.2.4.90"), ("rle", "1.2.840.10008.1.2.5"))
#: Slices per series of the small-file ingest folder.
SMALL_SERIES_SLICES = 100


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


def load_medfm_one_worker(folder: Path) -> np.ndarray:
    """medfm with compressed files decoded by one worker process (no parallel decoding)."""
    from medfm.io.dicom import decoding

    kept, decoding.PARALLEL_DECODE_FILES = decoding.PARALLEL_DECODE_FILES, 2**62
    try:
        return load_medfm(folder)
    finally:
        decoding.PARALLEL_DECODE_FILES = kept


def shared_bytes(array: np.ndarray) -> int:
    """Size of the shared mapping under ``array`` (worker processes' output volume), else 0."""
    import mmap

    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    return len(base) if isinstance(base, mmap.mmap) else 0


def peak_memory_ratio(folder: Path) -> float:
    """Peak bytes allocated while medfm loads ``folder`` (tracemalloc, plus a shared volume), over the volume's bytes."""
    tracemalloc.start()
    try:
        array = load_medfm(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return round((peak + shared_bytes(array)) / array.nbytes, 3)


def worst_stall_ms(function) -> float:
    """The longest a 5 ms ticker thread overslept while ``function`` ran: how long the GIL was held."""
    import threading

    stalls, done = [0.0], threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            stalls[0] = max(stalls[0], now - last - 0.005)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        function()
    finally:
        done.set()
        ticker.join()
    return round(stalls[0] * 1000, 1)


def compare_loaders(folder: Path, repeats: int, compressed: bool = False) -> dict:
    medfm_s, ours = best_time(lambda: load_medfm(folder), repeats)
    sitk_s, theirs = best_time(lambda: load_sitk(folder), repeats)
    pydicom_s, _ = best_time(lambda: load_pydicom(folder), repeats)
    # SimpleITK gives (K, J, I) with rows as stored; medfm (I, J, K) with rows flipped.
    same = bool(np.array_equal(ours[..., 0, 0][:, ::-1].transpose(2, 1, 0), theirs))
    result = {
        "megabytes": round(sum(p.stat().st_size for p in folder.iterdir()) / 1e6, 1),
        "load_s": {"medfm": round(medfm_s, 4), "simpleitk": round(sitk_s, 4), "pydicom_loop": round(pydicom_s, 4)},
        "ratio_sitk_over_medfm": round(sitk_s / medfm_s, 2),
        "ratio_pydicom_over_medfm": round(pydicom_s / medfm_s, 2),
        "medfm_dtype": str(ours.dtype),
        "medfm_equals_simpleitk": same,
        "peak_memory_ratio": peak_memory_ratio(folder),
    }
    if compressed:
        one_worker_s, one = best_time(lambda: load_medfm_one_worker(folder), repeats)
        result["load_s"]["medfm_one_worker"] = round(one_worker_s, 4)
        result["ratio_one_worker_over_medfm"] = round(one_worker_s / medfm_s, 2)
        result["medfm_equals_one_worker"] = bool(np.array_equal(ours, one))
        result["worst_stall_ms"] = {"medfm": worst_stall_ms(lambda: load_medfm(folder)),
                                    "medfm_one_worker": worst_stall_ms(lambda: load_medfm_one_worker(folder))}
    return result


def _write_series(folder: Path, slices: int, size: int, transfer_syntax: str | None = None, seed: int = 0) -> None:
    from medfm.io.synthetic import phantom, write_dicom_series

    write_dicom_series(phantom((size, size, slices)), folder, spacing=(0.7, 0.7, 1.0), rescale=(1.0, -1024.0),
                       bits_stored=12, transfer_syntax=transfer_syntax, series_number=seed + 1, seed=seed)


def write_small_files(folder: Path, files: int) -> list[Path]:
    """``files`` 64x64 DICOM files, series of :data:`SMALL_SERIES_SLICES`, written by all cores."""
    count = -(-files // SMALL_SERIES_SLICES)
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(_write_series, [folder / f"series{n:04d}" for n in range(count)],
                      [SMALL_SERIES_SLICES] * count, [64] * count, [None] * count, range(count)))
    return sorted(folder.rglob("*.dcm"))


def pydicom_header_loop(paths: list[Path]) -> None:
    import pydicom

    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the ingest's worker processes)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ingest_rates(folder: Path) -> dict:
    """Files per second of a first and an unchanged second ingest, and of a plain header loop;
    with the CPU seconds each took (the machine is shared: CPU time shows the work done)."""
    from medfm.catalog import ingest
    from medfm.io.formats import sha256_of
    from medfm.progress import progress_bar

    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    pydicom_header_loop(paths)  # page cache
    progress_bar(False)  # imports (Rich), once per process, as the loaders' warm-up run does
    start, cpu = time.perf_counter(), cpu_seconds()
    pydicom_header_loop(paths)
    loop_s, loop_cpu = time.perf_counter() - start, cpu_seconds() - cpu
    start, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:  # what the catalog's file hashes cost on their own
        sha256_of(path)
    hash_cpu = cpu_seconds() - cpu
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/c.db"
        start, cpu = time.perf_counter(), cpu_seconds()
        first = ingest([folder], catalog=url, progress=False)
        first_s, first_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        start = time.perf_counter()
        again = ingest([folder], catalog=url, progress=False)
        again_s = time.perf_counter() - start
    return {
        "files": len(paths), "series_added": first.added, "bad": len(first.bad), "unchanged_on_reingest": again.unchanged,
        "ingest_s": round(first_s, 3), "files_per_s": round(len(paths) / first_s, 1), "ingest_cpu_s": round(first_cpu, 3),
        "sha256_cpu_s": round(hash_cpu, 3),
        "pydicom_header_loop_s": round(loop_s, 3), "pydicom_header_loop_files_per_s": round(len(paths) / loop_s, 1),
        "pydicom_header_loop_cpu_s": round(loop_cpu, 3),
        "ratio_over_pydicom_header_loop": round(loop_s / first_s, 2),
        "cpu_ratio_over_pydicom_header_loop": round(loop_cpu / first_cpu, 2),
        "reingest_s": round(again_s, 3), "reingest_speedup": round(first_s / again_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compressed-slices", type=int, default=60, help="slices of each compressed series (0: none)")
    parser.add_argument("--ingest-files", type=int, default=20000, help="small files for the ingest rate (0: none)")
    args = parser.parse_args()
    result: dict = {"series": {"slices": args.slices, "rows": args.size, "columns": args.size, "bits_stored": 12}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        start = time.perf_counter()
        _write_series(folder, args.slices, args.size)
        result["series"]["generate_s"] = round(time.perf_counter() - start, 2)
        result["uncompressed"] = compare_loaders(folder, args.repeats)
        result["ingest_series"] = ingest_rates(folder)
        for name, uid in COMPRESSED if args.compressed_slices else ():
            compressed = Path(tmp) / name
            _write_series(compressed, args.compressed_slices, args.size, uid)
            result[name] = {"slices": args.compressed_slices, **compare_loaders(compressed, args.repeats, compressed=True)}
        if args.ingest_files:
            small = Path(tmp) / "small"
            start = time.perf_counter()
            write_small_files(small, args.ingest_files)
            generate_s = time.perf_counter() - start
            result["ingest_small_files"] = {"generate_s": round(generate_s, 1), **ingest_rates(small)}
    result["cpus"] = os.cpu_count()
    result["load_average"] = [round(v, 2) for v in os.getloadavg()]
    result["python"] = platform.python_version()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
