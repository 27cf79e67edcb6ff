"""Catalog and images: listing, details, planes as PNG, uploads and ingest."""

from __future__ import annotations

import math
from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from medfm.catalog import ImageRecord
from medfm.catalog.browse import browse, display_name, pseudonym
from medfm.catalog.labels import SYNTHETIC
from medfm.catalog.store import MAX_DESCRIPTION
from medfm.errors import MedfmError
from medfm.server.display import AXIS_NAMES, MODALITY_UNITS, raw_plane, render_png
from medfm.server.thumbnails import thumbnail_png
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["catalog"])

def summary(record: ImageRecord, show_phi: bool = False) -> dict[str, Any]:
    """What clients see of a catalog image: never its path; patient data only when ``show_phi``;
    ``patient`` (a pseudonym) and ``study`` (the catalog's number for it) group series."""
    shape = list(record.shape) + [1] * (5 - len(record.shape))
    return {
        "id": record.id, "name": display_name(record), "dataset": record.dataset, "format": record.format, "modality": record.modality,
        "body_part": record.body_part, "description": record.description, "shape": shape,
        "spacing": list(record.spacing), "orientation": record.orientation,
        "num_slices": shape[2], "num_frames": shape[3], "num_channels": shape[4],
        "patient": pseudonym(record.patient_key), "study": record.study_id,
        "synthetic": record.tags.get(SYNTHETIC, "").lower() == "true",
        **({"phi": record.phi} if show_phi else {}),
    }


class RenameIn(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_DESCRIPTION)


@router.get("/health")
def health(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm import __version__

    # "pacs" says only whether one is configured: its URL may carry credentials.
    return {"status": "ok", "version": __version__, "segmenter": state.settings.segmenter,
            "encoder": state.settings.encoder, "catalog_images": state.catalog.count(), "index_size": state.index_size,
            "pacs": bool(state.settings.pacs_url), "memory": state.memory()}


@router.get("/images")
def list_images(modality: str | None = None, body_part: str | None = None, dataset: str | None = None,
                text: str | None = None, sort: str = "added", order: Literal["asc", "desc"] = "asc", offset: int = 0,
                limit: int | None = None, show_phi: bool = False, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    page = browse(state.catalog, modality=modality, body_part=body_part, dataset=dataset, text=text, sort=sort,
                  descending=order == "desc", offset=offset, limit=limit)
    return {"images": [summary(record, show_phi) for record in page.records], "total": page.total, "offset": page.offset,
            "modalities": state.catalog.modalities()}


@router.patch("/images/{image_id}")
def rename_image(image_id: int, body: RenameIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    state.record(image_id)  # 404 for an unknown id
    return summary(state.catalog.rename(image_id, body.name))


@router.delete("/images/{image_id}")
def delete_image(image_id: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    state.delete_image(image_id)
    return {"id": image_id, "state": "deleted"}


@router.get("/images/{image_id}")
def image_details(image_id: int, show_phi: bool = False, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    loaded = state.load_image(image_id)
    image = loaded.image
    center, width, source = loaded.initial_window
    array = image.array
    # reformatted views only where there is a volume to reformat; letters only where the affine places the patient
    axes = "kji" if image.shape[2] > 1 and image.num_channels == 1 else "k"
    views = {name: loaded.view(AXIS_NAMES[name]).view_dict(image) for name in axes}
    if not (image.shape[2] > 1 or loaded.record.format == "dicom"):
        for view in views.values():
            view["letters"] = None
    return {
        **summary(loaded.record, show_phi), "display": loaded.display.to_dict(),
        "window": {"center": center, "width": width, "source": source},
        "auto_window": dict(zip(("center", "width"), loaded.auto_window)),
        "value_range": [float(array.min()), float(array.max())], "units": MODALITY_UNITS.get(image.modality, ""),
        "spacing_known": bool(image.metadata.get("spacing_known", True)), "views": views,
        "first_frame": loaded.first_frame, "fps": image.metadata.get("fps"),
    }


@router.get("/images/{image_id}/raw", response_class=Response)
def raw_values(image_id: int, axis: str = "k", index: int = 0, t: int = 0,
               state: ServerState = Depends(get_state)) -> Response:
    if axis not in AXIS_NAMES:
        raise MedfmError(f"axis must be one of {', '.join(AXIS_NAMES)} (the voxel axis the plane crosses); got {axis!r}")
    loaded = state.load_image(image_id)
    view = loaded.view(AXIS_NAMES[axis])
    data, dtype = raw_plane(loaded.image, view, index, t)
    return Response(data, media_type="application/octet-stream",
                    headers={"X-Medfm-Shape": f"{view.height},{view.width}", "X-Medfm-Dtype": dtype})


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
