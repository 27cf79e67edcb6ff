"""The annotate → train → auto-segment loop: train on final annotation versions, list the trained models,
propose a draft version on an image, and find the next image that has no final version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictInt

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


class TrainIn(BaseModel):
    name: str | None = Field(None, max_length=64)
    labels: dict[Annotated[int, Field(ge=1, le=255)], StructureName] | None = Field(None, max_length=255)
    budget_minutes: FiniteFloat = Field(10.0, gt=0, le=MAX_BUDGET_MINUTES)
    max_steps: Annotated[StrictInt, Field(ge=1, le=MAX_STEPS)] | None = None
    architecture: str | None = Field(None, max_length=64)


@router.post("/train/seg")
def train_seg(body: TrainIn, state: ServerState = Depends(get_state)) -> dict[str, str]:
    """Start training an automatic segmenter on the catalog's final annotation versions: ``{"job", "model"}``
    (poll and cancel it under /api/jobs); 409 while another training runs."""
    return state.seg_models.start_training(name=body.name, labels=body.labels, budget_minutes=body.budget_minutes,
                                           max_steps=body.max_steps, architecture=body.architecture)


@router.get("/seg-models")
def seg_models(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The trained models, newest first (plan, labels, validation Dice/HD95), and the training running, if any."""
    return {"models": state.seg_models.list(), "training": state.seg_models.training}


class AutoSegmentIn(BaseModel):
    image_id: int
    model: str = Field(max_length=64)
    name: str = AUTO_NAME
    flips: bool = False
    largest_component: bool = False


@router.post("/segment/auto")
def segment_auto(body: AutoSegmentIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Run a trained model on a catalog image and save its label map as a new draft version of ``name``
    (a save never replaces a version, final or not): the version's summary and each label's mean confidence."""
    from medfm.tasks.auto_segment import auto_segment

    check_name(body.name)
    loaded = state.load_image(body.image_id)
    with state.seg_models.lock:
        segmenter = state.seg_models.segmenter(body.model)
        labels = auto_segment(loaded.image, segmenter, f"image {body.image_id}", flips=body.flips,
                              largest_component=body.largest_component)
    labels.phi = {}
    names = segmenter.plan.labels
    sidecar = {"image_id": body.image_id, "author": body.model,
               "labels": {str(value): {"name": names[value], "color": default_color(value)} for value in sorted(names)}}
    saved = state.annotations.save(body.image_id, body.name, labels, "nifti", sidecar)
    confidence = {str(s["label"]): s["planes"][0]["score"] for s in labels.provenance.structures}
    return {**saved, "model": body.model, "confidence": confidence}


@router.get("/unlabelled/next")
def next_unlabelled(after: int | None = None, model: str | None = None,
                    state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The next catalog image with no version marked final: ``{"image_id"`` (null when every image has one),
    ``"remaining"`` (how many have none), ``"order"``, ``"uncertainty"}``. Without ``model``: the first after
    ``after`` in catalog order (then round again); with it, the one the model is least sure of among the next
    ``MAX_RANKED`` in that order (active learning; an unknown or unreadable model is a 404/400 as for auto-segment)."""
    final = state.annotations.final_image_ids()
    ids = [entry.id for entry in state.catalog.overview() if entry.id not in final]
    # the open image (``after``) last of all: "Next" moves on, unless nothing else is left
    later = ([i for i in ids if after is None or i > after] + [i for i in ids if after is not None and i < after]
             or [i for i in ids if i == after])
    answer = {"image_id": later[0] if later else None, "remaining": len(ids), "order": "catalog", "uncertainty": None}
    if model is None or not later:
        return answer
    ranked = state.seg_models.least_confident(model, later, lambda image_id: state.load_image(image_id).image)
    if ranked is None:
        return answer
    return {**answer, "image_id": ranked[0], "order": "least-confident", "uncertainty": ranked[1]}
