"""Interactive segmentation sessions: prompts in display pixels, masks back as PNG."""

from __future__ import annotations

import base64
from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from medfm.errors import MedfmError
from medfm.server.display import label_png
from medfm.server.limits import (
    MAX_POINTS, MAX_SCRIBBLE_POINTS, Colour, FiniteFloat, LabelValue, Point, StructureName,
)
from medfm.server.sessions import SegmentationSession, interaction
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class AnnotationRef(BaseModel):
    name: str
    version: int


class NewSession(BaseModel):
    image_id: int
    annotation: AnnotationRef | None = None


class ScribbleIn(BaseModel):
    points: list[Point] = Field(min_length=1, max_length=MAX_SCRIBBLE_POINTS)
    positive: bool = True


class PromptIn(BaseModel):
    k: int = 0
    t: int = 0
    label: LabelValue = 1
    label_name: StructureName | None = None
    color: Colour | None = None
    points: list[Point] = Field(default=[], max_length=MAX_POINTS)
    point_labels: list[Literal[0, 1]] = Field(default=[], max_length=MAX_POINTS)
    box: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    scribble: ScribbleIn | None = None


class PropagateIn(BaseModel):
    label: LabelValue = 1
    axis: Literal["k", "t"] = "k"


class LabelIn(BaseModel):
    label: LabelValue
    name: StructureName | None = None
    color: Colour | None = None


class SaveIn(BaseModel):
    name: str
    format: str = "nifti"


def labels_json(session: SegmentationSession) -> dict[str, dict[str, str]]:
    return {str(value): dict(info) for value, info in sorted(session.label_info.items())}


def plane_state(session: SegmentationSession, k: int, t: int, score: float | None = None) -> dict[str, Any]:
    """``PlaneState``: the plane's label values as a display-oriented PNG, and the session's state."""
    display = session.display
    png = label_png(display.plane_to_display(session.plane(k, t)))
    return {
        "k": k, "t": t, "mask": "data:image/png;base64," + base64.b64encode(png).decode(), "score": score,
        "labels": labels_json(session), "can_undo": bool(session.undo_stack), "can_redo": bool(session.redo_stack),
        "revision": session.revision,
    }


@router.post("")
def open_session(body: NewSession, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    loaded = state.load_image(body.image_id)
    labels, label_info = None, None
    if body.annotation is not None:
        ref = body.annotation
        labels = state.annotations.labels(body.image_id, ref.name, ref.version, loaded.image, loaded.series)
        sidecar = state.annotations.sidecar(body.image_id, ref.name, ref.version)
        label_info = {int(value): info for value, info in sidecar.get("labels", {}).items()}
    session = state.sessions.add(SegmentationSession(body.image_id, loaded.image, labels, label_info))
    return {"session": session.id, "image_id": body.image_id, "labels": labels_json(session)}


@router.post("/{session_id}/prompts")
def add_prompt(session_id: str, body: PromptIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    if not (body.points or body.box or body.scribble):
        raise MedfmError("a prompt needs points, a box or a scribble")
    if len(body.points) != len(body.point_labels):
        raise MedfmError(f"points and point_labels must be as many; got {len(body.points)} and {len(body.point_labels)}")
    session = state.sessions.get(session_id)
    display = session.display
    prompt = interaction(
        [display.point_to_plane(x, y) for x, y in body.points], body.point_labels,
        display.box_to_plane(body.box) if body.box else None,
        ([display.point_to_plane(x, y) for x, y in body.scribble.points], body.scribble.positive) if body.scribble else None,
    )
    segmenter = state.segmenter
    with session.lock:
        session.set_label(body.label, body.label_name, body.color)
        score = session.interact(segmenter, state.segmenter_lock, body.k, body.t, body.label, prompt)
        state.sessions.changed(session)
        return plane_state(session, body.k, body.t, score)


@router.get("/{session_id}/mask")
def get_mask(session_id: str, k: int = 0, t: int = 0, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        return plane_state(session, k, t)


@router.post("/{session_id}/undo")
def undo(session_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        plane = session.undo()
        state.sessions.changed(session)
        return plane_state(session, *plane)


@router.post("/{session_id}/redo")
def redo(session_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        plane = session.redo()
        state.sessions.changed(session)
        return plane_state(session, *plane)


@router.post("/{session_id}/propagate")
def propagate(session_id: str, body: PropagateIn, state: ServerState = Depends(get_state)) -> dict[str, str]:
    session = state.sessions.get(session_id)

    def work(progress) -> dict[str, Any]:
        segmenter = state.segmenter
        with session.lock:
            k, t = session.propagate(segmenter, state.segmenter_lock, body.label, body.axis)
            state.sessions.changed(session)
            planes = int((session.labels == body.label).any(axis=(0, 1)).sum())
            progress(1, 1)
            return {"k": k, "t": t, "planes": planes, "revision": session.revision}

    return {"job": state.jobs.submit("propagate", work)}


@router.post("/{session_id}/labels")
def set_label(session_id: str, body: LabelIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        session.set_label(body.label, body.name, body.color)
        return {"labels": labels_json(session)}


@router.post("/{session_id}/save")
def save(session_id: str, body: SaveIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    loaded = state.load_image(session.image_id)
    segmenter = state.segmenter
    with session.lock:
        labels = session.label_image(segmenter.info)
        sidecar = {"image_id": session.image_id, "labels": labels_json(session)}
    return state.annotations.save(session.image_id, body.name, labels, body.format, sidecar, loaded.series)


@router.delete("/{session_id}")
def close_session(session_id: str, state: ServerState = Depends(get_state)) -> dict[str, str]:
    state.sessions.remove(session_id)
    return {"session": session_id, "state": "closed"}
