"""How many CPU threads medfm's computations use: chosen here, once, for torch, OpenMP and BLAS.

Left alone, torch starts one compute thread per core and OpenMP's threads spin while
they wait for each other. When anything else keeps a core busy (another user, a data
loader, the server's event loop) each parallel step then waits for a descheduled thread:
on a 2-core machine one medfm-interactive prediction took 300–600 ms instead of 10–15 ms.

The default is therefore half the CPUs this process may use (its CPU affinity and
container quota), at least 1 and at most :data:`MAX_DEFAULT_THREADS`: the other half stays
free for the rest of the machine, and the small models medfm runs gain little from more.
``MEDFM_THREADS`` overrides it, then ``OMP_NUM_THREADS`` (as a cluster scheduler sets it);
the command line's ``medfm --threads N`` and :func:`set_threads` override both. Unless
:func:`set_threads` was called, the default is applied when the first model is created.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from medfm.errors import MedfmError

MAX_DEFAULT_THREADS = 8
#: Read by OpenMP, MKL and OpenBLAS when they are loaded: covers libraries not loaded yet,
#: and the processes medfm starts.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

_chosen: int | None = None
_interop_set = False


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.floor(int(quota) / int(period))))


def default_threads() -> int:
    """``MEDFM_THREADS``, else ``OMP_NUM_THREADS``, else half the available CPUs (1 to 8)."""
    for variable in ("MEDFM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(variable, "").strip()
        if value:
            return _checked(value, variable)
    return max(1, min(MAX_DEFAULT_THREADS, available_cpus() // 2))


def _checked(value: int | str, name: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise MedfmError(f"{name} must be a whole number of threads, 1 or more; got {value!r}")
    return count


def set_threads(count: int | None = None) -> int:
    """Run torch, OpenMP and BLAS (numpy) on ``count`` threads (``None``: :func:`default_threads`).

    Returns the count. torch's inter-op pool (used only by ``torch.jit.fork``) gets one
    thread; it can be set only before torch's first parallel work, and is left alone after.
    """
    global _chosen
    count = default_threads() if count is None else _checked(count, "threads")
    _chosen = count
    for variable in THREAD_ENV_VARS:
        os.environ[variable] = str(count)
    if "numpy" in sys.modules:  # BLAS already loaded has read the variables: limit it directly
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=count)
    if "torch" in sys.modules:
        _apply_to_torch(count)
    return count


def ensure_threads() -> int:
    """The chosen count, applied to torch; the default is chosen on the first call.

    Called whenever a model is created, so that the Python API gets the default without
    asking and a count chosen before torch was imported reaches torch.
    """
    return set_threads(_chosen)


def _apply_to_torch(count: int) -> None:
    global _interop_set
    import torch

    torch.set_num_threads(count)
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # torch has already started parallel work: its pool stays
            pass
