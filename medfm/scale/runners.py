"""One interface for where work runs: :class:`LocalRunner` (this process) and :class:`RayRunner`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol

from medfm.errors import MedfmError

#: ``work(model, payload) -> result``: a module-level function, so that Ray can ship it by reference.
Work = Callable[[Any, Any], Any]
#: A worker process that dies mid-call is restarted and the call retried this many times.
RETRIES = 3
#: How long a cluster address may take to accept a connection.
CONNECT_TIMEOUT_S = 5.0


class Runner(Protocol):
    """Maps ``work`` over payloads with a model per worker, yielding results in the payloads' order."""

    workers: int

    def map(self, work: Work, payloads: Iterable[Any]) -> Iterator[Any]: ...

    def close(self) -> None: ...


class LocalRunner:
    """The single-process path: one model, here."""

    workers = 1

    def __init__(self, model: Any) -> None:
        self.model = model

    def map(self, work: Work, payloads: Iterable[Any]) -> Iterator[Any]:
        return (work(self.model, payload) for payload in payloads)

    def close(self) -> None:
        pass


def split(items: Sequence[Any], workers: int, largest: int) -> list[list[Any]]:
    """``items`` in consecutive chunks of at most ``largest``: on one worker, as few as that allows; on several,
    about four per worker, so that every worker stays busy while the others finish theirs."""
    size = largest if workers == 1 else max(1, min(largest, math.ceil(len(items) / (4 * workers))))
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


def map_outcomes(runner: Runner, work: Work, payloads: Iterable[Any]) -> Iterator[Any]:
    """:meth:`Runner.map`, each payload giving its result or the :class:`MedfmError` its work raised, so that
    one bad input stops nothing (a batch reports it and goes on)."""
    return runner.map(partial(_outcome, work), payloads)


def _outcome(work: Work, model: Any, payload: Any) -> Any:
    try:
        return work(model, payload)
    except MedfmError as exc:
        return exc


def open_runner(address: str | None, workers: int = 2, model: Any = None, build: Callable[[], Any] | None = None) -> Runner:
    """Where a command runs (its ``--ray ADDRESS|local --workers N``): here on ``model`` without ``address``, else a
    :func:`ray_runner` whose workers each hold ``build()``, checked to have ``model``'s weights (no ``build``: work
    that needs no model, such as reading headers)."""
    if address is None:
        return LocalRunner(model)
    if build is None:
        return ray_runner(address, _no_model, _no_model, None, workers)
    return ray_runner(address, build, weights_sha256, model.info.weights_sha256, workers)


def _no_model(*_: Any) -> None:
    return None


def ray_runner(address: str, build: Callable[[], Any], identity: Callable[[Any], str | None], expected: str | None,
               workers: int = 2) -> RayRunner:
    """A :class:`RayRunner` on the cluster at ``address`` (``local``: start one on this machine
    with ``workers`` CPUs), whose ``workers`` actors each hold ``build()``.

    Every worker's ``identity(model)`` (the weights' sha256) must equal ``expected`` before any
    work starts, so a worker with another model file, or none, is refused in one line.
    """
    from medfm.scale.ddp import check_workers

    check_workers(workers)
    ray, started = connect_ray(address, workers)
    return RayRunner(ray, build, identity, expected, workers, shutdown=started)


def connect_ray(address: str, cpus: int) -> tuple[Any, bool]:
    """``(ray, started)``: Ray connected to the cluster at ``address`` (``local``: one started on this machine
    with ``cpus`` CPUs), ``started`` when this call started the connection (its caller shuts it down)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise MedfmError("--ray needs Ray: pip install 'medfm[ray]'") from None
    if address != "local":  # even when this process already holds a cluster: the address asked for must answer
        _check_reachable(address)
    started = not ray.is_initialized()
    if started:
        try:
            if address == "local":
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MedfmError(f"cannot reach the Ray cluster at {address}: {error_line(exc)}") from None
    return ray, started


class RayRunner:
    """``workers`` Ray actors, each holding one model built once; a killed worker is restarted
    (its model rebuilt) and its unfinished call retried, so no payload is lost or done twice
    from the driver's point of view."""

    def __init__(self, ray: Any, build: Callable[[], Any], identity: Callable[[Any], str | None], expected: str | None,
                 workers: int, shutdown: bool) -> None:
        from ray.util import ActorPool

        self._ray = ray
        self._shutdown = shutdown
        self.workers = workers
        actor = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(ModelWorker)
        self.actors = [actor.remote(build) for _ in range(workers)]
        try:
            identities = ray.get([worker.identity.remote(identity) for worker in self.actors])
        except ray.exceptions.RayError as exc:
            self.close()
            raise MedfmError(f"a Ray worker cannot load the model: {error_line(exc.__cause__ or exc)}") from None
        wrong = {found for found in identities if found != expected}
        if wrong:
            self.close()
            raise MedfmError(f"a Ray worker holds other weights (sha256 {sorted(map(str, wrong))[0][:12]}…) than this "
                             f"machine ({str(expected)[:12]}…); install the same model file on every worker")
        self._pool = ActorPool(self.actors)

    def pids(self) -> list[int]:
        """The worker processes' ids (the fault tests kill one)."""
        return self._ray.get([worker.pid.remote() for worker in self.actors])

    def map(self, work: Work, payloads: Iterable[Any]) -> Iterator[Any]:
        try:
            yield from self._pool.map(lambda worker, payload: worker.run.remote(work, payload), list(payloads))
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            if isinstance(cause, MedfmError):
                raise cause from None
            raise MedfmError(f"a Ray worker failed: {error_line(cause)}") from None
        except self._ray.exceptions.RayActorError as exc:
            raise MedfmError(f"a Ray worker died {RETRIES + 1} times on the same work: {error_line(exc)}") from None

    def close(self) -> None:
        for worker in self.actors:
            self._ray.kill(worker)
        if self._shutdown:
            self._ray.shutdown()


class ModelWorker:
    """A Ray actor's state: one model, built when the worker (re)starts."""

    def __init__(self, build: Callable[[], Any]) -> None:
        from medfm.threads import set_threads

        set_threads(1)  # one CPU per actor: Ray places as many actors as the cluster has CPUs
        self.model = build()

    def identity(self, identity: Callable[[Any], str | None]) -> str | None:
        return identity(self.model)

    def pid(self) -> int:
        return os.getpid()

    def run(self, work: Work, payload: Any) -> Any:
        return work(self.model, payload)


def _check_reachable(address: str) -> None:
    """Refuse an address nothing answers at, at once: Ray itself retries for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise MedfmError(f"--ray takes local, HOST:PORT or ray://HOST:PORT; got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise MedfmError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def error_line(exc: BaseException) -> str:
    """The line of an error's text that says what went wrong: its last (Ray and torch put their tracebacks first)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def weights_sha256(model: Any) -> str | None:
    """A model's identity across machines: the sha256 of its weights (an encoder's or segmenter's ``info``)."""
    return model.info.weights_sha256


def encoder_runner(address: str | None, encoder: Any, name: str, checkpoint: str | os.PathLike | None, workers: int = 2,
                   adapter: str | os.PathLike | None = None) -> Runner:
    """:func:`open_runner` for ``encoder``, whose Ray workers each hold ``create_encoder(name, checkpoint, adapter)``.
    A checkpoint or adapter path must name the same file on every worker."""
    from medfm.models.registry import create_encoder

    checkpoint = os.path.abspath(checkpoint) if checkpoint is not None else None
    adapter = os.path.abspath(adapter) if adapter is not None else None
    return open_runner(address, workers, encoder, partial(create_encoder, name, checkpoint, adapter))
