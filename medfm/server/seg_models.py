"""The workbench's annotate → train → auto-segment loop: automatic segmenters trained on the annotation
versions users marked final, kept under ``<data_dir>/models/seg/<name>``.

A model folder is what ``medfm train seg`` writes (``medfm segment --auto --model`` takes it too),
built in a hidden ``.<name>.partial`` folder that a cancelled or failed training removes, and that
the server removes at start-up (a killed training). One training runs at a time: each takes the
CPU cores it is given for its whole budget.
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


class ModelNotFound(NotFound):
    """No trained model of that name (404)."""


class SegModels:
    """The trained automatic segmenters under ``root``, the one training that may be running, and the
    last model used (loaded once: loading checks the weights' sha256)."""

    def __init__(self, root: Path, annotations: Path, catalog_url: str, jobs: Jobs) -> None:
        self.root = root
        self.annotations = annotations
        self.catalog_url = catalog_url
        #: held while a model is loaded or segments (one at a time: each uses every core)
        self.lock = threading.Lock()
        self._training = OneAtATime(jobs, "a training is already running (model {label}); wait for it or cancel it")
        self._loaded: tuple[str, AutoSegmenter] | None = None
        self._uncertainty: dict[tuple[str, int], float] = {}  # by (weights sha256, image id), for the server's life
        self._remove_partial()

    def _remove_partial(self) -> None:
        if self.root.is_dir():
            for leftover in self.root.glob(".*.partial"):
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

    @property
    def training(self) -> dict[str, str] | None:
        """``{"job", "model"}`` of the training queued or running, else None."""
        running = self._training.running
        return None if running is None else {"job": running[0], "model": running[1]}

    def start_training(self, *, name: str | None = None, labels: Mapping[int, str] | None = None,
                       budget_minutes: float = 10.0, max_steps: int | None = None,
                       architecture: str | None = None) -> dict[str, str]:
        """Queue ``medfm train seg`` on the final annotation versions as a job: ``{"job", "model"}``.

        The training set is checked now (at least two images with final versions, in the catalog),
        so that bad input is refused at once rather than reported by a failed job.
        """
        from medfm.models.registry import list_auto_architectures
        from medfm.train.seg import collect_cases
        from medfm.train.seg_data import split_cases

        if not 0 < budget_minutes <= MAX_BUDGET_MINUTES:
            raise MedfmError(f"budget_minutes must be above 0 and at most {MAX_BUDGET_MINUTES:g}; got {budget_minutes}")
        if architecture is not None and architecture not in list_auto_architectures():
            raise MedfmError(f"architecture must be one of {', '.join(sorted(list_auto_architectures()))}; got {architecture!r}")
        name = name or datetime.now(timezone.utc).strftime("seg-%Y%m%d-%H%M%S")
        if not NAME_PATTERN.fullmatch(name):
            raise MedfmError(f"model name {name!r} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")
        if (self.root / name).exists():
            raise MedfmError(f"a model named {name!r} exists already; choose another name")
        if not self.annotations.is_dir():
            raise MedfmError("no saved annotations yet: save some and mark them final to train on them")
        split_cases(collect_cases(self.annotations, catalog=self.catalog_url, final_only=True))
        self.root.mkdir(parents=True, exist_ok=True)
        job = self._training.submit("train-seg", lambda progress: self._train(
            progress, name, labels, budget_minutes, max_steps, architecture), label=name)
        return {"job": job, "model": name}

    def _train(self, progress: Progress, name: str, labels: Mapping[int, str] | None, budget_minutes: float,
               max_steps: int | None, architecture: str | None) -> dict[str, Any]:
        """Job work: train into ``root/name``; progress in percent of the budget (or of ``max_steps`` if further)."""
        from medfm.train.seg import train_segmenter

        started = time.monotonic()

        def on_step(step: int, _loss: float) -> None:
            fraction = (time.monotonic() - started) / (budget_minutes * 60)
            if max_steps:
                fraction = max(fraction, step / max_steps)
            progress(min(99, int(100 * fraction)), 100)

        try:
            progress(0, 100)
            summary = train_segmenter(self.annotations, self.root / name, labels=labels, architecture=architecture,
                                      budget_minutes=budget_minutes, max_steps=max_steps, catalog=self.catalog_url,
                                      final_only=True, on_step=on_step)
        except BaseException:
            shutil.rmtree(self.root / f".{name}.partial", ignore_errors=True)
            raise
        return {"model": name, **{key: summary[key] for key in SUMMARY_FIELDS}}

    def segmenter(self, name: str) -> AutoSegmenter:
        """The trained model ``name`` (kept loaded until another is asked for); call it only while holding :attr:`lock`."""
        from medfm.models.registry import create_auto_segmenter

        if not (NAME_PATTERN.fullmatch(name) and (self.root / name / "config.json").is_file()):
            raise ModelNotFound(f"no trained model {name!r}")
        if self._loaded is None or self._loaded[0] != name:
            self._loaded = (name, create_auto_segmenter(self.root / name))
        return self._loaded[1]

    def least_confident(self, name: str, image_ids: Sequence[int], load: Callable[[int], Image]) -> tuple[int, float] | None:
        """``(image id, uncertainty)`` of the image model ``name`` is least sure of among the first :data:`MAX_RANKED`
        of ``image_ids`` that ``load`` reads (:func:`~medfm.tasks.auto_segment.uncertainty`; scores are remembered);
        None when none can be read."""
        from medfm.tasks.auto_segment import uncertainty

        with self.lock:
            weights = self.segmenter(name).info.weights_sha256  # 404 for an unknown model before any image is read
        scores = {}
        for image_id in image_ids[:MAX_RANKED]:
            if (weights, image_id) not in self._uncertainty:
                try:
                    image = load(image_id)
                except MedfmError:  # unreadable: the plain "next" still offers it
                    continue
                with self.lock:
                    self._uncertainty[weights, image_id] = uncertainty(image, self.segmenter(name), f"image {image_id}")
            scores[image_id] = self._uncertainty[weights, image_id]
        return max(scores.items(), key=lambda item: item[1]) if scores else None
