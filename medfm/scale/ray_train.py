"""Training on a Ray cluster: Ray Train's ``TorchTrainer`` as the launcher of ``--ray`` on the training commands.

Ray Train starts ``workers`` processes, joins them in a torch process group (gloo, CPU) and sets RANK and
WORLD_SIZE as torchrun does, so each process runs the same training function, which finds that group
(:func:`medfm.scale.ddp.launched_group`) and trains its share of every global batch; rank 0 writes the
outputs, and its summary comes back to the driver. As under torchrun, paths must name the same files on
every machine (a shared file system), and a run whose worker dies stops: ``--resume`` continues it from
its last checkpoint.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from medfm.errors import MedfmError
from medfm.scale.runners import error_line
from medfm.scale.runners import connect_ray

T = TypeVar("T")


def train_on_ray(address: str, workers: int, train: Callable[[], T | None]) -> T:
    """Rank 0's result of ``train()`` (picklable; it joins the group Ray Train starts, and returns None on the
    other ranks) run by ``workers`` Ray Train workers of one CPU each on the cluster at ``address``. The workers
    run in other folders, maybe on other machines: ``train``'s paths must be absolute (:func:`absolute`)."""
    from medfm.scale.ddp import check_workers

    check_workers(workers)
    ray, started = connect_ray(address, workers)
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.util.queue import Queue

        summaries = Queue()  # Ray Train keeps reported metrics only with a checkpoint: rank 0 posts its summary here
        with tempfile.TemporaryDirectory(prefix="medfm-ray-train-") as storage:
            trainer = TorchTrainer(
                _train_loop, train_loop_config={"train": train, "summaries": summaries},
                torch_config=TorchConfig(backend="gloo"),
                scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
                run_config=RunConfig(name="medfm-train", storage_path=storage, failure_config=FailureConfig(max_failures=0)))
            try:
                result = trainer.fit()
            except Exception as exc:  # noqa: BLE001  Ray Train wraps the workers' errors in its own
                raise MedfmError(f"training on Ray failed: {_cause(exc)}") from None
            if getattr(result, "error", None) is not None:
                raise MedfmError(f"training on Ray failed: {_cause(result.error)}")
        return summaries.get(timeout=60)
    finally:
        if started:
            ray.shutdown()


def absolute(path: str | os.PathLike | None) -> Path | None:
    """``path`` made absolute (None stays None), for a training function handed to :func:`train_on_ray`."""
    return None if path is None else Path(path).absolute()


def absolute_catalog(catalog: str | None) -> str | None:
    """A catalog URL as given, a SQLite file's path made absolute (None stays None)."""
    return catalog if catalog is None or "://" in catalog else str(Path(catalog).absolute())


def _train_loop(config: dict[str, Any]) -> None:
    summary = config["train"]()
    if summary is not None:
        config["summaries"].put(summary)


def _cause(exc: BaseException) -> str:
    """The first line of the workers' own error (a :class:`MedfmError` when there is one) under Ray's wrappers."""
    failures = list((getattr(exc, "worker_failures", None) or {}).values())
    seen: list[BaseException] = []
    for error in [*failures, exc]:
        while error is not None and error not in seen:
            seen.append(error)
            error = getattr(error, "cause", None) or error.__cause__
    mine = next((error for error in seen if isinstance(error, MedfmError)), None)
    return error_line(mine or (seen[1] if len(seen) > 1 else exc))
