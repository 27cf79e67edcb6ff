"""Training across processes: torch DistributedDataParallel on the gloo backend (CPU).

Every rank draws a step's *global* batch with the same seed and trains on its contiguous
share (:meth:`Group.share`); DDP averages the gradients, so N processes with B/N samples each
take the same optimiser steps as one process with B samples. This is exact (up to float
rounding) for networks whose normalisation uses each sample alone (instance, group, layer
norm: medfm's automatic segmenters); a network with BatchNorm gets the global batch's
statistics through :mod:`medfm.scale.batchnorm` (torch's SyncBatchNorm needs a GPU). A loss
that compares every sample with every other (contrastive) sees the global batch through
:meth:`Group.gather`.

On this machine, :func:`local_group` makes this process rank 0 (the only one that writes) and
starts the others, which die with it. Across machines, start the same command on each with
torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT: :func:`launched_group`
joins that group, and rank 0 sends the others what they need (:meth:`Group.broadcast`).
:func:`run_in_processes` runs a whole training function on every rank instead, for trainers whose
every rank can read the same inputs.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from medfm.errors import MedfmError
from medfm.scale.runners import error_line

T = TypeVar("T")
S = TypeVar("S", bound=Sequence[Any])
#: How long a rank waits for the others at a collective before giving up.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Group:
    """This process's place among ``world`` training processes; ``Group()`` is one process alone."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, which alone writes checkpoints and outputs."""
        return self.rank == 0

    def share(self, batch: S) -> S:
        """This rank's contiguous part of a global batch (a list, array or tensor) whose length the world size divides."""
        size = len(batch) // self.world
        return batch[self.rank * size:(self.rank + 1) * size]

    def gather(self, rows: Any) -> Any:
        """Every rank's ``rows`` (a tensor, one row per sample of its share) joined in rank order: the global batch's,
        with the gradients flowing back to each rank's own rows, so that a loss comparing every sample with every
        other (contrastive) is the global batch's on every rank."""
        if self.world == 1:
            return rows
        # torch's differentiable collectives (torch.distributed.nn.functional is deprecated in their favour)
        from torch.distributed import group
        from torch.distributed._functional_collectives import all_gather_single_autograd

        return all_gather_single_autograd(rows.contiguous(), 0, group.WORLD)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def broadcast_tensor(self, tensor: Any) -> Any:
        """Rank 0's ``tensor`` on every rank (the others pass ``None``), sent as it is rather than pickled: the
        image caches that the other ranks, perhaps on machines without rank 0's files, train on."""
        if self.world == 1:
            return tensor
        import torch
        import torch.distributed as dist

        shape, dtype = self.broadcast((tuple(tensor.shape), tensor.dtype) if self.main else None)
        received = tensor.contiguous() if self.main else torch.empty(shape, dtype=dtype)
        dist.broadcast(received, src=0)
        return received

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (each rank's batch loss → the global batch's)."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total.item()) / self.world

    def average_gradients(self, parameters: Sequence[Any]) -> None:
        """Replace each parameter's gradient by its mean over the ranks (a parameter without one on a rank counts
        as zeros there), as DDP does; for trainers that cannot route their passes through :meth:`wrap`."""
        if self.world == 1:
            return
        import torch
        import torch.distributed as dist

        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for parameter in parameters:
            parameter.grad = flat[offset:offset + parameter.numel()].view_as(parameter).clone()
            offset += parameter.numel()

    def wrap(self, network: Any, *, unused_parameters: bool = False) -> Any:
        """``network`` whose backward pass averages gradients over the ranks (itself when alone), called as the
        network (its ``forward``); its BatchNorm layers, if any, normalise with the global batch's statistics.
        ``unused_parameters``: some trainable parameters may take no part in a step (DDP then looks for them
        from the forward pass's outputs, which must therefore lead to every parameter that is used)."""
        if self.world == 1:
            return network
        from torch.nn.parallel import DistributedDataParallel

        from medfm.scale.batchnorm import use_global_batchnorm

        return DistributedDataParallel(use_global_batchnorm(network), find_unused_parameters=unused_parameters)


def check_workers(workers: int, global_batch: int | None = None, samples: int | None = None) -> None:
    """Refuse in one line a worker count below 1, one that does not divide the global batch,
    or more workers than training samples."""
    if workers < 1:
        raise MedfmError(f"--workers must be at least 1; got {workers}")
    if samples is not None and workers > samples:
        raise MedfmError(f"--workers {workers}: more worker processes than the {samples} training samples")
    if global_batch is not None and global_batch % workers:
        raise MedfmError(f"--workers {workers} does not divide the batch of {global_batch}: each process takes an equal "
                         "share of it; choose a divisor or another batch size")


def launched_group() -> Group | None:
    """The group torchrun (or any launcher setting RANK and WORLD_SIZE) started this process in, joined;
    ``None`` when this process was started alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise MedfmError(f"cannot join the training group at {os.environ.get('MASTER_ADDR')}:"
                             f"{os.environ.get('MASTER_PORT')}: {error_line(exc)}") from None
    return Group(dist.get_rank(), dist.get_world_size())


def follows_rank_0() -> bool:
    """Whether a launcher (torchrun) started this process as a rank other than 0: such a rank reads no data, as
    rank 0 sends it what it trains on, so its machine need not hold the data."""
    launched = launched_group()
    return launched is not None and not launched.main


def launcher_group(workers: int, ray: str | None) -> Group | None:
    """:func:`launched_group`, refusing ``--workers`` and ``--ray`` under a launcher: each would start a group of its own."""
    launched = launched_group()
    if launched is not None and workers > 1:
        raise MedfmError("--workers starts processes on this machine; under torchrun, --nproc-per-node does")
    if launched is not None and ray is not None:
        raise MedfmError("--ray starts its own training group; under torchrun leave it out")
    return launched


@contextmanager
def local_group(workers: int, follower: Callable[[Group], None]) -> Iterator[Group]:
    """``workers`` processes on this machine: this one is rank 0, ranks 1.. run ``follower(group)``
    (a module-level function, so that it can start in a new interpreter). The threads of this
    process's CPU share are split among them. The followers end with the block, and are killed
    if this process dies; a follower's failure is raised here as a one-line :class:`MedfmError`."""
    if workers == 1:
        yield Group()
        return
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from medfm.threads import ensure_threads, set_threads

    previous = ensure_threads()
    threads = max(1, previous // workers)
    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="medfm-ddp-") as folder:
        store = f"file://{os.path.join(folder, 'store')}"
        pipes = {rank: context.Pipe(duplex=False) for rank in range(1, workers)}
        followers = {rank: context.Process(target=_follow, daemon=True,
                                           args=(follower, store, rank, workers, threads, os.getpid(), errors, sender))
                     for rank, (_, sender) in pipes.items()}
        for process in followers.values():
            process.start()
        for _, sender in pipes.values():  # the followers hold the only write ends: a dead one's pipe reads as closed
            sender.close()
        set_threads(threads)
        try:
            _await_followers(followers, {rank: reader for rank, (reader, _) in pipes.items()})
            dist.init_process_group("gloo", init_method=store, rank=0, world_size=workers, timeout=TIMEOUT)
            yield Group(0, workers)
        except RuntimeError as exc:  # gloo's "connection closed by peer" when a follower failed
            raise MedfmError(errors.get() if not errors.empty() else f"a training process failed: {error_line(exc)}") from None
        finally:
            joined = dist.is_initialized()
            if joined:
                dist.destroy_process_group()
            for process in followers.values():
                process.join(timeout=30 if joined else 0)  # without a group, the others would only wait for TIMEOUT
                if process.is_alive():
                    process.kill()
                    process.join()
            set_threads(previous)


def run_in_processes(workers: int, function: Callable[..., T], arguments: dict[str, Any]) -> T:
    """``function(**arguments, group=GROUP)`` on every rank of a :func:`local_group` of ``workers`` processes;
    rank 0's result. ``function`` (module-level) and ``arguments`` must pickle, and every rank must be able
    to read what the arguments name."""
    with local_group(workers, partial(_run_with_group, function, arguments)) as group:
        return function(**{**arguments, "group": group})


def _run_with_group(function: Callable[..., Any], arguments: dict[str, Any], group: Group) -> None:
    function(**{**arguments, "group": group})


def _await_followers(followers: dict[int, Any], readers: dict[int, Any]) -> None:
    """Return when every follower has said it is joining the group. One that ends before that (a crash
    while starting, SIGKILL) is raised at once, naming its rank and exit code: rank 0 would otherwise
    wait for it at the rendezvous until :data:`TIMEOUT`."""
    from multiprocessing.connection import wait

    deadline = time.monotonic() + TIMEOUT.total_seconds()
    while readers:
        ready = wait(list(readers.values()), timeout=max(0.0, deadline - time.monotonic()))
        if not ready:
            raise MedfmError(f"training process rank {min(readers)} did not start within {TIMEOUT}")
        for rank, reader in list(readers.items()):
            if reader not in ready:
                continue
            try:
                reader.recv()
            except EOFError:
                followers[rank].join(timeout=5)
                raise MedfmError(f"training process rank {rank} ended before joining the group: "
                                 f"{_exit_status(followers[rank].exitcode)}") from None
            del readers[rank]


def _exit_status(code: int | None) -> str:
    """A process's exit code in words (a negative code is the signal that killed it)."""
    if code is None:
        return "no exit code"
    return f"exit code {code} ({signal.Signals(-code).name})" if code < 0 else f"exit code {code}"


def _follow(follower: Callable[[Group], None], store: str, rank: int, world: int, threads: int, parent: int,
            errors: Any, joining: Any) -> None:
    """A follower process: die with rank 0's process, tell it through ``joining`` that it is joining the group,
    join it, run ``follower``."""
    _die_with_parent(parent)
    import torch.distributed as dist

    from medfm.threads import set_threads

    set_threads(threads)
    joining.send(rank)
    joining.close()
    try:
        dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world, timeout=TIMEOUT)
        follower(Group(rank, world))
    except MedfmError as exc:
        errors.put(str(exc))
        sys.exit(2)
    except RuntimeError as exc:  # rank 0 went away: it reports, or was killed
        errors.put(f"a training process failed: {error_line(exc)}")
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every process of the terminal's group: rank 0 reports it
        sys.exit(130)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a killed driver leaves no orphans)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)

