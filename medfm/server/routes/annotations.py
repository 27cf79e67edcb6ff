"""Saved annotation versions of an image."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel

from medfm.server.state import ServerState, get_state
from medfm.server.versions import VersionStatus

router = APIRouter(prefix="/api/images/{image_id}/annotations", tags=["annotations"])

MEDIA_TYPES = {".dcm": "application/dicom", ".gz": "application/gzip"}


@router.get("")
def list_annotations(image_id: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    state.record(image_id)
    return {"annotations": state.annotations.list(image_id)}


@router.get("/{name}/{version}/file", response_class=FileResponse)
def annotation_file(image_id: int, name: str, version: int, state: ServerState = Depends(get_state)) -> FileResponse:
    path = state.annotations.file(image_id, name, version)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=f"{image_id}-{name}-{path.name}")


class StatusIn(BaseModel):
    status: VersionStatus


@router.patch("/{name}/{version}")
def set_status(image_id: int, name: str, version: int, body: StatusIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Mark a version draft or final."""
    state.record(image_id)
    return {"name": name, **state.annotations.set_status(image_id, name, version, body.status)}


@router.delete("/{name}/{version}")
def delete_version(image_id: int, name: str, version: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Delete a draft version (kept aside on disk; its number is never reused)."""
    state.record(image_id)
    state.annotations.delete(image_id, name, version)
    return {"name": name, "version": version, "state": "deleted"}
