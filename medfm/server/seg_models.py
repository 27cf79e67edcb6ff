"""The workbench's annotate → train → auto-segment loop: automatic segmenters trained on the annotation
versions users marked final, kept under ``<data_dir>/models/seg/<name>``, and adapters of the promptable
segmenter fine-tuned on them, kept as ``<data_dir>/models/adapters/<name>.safetensors``.

A model folder is what ``medfm train seg`` writes (``medfm segment --auto --model`` takes it too), an
adapter file what ``medfm finetune`` writes (``medfm serve --adapter`` takes it); each is built in a
hidden ``.<name>.partial`` folder that a cancelled or failed training removes, and that the server
removes at start-up (a killed training). One training (of either kind) runs at a time: each takes
the CPU cores it is given for its whole budget.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.errors import MedfmError
from medfm.io.annotation_versions import NAME_PATTERN
from medfm.server.errors import NotFound
from medfm.server.jobs import Jobs, OneAtATime, Progress

if TYPE_CHECKING:
    from medfm.io import Image
    from medfm.models.automatic import AutoSegmenter

#: The longest training one request may start.
MAX_BUDGET_MINUTES = 240.0
#: Unlabelled images one "least confident" request scores at most (each is a pass of the model).
MAX_RANKED = 32
#: What a training job's result and a model listing show of the training summary.
SUMMARY_FIELDS = ("steps", "training_seconds", "train_images", "val_images", "budget_minutes", "validation")
#: What a fine-tuning job's result and an adapter listing show of the fine-tuning summary.
FINETUNE_SUMMARY_FIELDS = ("steps", "training_seconds", "train_images", "val_images", "trainable_parameters",
                           "validation_before", "validation_best")


def check_budget(budget_minutes: float) -> None:
    if not 0 < budget_minutes <= MAX_BUDGET_MINUTES:
        raise MedfmError(f"budget_minutes must be above 0 and at most {MAX_BUDGET_MINUTES:g}; got {budget_minutes}")


def run_training(progress: Progress, work: Callable[[Callable[[int, float], None]], dict[str, Any]], partial: Path,
                 budget_minutes: float, max_steps: int | None) -> dict[str, Any]:
    """Job work: ``work(on_step)`` with progress in percent of the budget (or of ``max_steps`` if further); a
    cancelled or failed training leaves no ``partial`` folder behind."""
    started = time.monotonic()

    def on_step(step: int, _loss: float) -> None:
        fraction = (time.monotonic() - started) / (budget_minutes * 60)
        if max_steps:
            fraction = max(fraction, step / max_steps)
        progress(min(99, int(100 * fraction)), 100)

    try:
        progress(0, 100)
        return work(on_step)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


class ModelNotFound(NotFound):
    """No trained model, or no adapter, of that name (404)."""


class SegModels:
    """The trained automatic segmenters under ``root``, the one training that may be running, and the
    last model used (loaded once: loading checks the weights' sha256)."""

    def __init__(self, root: Path, adapters: Path, annotations: Path, catalog_url: str, jobs: Jobs, base_segmenter: str) -> None:
        """``base_segmenter``: the registry name of the promptable segmenter that fine-tuning adapts."""
        self.root = root
        self.adapters = adapters
        self.annotations = annotations
        self.catalog_url = catalog_url
        self.jobs = jobs
        self.base_segmenter = base_segmenter
        #: held while a model is loaded or segments (one at a time: each uses every core)
        self.lock = threading.Lock()
        self._training = OneAtATime(jobs, "a training is already running ({label}); wait for it or cancel it")
        self._loaded: tuple[str, AutoSegmenter] | None = None
        self._uncertainty: dict[tuple[str, str, int], float] = {}  # by (weights sha256, measure, image id), for the server's life
        self._remove_partial()

    def _remove_partial(self) -> None:
        for folder in (self.root, self.adapters):
            if folder.is_dir():
                for leftover in folder.glob(".*.partial"):
                    shutil.rmtree(leftover, ignore_errors=True)

    def list(self) -> list[dict[str, Any]]:
        """Every trained model, newest first: ``{"name", "created", "architecture", "labels", "plan",
        "weights_sha256", "steps", "training_seconds", "train_images", "val_images", "budget_minutes", "validation"}``."""
        if not self.root.is_dir():
            return []
        models = []
        for folder in self.root.iterdir():
            if not (NAME_PATTERN.fullmatch(folder.name) and (folder / "config.json").is_file()):
                continue
            try:
                config = json.loads((folder / "config.json").read_text())
                plan = json.loads((folder / "plan.json").read_text())
                weights = config["weights"]["sha256"]
            except (OSError, ValueError, KeyError, TypeError):  # a folder someone damaged: not a model to offer
                continue
            training = config.get("training", {})
            models.append({
                "name": folder.name, "architecture": config.get("architecture"), "labels": config.get("labels"),
                "created": datetime.fromtimestamp((folder / "config.json").stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
                "plan": plan, "weights_sha256": weights, **{key: training.get(key) for key in SUMMARY_FIELDS},
            })
        return sorted(models, key=lambda model: model["created"], reverse=True)

    def list_adapters(self) -> list[dict[str, Any]]:
        """Every adapter fine-tuned here, newest first: ``{"name", "created", "base_model", "method", "rank", "steps",
        "training_seconds", "train_images", "val_images", "trainable_parameters", "validation_before", "validation_best"}``."""
        from medfm.models.adapters.file import read_adapter

        if not self.adapters.is_dir():
            return []
        adapters = []
        for path in self.adapters.glob("*.safetensors"):
            if not NAME_PATTERN.fullmatch(path.stem):
                continue
            try:
                metadata = read_adapter(path, tensors=False)[1]
                training = json.loads(metadata.get("training", "{}"))
            except (MedfmError, ValueError):  # a file someone damaged: not an adapter to offer
                continue
            adapters.append({
                "name": path.stem, "created": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds"),
                "base_model": metadata.get("base_model"), "method": metadata.get("method"), "rank": training.get("rank"),
                **{key: training.get(key) for key in FINETUNE_SUMMARY_FIELDS},
            })
        return sorted(adapters, key=lambda adapter: adapter["created"], reverse=True)

    @property
    def training(self) -> dict[str, str] | None:
        """What :meth:`start_training` or :meth:`start_finetune` answered for the training queued or running, else None."""
        running = self._training.running
        if running is None:
            return None
        if self.jobs.get(running[0])["kind"] == "train-seg":
            return {"job": running[0], "kind": "train-seg", "model": running[1]}
        return {"job": running[0], "kind": "finetune", "adapter": running[1], "base_model": self.base_segmenter}

    def _check_new_name(self, name: str, path: Path, what: str) -> None:
        """A new model or adapter ``name`` (stored at ``path``), and annotations to learn from: else one line."""
        if not NAME_PATTERN.fullmatch(name):
            raise MedfmError(f"{what} name {name!r} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")
        if path.exists():
            raise MedfmError(f"a {what} named {name!r} exists already; choose another name")
        if not self.annotations.is_dir():
            raise MedfmError("no saved annotations yet: save some and mark them final to train on them")

    def _check_training_set(self) -> None:
        """At least two images with final versions, in the catalog: refused now rather than by a failed job."""
        from medfm.train.seg import collect_cases
        from medfm.train.seg_data import split_cases

        split_cases(collect_cases(self.annotations, catalog=self.catalog_url, final_only=True))

    def start_training(self, *, name: str | None = None, labels: Mapping[int, str] | None = None,
                       budget_minutes: float = 10.0, max_steps: int | None = None,
                       architecture: str | None = None) -> dict[str, str]:
        """Queue ``medfm train seg`` on the final annotation versions as a job: ``{"job", "kind": "train-seg", "model"}``.

        The training set is checked now (at least two images with final versions, in the catalog),
        so that bad input is refused at once rather than reported by a failed job.
        """
        from medfm.models.registry import list_auto_architectures
        from medfm.train.seg import train_segmenter

        check_budget(budget_minutes)
        if architecture is not None and architecture not in list_auto_architectures():
            raise MedfmError(f"architecture must be one of {', '.join(sorted(list_auto_architectures()))}; got {architecture!r}")
        name = name or datetime.now(timezone.utc).strftime("seg-%Y%m%d-%H%M%S")
        self._check_new_name(name, self.root / name, "model")
        self._check_training_set()
        self.root.mkdir(parents=True, exist_ok=True)

        def work(on_step: Callable[[int, float], None]) -> dict[str, Any]:
            summary = train_segmenter(self.annotations, self.root / name, labels=labels, architecture=architecture,
                                      budget_minutes=budget_minutes, max_steps=max_steps, catalog=self.catalog_url,
                                      final_only=True, on_step=on_step)
            return {"model": name, **{key: summary[key] for key in SUMMARY_FIELDS}}

        job = self._training.submit("train-seg", lambda progress: run_training(
            progress, work, self.root / f".{name}.partial", budget_minutes, max_steps), label=name)
        return {"job": job, "kind": "train-seg", "model": name}

    def start_finetune(self, *, name: str | None = None, method: str = "lora", rank: int | None = None,
                       budget_minutes: float = 10.0, max_steps: int | None = None) -> dict[str, str]:
        """Queue ``medfm finetune`` of the promptable segmenter on the final annotation versions (every labelled pixel
        is the structure) as a job: ``{"job", "kind": "finetune", "adapter", "base_model"}``; checked now as
        :meth:`start_training` is. ``rank``: that of ``medfm finetune --rank`` (default 8)."""
        from medfm.models.adapters import DEFAULT_RANK, check_method
        from medfm.train.finetune import finetune

        from medfm.models.adapters import add_adapter
        from medfm.models.adapters.file import network_of
        from medfm.models.registry import create_segmenter

        rank = DEFAULT_RANK if rank is None else rank
        check_budget(budget_minutes)
        check_method(method, rank)
        base = create_segmenter(self.base_segmenter)  # a method the base cannot take is refused now, not by a failed job
        add_adapter(network_of(base), method, rank, base.info.name)
        name = name or datetime.now(timezone.utc).strftime("adapter-%Y%m%d-%H%M%S")
        out = self.adapters / f"{name}.safetensors"
        self._check_new_name(name, out, "adapter")
        self._check_training_set()
        self.adapters.mkdir(parents=True, exist_ok=True)

        def work(on_step: Callable[[int, float], None]) -> dict[str, Any]:
            summary = finetune(self.base_segmenter, self.annotations, out, method=method, rank=rank,
                               budget_minutes=budget_minutes, max_steps=max_steps, catalog=self.catalog_url,
                               final_only=True, on_step=on_step)
            return {"adapter": name, "base_model": summary["base_model"], "method": method, "rank": rank,
                    **{key: summary[key] for key in FINETUNE_SUMMARY_FIELDS}}

        job = self._training.submit("finetune", lambda progress: run_training(
            progress, work, self.adapters / f".{out.name}.partial", budget_minutes, max_steps), label=name)
        return {"job": job, "kind": "finetune", "adapter": name, "base_model": self.base_segmenter}

    def adapter_path(self, name: str) -> Path:
        """The file of the adapter ``name`` fine-tuned here; :class:`ModelNotFound` when there is none."""
        path = self.adapters / f"{name}.safetensors"
        if not (NAME_PATTERN.fullmatch(name) and path.is_file()):
            raise ModelNotFound(f"no adapter {name!r} fine-tuned here")
        return path

    def segmenter(self, name: str) -> AutoSegmenter:
        """The trained model ``name`` (kept loaded until another is asked for); call it only while holding :attr:`lock`."""
        from medfm.models.registry import create_auto_segmenter

        if not (NAME_PATTERN.fullmatch(name) and (self.root / name / "config.json").is_file()):
            raise ModelNotFound(f"no trained model {name!r}")
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = (name, create_auto_segmenter(self.root / name))
        return self._loaded[1]

    def least_confident(self, name: str, image_ids: Sequence[int], load: Callable[[int], Image],
                        measure: str = "entropy") -> tuple[int, float] | None:
        """``(image id, uncertainty)`` of the image model ``name`` is least sure of among the first :data:`MAX_RANKED`
        of ``image_ids`` that ``load`` reads (:func:`~medfm.tasks.auto_segment.uncertainty` by ``measure``; scores
        are remembered); None when none can be read."""
        from medfm.tasks.auto_segment import MEASURES, uncertainty

        if measure not in MEASURES:
            raise MedfmError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
        with self.lock:
            weights = self.segmenter(name).info.weights_sha256  # 404 for an unknown model before any image is read
        scores = {}
        for image_id in image_ids[:MAX_RANKED]:
            key = (weights, measure, image_id)
            if key not in self._uncertainty:
                try:
                    image = load(image_id)
                except MedfmError:  # unreadable: the plain "next" still offers it
                    continue
                with self.lock:
                    self._uncertainty[key] = uncertainty(image, self.segmenter(name), f"image {image_id}", measure=measure)
            scores[image_id] = self._uncertainty[key]
        return max(scores.items(), key=lambda item: item[1]) if scores else None
