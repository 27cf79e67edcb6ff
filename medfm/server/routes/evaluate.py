"""Comparing two saved annotation versions of one image."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from medfm.errors import MedfmError
from medfm.eval.seg_metrics import mean_over_labels, score_label_maps
from medfm.server.routes.sessions import AnnotationRef
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/evaluate", tags=["evaluate"])


class EvaluateIn(BaseModel):
    image_id: int
    prediction: AnnotationRef
    reference: AnnotationRef
    tolerance_mm: float = Field(2.0, ge=0, allow_inf_nan=False)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: an undefined metric is null."""
    return value if math.isfinite(value) else None


@router.post("/segmentation")
def evaluate_segmentation(body: EvaluateIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    loaded = state.load_image(body.image_id)
    image = loaded.image
    pred = state.annotations.labels(body.image_id, body.prediction.name, body.prediction.version, image, loaded.series)
    ref = state.annotations.labels(body.image_id, body.reference.name, body.reference.version, image, loaded.series)
    if image.num_frames != 1:
        raise MedfmError("evaluation compares volumes or 2D images; this image has several frames")
    pred, ref = pred[..., 0], ref[..., 0]
    labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    scores = score_label_maps(pred, ref, image.spacing, labels, body.tolerance_mm)
    return {
        "labels": {str(label): {k: _finite(v) for k, v in s.as_dict().items()} for label, s in scores.items()},
        "mean": {k: _finite(v) for k, v in mean_over_labels(scores).items()},
        "tolerance_mm": body.tolerance_mm,
    }
