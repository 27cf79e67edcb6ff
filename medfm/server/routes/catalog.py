"""Catalog and images: listing, details, planes as PNG, uploads and ingest."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Response

from medfm.catalog import ImageRecord
from medfm.errors import MedfmError
from medfm.server.display import render_png
from medfm.server.thumbnails import thumbnail_png
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["catalog"])

def display_name(record: ImageRecord) -> str:
    """A title for lists: the series description, else the file's name for files the user named
    (DICOM file names are machine-made and their folders may name the patient), else the modality."""
    if record.description:
        return record.description
    if record.format != "dicom":
        return Path(record.source_path).name
    return f"{record.modality} image"


def summary(record: ImageRecord, show_phi: bool = False) -> dict[str, Any]:
    """What clients see of a catalog image: never its path; patient data only when ``show_phi``."""
    shape = list(record.shape) + [1] * (5 - len(record.shape))
    return {
        "id": record.id, "name": display_name(record), "dataset": record.dataset, "format": record.format, "modality": record.modality,
        "body_part": record.body_part, "description": record.description, "shape": shape,
        "spacing": list(record.spacing), "orientation": record.orientation,
        "num_slices": shape[2], "num_frames": shape[3], "num_channels": shape[4],
        **({"phi": record.phi} if show_phi else {}),
    }


@router.get("/health")
def health(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm import __version__

    # "pacs" says only whether one is configured: its URL may carry credentials.
    return {"status": "ok", "version": __version__, "segmenter": state.settings.segmenter,
            "encoder": state.settings.encoder, "catalog_images": state.catalog.count(), "index_size": state.index_size,
            "pacs": bool(state.settings.pacs_url), "memory": state.memory()}


@router.get("/images")
def list_images(modality: str | None = None, body_part: str | None = None, dataset: str | None = None,
                text: str | None = None, limit: int | None = None, show_phi: bool = False,
                state: ServerState = Depends(get_state)) -> dict[str, Any]:
    if limit is not None and limit < 1:
        raise MedfmError(f"limit must be a positive number of images; got {limit}")
    if not text:
        records = state.catalog.query(modality=modality, body_part=body_part, dataset=dataset, limit=limit)
        return {"images": [summary(record, show_phi) for record in records]}
    # the text matches what a client is shown of an image, never its hidden source path
    needle = text.casefold()
    records = [record for record in state.catalog.query(modality=modality, body_part=body_part, dataset=dataset)
               if any(needle in value.casefold() for value in (display_name(record), record.description or "", record.dataset or ""))]
    return {"images": [summary(record, show_phi) for record in records[:limit]]}


@router.get("/images/{image_id}")
def image_details(image_id: int, show_phi: bool = False, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    loaded = state.load_image(image_id)
    center, width = loaded.window
    array = loaded.image.array
    return {
        **summary(loaded.record, show_phi), "display": loaded.display.to_dict(), "window": {"center": center, "width": width},
        "value_range": [float(array.min()), float(array.max())],
        "spacing_known": bool(loaded.image.metadata.get("spacing_known", True)),
    }


@router.get("/images/{image_id}/slice.png", response_class=Response)
def slice_png(image_id: int, k: int = 0, t: int = 0, center: float | None = None, width: float | None = None,
              state: ServerState = Depends(get_state)) -> Response:
    for name, value in (("center", center), ("width", width)):
        if value is not None and not math.isfinite(value):
            raise MedfmError(f"window {name} must be a finite number; got {value}")
    if width is not None and width <= 0:
        raise MedfmError(f"window width must be positive; got {width}")
    loaded = state.load_image(image_id)
    loaded.image.check_plane_index(k, t)
    default_center, default_width = loaded.window
    window = (default_center if center is None else center, default_width if width is None else width)
    return Response(render_png(loaded.image, k, t, loaded.display, window), media_type="image/png")


@router.get("/images/{image_id}/thumbnail.png", response_class=Response)
def thumbnail(image_id: int, state: ServerState = Depends(get_state)) -> Response:
    return Response(thumbnail_png(state.middle_plane(image_id)), media_type="image/png")
