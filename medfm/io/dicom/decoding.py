"""Compressed pixel data decoded in worker processes, straight into the output volume.

pydicom's decoding plugins (pylibjpeg's OpenJPEG, libjpeg, RLE) hold the GIL while they
decode, so threads decode one file at a time and stall every other thread of the process
(a server answering requests). Here ``fork``ed workers decode the files and write each
frame into the volume, which lives in shared memory (an anonymous shared mapping): no
decoded frame crosses a pipe, and the parent only waits. Memory stays bounded: the volume
once, plus at most one file's decoded frames per worker.
"""

from __future__ import annotations

import mmap
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from medfm.errors import UnreadableFileError
from medfm.io.dicom.frames import Frame
from medfm.io.dicom.workers import fork_context, usable_cpus

#: A series is decoded in worker processes when it has at least this many compressed files
#: and their frames hold at least this many bytes (below, starting the workers costs more).
PARALLEL_DECODE_FILES = 4
PARALLEL_DECODE_BYTES = 4 << 20
#: Transfer syntaxes whose decoders hold the GIL for tens of milliseconds a 512x512 frame:
#: JPEG 2000 and HTJ2K, JPEG-LS, JPEG. RLE and deflate take a few milliseconds a frame and
#: stay in this process, where they finish before workers would have started.
SLOW_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000 lossless, lossy
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",  # JPEG-LS lossless, near-lossless
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # JPEG
})
#: At most this many worker processes (and never more than the CPUs).
DECODE_PROCESSES = 8
#: Files per task: small, so the workers finish together; each task's answer is a few bytes.
DECODE_CHUNK_FILES = 2

#: ``(path, [(frame, (t, k)), ...])``: a file and where each of its frames goes in the volume.
Placed = tuple[Path, list[tuple[Frame, tuple[int, int]]]]
#: Writes a file's frames into their planes: ``fill(path, [(frame, plane), ...], scratch)``.
Fill = Callable[[Path, list[tuple[Frame, np.ndarray]], object], None]

# Set in each worker process by _attach: the parent's volume (shared) and how to fill it.
_volume: np.ndarray | None = None
_fill: Fill | None = None
#: Transfer syntaxes this process has decoded itself, so their plugins are imported here.
_imported: set[str] = set()


def decode_in_processes(files: int, decoded_bytes: int) -> bool:
    """Whether ``files`` slow-to-decode files, ``decoded_bytes`` once decoded, are worth decoding in worker processes here."""
    return files >= PARALLEL_DECODE_FILES and decoded_bytes >= PARALLEL_DECODE_BYTES and usable_cpus() >= 2 \
        and fork_context() is not None


def shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in an anonymous shared mapping, which forked workers write into."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype, count=nbytes // np.dtype(dtype).itemsize).reshape(shape)


def _attach(volume: np.ndarray, fill: Fill) -> None:
    global _volume, _fill
    _volume, _fill = volume, fill


def _decode_chunk(files: list[Placed]) -> tuple[str, str] | None:
    """Decode ``files`` into the shared volume; ``(path, reason)`` of the first that fails, else None."""
    for path, placed in files:
        try:
            _fill(path, [(frame, _volume[index]) for frame, index in placed], None)
        except UnreadableFileError as exc:
            return exc.path, exc.reason
    return None


def decode_files(volume: np.ndarray, files: Sequence[Placed], fill: Fill) -> None:
    """Decode ``files`` into ``volume`` (made by :func:`shared_empty`) with ``fill``, in worker processes.

    The first time a transfer syntax is decoded in this process, its first file is decoded
    here before any worker starts: that imports its decoding plugins, so forked workers never
    import them (another thread of a server could be importing something as they fork).
    Raises :class:`UnreadableFileError` for the first file that cannot be decoded.
    """
    first, rest = files[0], list(files)
    syntax = first[1][0][0].layout.transfer_syntax
    if syntax not in _imported:
        fill(first[0], [(frame, volume[index]) for frame, index in first[1]], None)
        _imported.add(syntax)
        rest = rest[1:]
    if not rest:
        return
    chunks = [rest[start:start + DECODE_CHUNK_FILES] for start in range(0, len(rest), DECODE_CHUNK_FILES)]
    workers = min(DECODE_PROCESSES, usable_cpus(), len(chunks))
    # The volume and fill function reach the workers through fork, never through a pipe.
    pool = ProcessPoolExecutor(workers, mp_context=fork_context(), initializer=_attach, initargs=(volume, fill))
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process; see fork_context
            warnings.simplefilter("ignore", DeprecationWarning)
            failures = pool.map(_decode_chunk, chunks)
        for failure in failures:
            if failure is not None:
                raise UnreadableFileError(*failure)
    except BrokenProcessPool:  # a worker was killed (out of memory, a signal): no file to blame
        raise UnreadableFileError(first[0].parent, "a pixel-decoding worker process died; load the series again") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
