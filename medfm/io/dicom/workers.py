"""Worker processes for DICOM work that holds the GIL: header parsing and compressed pixel decoding.

Both run in ``fork``ed processes, which inherit what the parent has imported and, for
decoding, the shared output buffer, so nothing large crosses a pipe.
"""

from __future__ import annotations

import multiprocessing
import os
import sys


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as ``taskset`` or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def fork_context() -> multiprocessing.context.BaseContext | None:
    """``fork`` workers, or None (work in this process) where the platform has no ``fork``.

    Not ``spawn``/``forkserver``: they re-import the caller's main module, which breaks any
    script without an ``if __name__ == "__main__"`` guard. A forked worker only runs pydicom
    and its decoding plugins (imported by the parent before it forks), touching no lock
    another thread of the parent (a server's) could hold.
    """
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return multiprocessing.get_context("fork")
