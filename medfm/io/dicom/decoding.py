"""Compressed pixel data decoded in worker processes, straight into the output volume, under a time limit.

pydicom's decoding plugins (pylibjpeg's OpenJPEG, libjpeg, CharLS) are C code that holds
the GIL while it decodes, and that a damaged codestream can send into an endless loop
(a 16-byte JPEG-LS codestream does so in libjpeg), which no signal interrupts. So these
files are decoded in ``fork``ed workers, never in the caller's process: each file must be
done within :func:`decode_seconds` of starting it, or every worker is killed and the file
is named in a one-line error. The workers write each frame into the volume, which lives in
shared memory (an anonymous shared mapping): no decoded frame crosses a pipe, and the
parent only waits. Memory stays bounded: the volume once, plus at most one file's decoded
frames per worker.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import select
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medfm.errors import UnreadableFileError
from medfm.io.dicom.frames import Frame
from medfm.io.dicom.workers import fork_context, usable_cpus

#: A series is decoded by several worker processes when it has at least this many compressed
#: files and their frames hold at least this many bytes (below, one worker is quicker).
PARALLEL_DECODE_FILES = 4
PARALLEL_DECODE_BYTES = 4 << 20
#: Transfer syntaxes whose decoders are native libraries that can loop, allocate wildly or panic on
#: damaged data, and hold the GIL: JPEG 2000 and HTJ2K, JPEG-LS, JPEG (C), and RLE (pylibjpeg-rle's
#: Rust, which panics on damaged segments). Deflate is zlib inside Python's own checks and stays here.
SLOW_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",  # JPEG 2000 lossless, lossy
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",  # JPEG-LS lossless, near-lossless
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",  # JPEG
})
#: At most this many worker processes (and never more than the CPUs).
DECODE_PROCESSES = 8
#: Every file gets this long to decode, however small (a loaded machine stalls processes for seconds)...
DECODE_FLOOR_S = 5.0
#: ...plus this long per MiB it decodes to: 1 MiB/s, a hundredth of what the decoders manage.
DECODE_S_PER_MIB = 1.0

#: ``(path, [(frame, (t, k)), ...])``: a file and where each of its frames goes in the volume.
Placed = tuple[Path, list[tuple[Frame, tuple[int, int]]]]
#: Writes a file's frames into their planes: ``fill(path, [(frame, plane), ...], scratch)``.
Fill = Callable[[Path, list[tuple[Frame, np.ndarray]], object], None]
#: The most bytes a worker writes to its pipe (one failure), well under a pipe's buffer.
_MESSAGE_BYTES = 16 << 10


def decode_elsewhere() -> bool:
    """Whether slow-to-decode files are decoded in worker processes here (the platform can ``fork``)."""
    return fork_context() is not None


def decode_workers(files: int, decoded_bytes: int) -> int:
    """How many worker processes decode ``files`` slow-to-decode files, ``decoded_bytes`` once decoded."""
    if files >= PARALLEL_DECODE_FILES and decoded_bytes >= PARALLEL_DECODE_BYTES:
        return max(1, min(DECODE_PROCESSES, usable_cpus(), files))
    return 1


def decode_seconds(placed: list[tuple[Frame, object]]) -> float:
    """The time limit for decoding one file: a floor, plus a time per MiB its frames decode to."""
    layout = placed[0][0].layout
    return DECODE_FLOOR_S + DECODE_S_PER_MIB * layout.frame_bytes * layout.number_of_frames / 2**20


def shared_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in an anonymous shared mapping, which forked workers write into."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype, count=nbytes // np.dtype(dtype).itemsize).reshape(shape)


def _worker(volume: np.ndarray, files: Sequence[Placed], fill: Fill, claim, busy: np.ndarray, slot: int, pipe: int) -> None:
    """Decode the next unclaimed file until none is left; report the first failure on ``pipe``. Never returns."""
    # A collection here would traverse, and so copy, every page of the heap this process
    # shares with its parent (a tenfold slower start); frozen, only new objects are traversed.
    gc.freeze()
    # failures go to the parent through the pipe; what a native decoder prints itself (a Rust panic's
    # text and backtrace) would reach the user's terminal as noise around the one-line error
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    code = 0
    try:
        while True:
            with claim.get_lock():
                index = claim.value
                claim.value += 1
            if index >= len(files):
                break
            busy[slot, 1] = time.monotonic_ns()  # the start before the index: the parent never pairs
            busy[slot, 0] = index  # a new index with the previous file's start
            path, placed = files[index]
            fill(path, [(frame, volume[at]) for frame, at in placed], None)
            busy[slot, 0] = -1  # between files (or exiting): no time limit runs
    except BaseException as exc:  # everything reaches the parent, which raises it
        code = 1
        failure = ("unreadable", exc.path, exc.reason) if isinstance(exc, UnreadableFileError) else ("error", exc)
        try:
            message = pickle.dumps(failure)
        except Exception:  # noqa: BLE001 (an exception that cannot be pickled is described instead)
            message = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}"[:1000])))
        os.write(pipe, message[:_MESSAGE_BYTES])
    finally:
        os._exit(code)


def _raise_failure(message: bytes) -> None:
    try:
        failure = pickle.loads(message)
    except Exception:  # noqa: BLE001 (cut at _MESSAGE_BYTES)
        raise RuntimeError("a pixel-decoding worker failed; its report was too long to read") from None
    if failure[0] == "unreadable":
        raise UnreadableFileError(failure[1], failure[2])
    raise failure[1]


def decode_files(volume: np.ndarray, files: Sequence[Placed], fill: Fill, workers: int) -> None:
    """Decode ``files`` into ``volume`` (made by :func:`shared_empty`) with ``fill``, in ``workers`` forked processes.

    Raises :class:`UnreadableFileError` for the first file that cannot be decoded, or that
    is not decoded within its :func:`decode_seconds` (every worker is then killed).
    """
    from medfm.io.dicom import pixels

    for syntax in {placed[0][0].layout.transfer_syntax for _, placed in files}:
        # Imports the syntax's decoding plugins here, so that forked workers never import them
        # (another thread of a server could hold an import lock as they fork).
        path, placed = next(item for item in files if item[1][0][0].layout.transfer_syntax == syntax)
        pixels.check_decodable(path, placed[0][0].layout)
    limits = [decode_seconds(placed) for _, placed in files]
    context = fork_context()
    claim = context.Value("q", 0)
    busy = shared_empty((workers, 2), np.int64)  # per worker: the file it decodes and since when (ns)
    busy[:] = (-1, 0)
    children: dict[int, tuple[int, int, int]] = {}  # pidfd: (pid, pipe to read, slot)
    try:
        for slot in range(workers):
            read, write = os.pipe()
            with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process; see fork_context
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:
                os.close(read)
                _worker(volume, files, fill, claim, busy, slot, write)
            os.close(write)
            children[os.pidfd_open(pid)] = (pid, read, slot)
        _wait(children, files, limits, busy)
    finally:
        for pidfd, (pid, read, _) in children.items():
            _end(pid)
            os.close(pidfd)
            os.close(read)


def _wait(children: dict[int, tuple[int, int, int]], files: Sequence[Placed], limits: list[float], busy: np.ndarray) -> None:
    """Wait for every worker to exit; raise what one reports, or for a file past its time limit."""
    running = set(children)
    while running:
        now = time.monotonic_ns()
        wait_s = 1.0
        for pidfd in running:
            index, since = busy[children[pidfd][2]]
            if index < 0:
                continue
            left = limits[index] - (now - since) / 1e9
            if left <= 0:
                _timed_out(files[index], limits[index])
            wait_s = min(wait_s, left)
        for pidfd in select.select(list(running), [], [], wait_s)[0]:
            running.discard(pidfd)
            pid, read, _ = children[pidfd]
            status = os.waitpid(pid, 0)[1]
            children[pidfd] = (0, read, children[pidfd][2])  # reaped: nothing to kill
            if os.waitstatus_to_exitcode(status) == 0:
                continue
            message = _read_all(read)
            if message:
                _raise_failure(message)
            # killed (out of memory, a signal): no file to blame
            raise UnreadableFileError(files[0][0].parent, "a pixel-decoding worker process died; load the series again")


def _timed_out(item: Placed, seconds: float) -> None:
    from pydicom.uid import UID

    path, placed = item
    name = UID(placed[0][0].layout.transfer_syntax).name
    raise UnreadableFileError(path, f"{name} pixel data could not be decoded within {seconds:.0f} s")


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _end(pid: int) -> None:
    """Kill and reap a worker that is still running (``pid`` 0: already reaped)."""
    if pid == 0:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
