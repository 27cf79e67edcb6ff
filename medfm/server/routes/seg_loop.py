"""The annotate → train → auto-segment loop: train an automatic segmenter or fine-tune the promptable one on
final annotation versions, list what was trained, propose draft versions on an image or a selection, and find
the next image that has no final version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictInt

from medfm.errors import MedfmError
from medfm.server.annotations import check_name
from medfm.server.limits import FiniteFloat, StructureName
from medfm.server.seg_models import MAX_BUDGET_MINUTES
from medfm.server.state import ServerState, get_state
from medfm.structures import default_color

router = APIRouter(prefix="/api", tags=["segmentation models"])

#: Optimiser steps one training may be capped at.
MAX_STEPS = 1_000_000
#: The annotation name an automatic segmentation is saved under unless the client names one.
AUTO_NAME = "auto"
#: Images one auto-segment job may take.
MAX_SELECTED = 1000
#: Adapter rank / bottleneck / prompt tokens one fine-tuning may ask for.
MAX_RANK = 256


class TrainIn(BaseModel):
    name: str | None = Field(None, max_length=64)
    labels: dict[Annotated[int, Field(ge=1, le=255)], StructureName] | None = Field(None, max_length=255)
    budget_minutes: FiniteFloat = Field(10.0, gt=0, le=MAX_BUDGET_MINUTES)
    max_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS)] | None = None
    architecture: str | None = Field(None, max_length=64)


@router.post("/train/seg")
def train_seg(body: TrainIn, state: ServerState = Depends(get_state)) -> dict[str, str]:
    """Start training an automatic segmenter on the catalog's final annotation versions: ``{"job", "kind", "model"}``
    (poll and cancel it under /api/jobs); 409 while another training (of either kind) runs."""
    return state.seg_models.start_training(name=body.name, labels=body.labels, budget_minutes=body.budget_minutes,
                                           max_steps=body.max_steps, architecture=body.architecture)


class FinetuneIn(BaseModel):
    name: str | None = Field(None, max_length=64)
    method: str = Field("lora", max_length=16)
    rank: Annotated[StrictInt, Field(ge=1, le=MAX_RANK)] | None = None
    budget_minutes: FiniteFloat = Field(10.0, gt=0, le=MAX_BUDGET_MINUTES)
    max_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS)] | None = None


@router.post("/train/finetune")
def train_finetune(body: FinetuneIn, state: ServerState = Depends(get_state)) -> dict[str, str]:
    """Start fine-tuning the server's promptable segmenter (``medfm finetune``: LoRA, DD-Adapter, VPT or full) on the
    catalog's final annotation versions: ``{"job", "kind", "adapter", "base_model"}`` (poll and cancel it under
    /api/jobs); 409 while another training (of either kind) runs."""
    return state.seg_models.start_finetune(name=body.name, method=body.method, rank=body.rank,
                                           budget_minutes=body.budget_minutes, max_steps=body.max_steps)


@router.get("/seg-models")
def seg_models(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The trained models, newest first (plan, labels, validation Dice/HD95), the adapters fine-tuned here, the
    promptable segmenter in use (``{"name", "adapter"}``), and the training running, if any (as its start answered)."""
    return {"models": state.seg_models.list(), "adapters": state.seg_models.list_adapters(),
            "segmenter": state.segmenter_in_use(), "training": state.seg_models.training}


class SegmenterAdapterIn(BaseModel):
    adapter: str | None = Field(max_length=64)


@router.put("/segmenter/adapter")
def use_segmenter_adapter(body: SegmenterAdapterIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Prompts segment from now on with the adapter ``adapter`` fine-tuned here (or, with ``null``, with the base
    model), without restarting the server: ``{"name", "adapter"}``; 404 for an adapter not fine-tuned here, 400 for
    one made for another base model."""
    return state.use_segmenter_adapter(body.adapter)


class AutoSegmentOptions(BaseModel):
    model: str = Field(max_length=64)
    name: str = AUTO_NAME
    flips: bool = False
    largest_component: bool = False


class AutoSegmentIn(AutoSegmentOptions):
    image_id: int


@router.post("/segment/auto")
def segment_auto(body: AutoSegmentIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Run a trained model on a catalog image and save its label map as a new draft version of ``name``
    (a save never replaces a version, final or not): the version's summary and each label's mean confidence."""
    check_name(body.name)
    return propose(state, body.image_id, body.model, body.name, body.flips, body.largest_component)


def propose(state: ServerState, image_id: int, model: str, name: str, flips: bool, largest_component: bool) -> dict[str, Any]:
    """Model ``model``'s label map of image ``image_id``, saved as a new draft version of ``name`` (its author the
    model; its provenance names the model's weights): the version's summary, ``"model"`` and ``"confidence"``."""
    from medfm.tasks.auto_segment import auto_segment

    loaded = state.load_image(image_id)
    with state.seg_models.lock:
        segmenter = state.seg_models.segmenter(model)
        labels = auto_segment(loaded.image, segmenter, f"image {image_id}", flips=flips, largest_component=largest_component)
    labels.phi = {}
    names = segmenter.plan.labels
    sidecar = {"image_id": image_id, "author": model,
               "labels": {str(value): {"name": names[value], "color": default_color(value)} for value in sorted(names)}}
    saved = state.annotations.save(image_id, name, labels, "nifti", sidecar)
    confidence = {str(s["label"]): s["planes"][0]["score"] for s in labels.provenance.structures}
    return {**saved, "model": model, "confidence": confidence}


class AutoSegmentManyIn(AutoSegmentOptions):
    image_ids: list[int] = Field(min_length=1, max_length=MAX_SELECTED)


@router.post("/segment/auto/batch")
def segment_auto_batch(body: AutoSegmentManyIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Auto-segment each selected image as ``/segment/auto`` does, as a job (progress: images done; cancel it under
    /api/jobs, the versions saved so far stay): ``{"job", "kind": "auto-segment", "model", "images"}``. Its result:
    ``{"model", "name", "saved": [{"image_id", "version", "confidence"}], "failed": [{"image_id", "error"}]}``
    (an image that cannot be segmented is reported and the others go on)."""
    check_name(body.name)
    image_ids = list(dict.fromkeys(body.image_ids))
    for image_id in image_ids:
        state.record(image_id)  # 404 for an unknown image, before anything runs
    with state.seg_models.lock:
        state.seg_models.segmenter(body.model)  # 404 for an unknown model; loaded for the job

    def work(progress) -> dict[str, Any]:
        saved, failed = [], []
        for done, image_id in enumerate(image_ids):
            progress(done, len(image_ids))
            try:
                version = propose(state, image_id, body.model, body.name, body.flips, body.largest_component)
            except MedfmError as exc:
                failed.append({"image_id": image_id, "error": str(exc).splitlines()[0]})
                continue
            saved.append({"image_id": image_id, "version": version["version"], "confidence": version["confidence"]})
        progress(len(image_ids), len(image_ids))
        return {"model": body.model, "name": body.name, "saved": saved, "failed": failed}

    return {"job": state.jobs.submit("auto-segment", work), "kind": "auto-segment", "model": body.model,
            "images": len(image_ids)}


@router.get("/unlabelled/next")
def next_unlabelled(after: int | None = None, model: str | None = None, measure: str = "entropy",
                    state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The next catalog image with no version marked final: ``{"image_id"`` (null when every image has one),
    ``"remaining"`` (how many have none), ``"order"``, ``"measure"``, ``"uncertainty"}``. Without ``model``: the
    first after ``after`` in catalog order (then round again); with it, the one the model is least sure of among
    the next ``MAX_RANKED`` in that order (active learning), by ``measure``: ``entropy`` (mean entropy) or
    ``mc-dropout`` (Monte Carlo dropout disagreement); an unknown or unreadable model is a 404/400 as for auto-segment."""
    final = state.annotations.final_image_ids()
    ids = [entry.id for entry in state.catalog.overview() if entry.id not in final]
    # the open image (``after``) last of all: "Next" moves on, unless nothing else is left
    later = ([i for i in ids if after is None or i > after] + [i for i in ids if after is not None and i < after]
             or [i for i in ids if i == after])
    answer = {"image_id": later[0] if later else None, "remaining": len(ids), "order": "catalog", "measure": None,
              "uncertainty": None}
    if model is None or not later:
        return answer
    ranked = state.seg_models.least_confident(model, later, lambda image_id: state.load_image(image_id).image, measure)
    if ranked is None:
        return answer
    return {**answer, "image_id": ranked[0], "order": "least-confident", "measure": measure, "uncertainty": ranked[1]}
