"""Similar-case search over the server's index of the catalog, index builds, zero-shot classification."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from medfm.errors import MedfmError
from medfm.index import Index
from medfm.server.routes.catalog import display_name
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/search")
def search(image_id: int | None = None, text: str | None = None, k: int = 10,
           state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.tasks.search import embed_query

    if (image_id is None) == (text is None):
        raise MedfmError("give exactly one of image_id and text")
    if not 1 <= k <= 1000:
        raise MedfmError(f"k must be from 1 to 1000; got {k}")
    with state.encoder_lock:
        index = state.index()
        if index is None:
            raise MedfmError("the catalog is not indexed yet: POST /api/index/build first")
        index.check_model(state.encoder.info)
        query = _stored_vector(index, image_id) if image_id is not None else None
        if query is None:
            image = state.load_image(image_id).image if image_id is not None else None
            query = embed_query(state.encoder, image=image, text=text)
        hits = index.search(query, k)
    return {"hits": [_hit(state, hit.id, hit.score) for hit in hits]}


def _stored_vector(index: Index, image_id: int) -> np.ndarray | None:
    """An indexed image's stored embedding (nothing to read or encode again); ``None`` if not indexed yet."""
    try:
        return index.vectors([image_id])[0]
    except MedfmError:
        return None


def _hit(state: ServerState, image_id: int, score: float) -> dict[str, Any]:
    record = state.record(image_id)
    return {"image_id": image_id, "name": display_name(record), "score": round(float(score), 6), "modality": record.modality,
            "body_part": record.body_part, "dataset": record.dataset, "description": record.description}


@router.post("/index/build")
def build_index(state: ServerState = Depends(get_state)) -> dict[str, str]:
    return {"job": state.index_new_images()}


class ClassifyIn(BaseModel):
    labels: list[str] = Field(min_length=2)


@router.post("/images/{image_id}/classify")
def classify(image_id: int, body: ClassifyIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.tasks.classify import classify as classify_images

    record = state.record(image_id)
    try:
        with state.encoder_lock:
            (result,) = classify_images([record], state.encoder, labels=body.labels)
    except MedfmError as exc:
        raise MedfmError(f"image {image_id} cannot be classified: {str(exc).rsplit(': ', 1)[-1]}") from None
    return {"probabilities": result["probabilities"], "prediction": result["prediction"], "model": result["model"]}
