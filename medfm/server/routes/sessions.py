"""Interactive segmentation sessions: prompts in display pixels, masks back as PNG."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from medfm.errors import MedfmError
from medfm.server.display import AXIS_NAMES, decode_label_png, label_png, png_data_url
from medfm.server.limits import (
    MAX_POINTS, MAX_SCRIBBLE_POINTS, Colour, FiniteFloat, LabelValue, Point, StructureCode, StructureName,
)
from medfm.server.sessions import MAX_SMOOTH_SIGMA, SegmentationSession, check_unlocked, interaction
from medfm.tasks.measure import roi_statistics
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

#: The longest edited plane a client may send: a data URL of a PNG (base64 of at most ~24 MB).
MAX_MASK_CHARS = 32 * 2**20


class AnnotationRef(BaseModel):
    name: str
    version: int


class NewSession(BaseModel):
    image_id: int
    annotation: AnnotationRef | None = None


class ScribbleIn(BaseModel):
    points: list[Point] = Field(min_length=1, max_length=MAX_SCRIBBLE_POINTS)
    positive: bool = True


class PromptTarget(BaseModel):
    """Where a prompt's mask goes: the plane, the structure (value, name, colour, code), and the locked structures."""
    k: int = 0
    t: int = 0
    label: LabelValue = 1
    label_name: StructureName | None = None
    color: Colour | None = None
    code: StructureCode | None = None
    locked: list[LabelValue] = Field(default=[], max_length=255)


class PromptIn(PromptTarget):
    points: list[Point] = Field(default=[], max_length=MAX_POINTS)
    point_labels: list[Literal[0, 1]] = Field(default=[], max_length=MAX_POINTS)
    box: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = None
    scribble: ScribbleIn | None = None


class PlaneIn(BaseModel):
    k: int = 0
    t: int = 0
    mask: str = Field(max_length=MAX_MASK_CHARS)
    locked: list[LabelValue] = Field(default=[], max_length=255)
    axis: Literal["k", "j", "i"] = "k"
    index: int | None = None


class FillIn(BaseModel):
    k: int = 0
    t: int = 0
    label: LabelValue = 1
    locked: list[LabelValue] = Field(default=[], max_length=255)


class SmoothIn(BaseModel):
    k: int = 0
    t: int = 0
    label: LabelValue = 1
    sigma: FiniteFloat = Field(default=1.0, gt=0, le=MAX_SMOOTH_SIGMA)
    whole: bool = False
    locked: list[LabelValue] = Field(default=[], max_length=255)


#: Planes a propagation reached with a score under this are marked for review (it stops below PropagationRule.min_score).
REVIEW_BELOW = 0.8


class PropagateIn(BaseModel):
    label: LabelValue = 1
    axis: Literal["k", "t"] = "k"
    locked: list[LabelValue] = Field(default=[], max_length=255)


class LabelIn(BaseModel):
    label: LabelValue
    name: StructureName | None = None
    color: Colour | None = None
    code: StructureCode | None = None


class SaveIn(BaseModel):
    name: str
    format: str = "nifti"
    author: StructureName | None = None


def labels_json(session: SegmentationSession) -> dict[str, dict[str, Any]]:
    """``{value: {"name", "color", "code"?}}`` of the session's structures."""
    return {str(value): dict(info) for value, info in sorted(session.label_info.items())}


def plane_state(session: SegmentationSession, k: int, t: int, score: float | None = None) -> dict[str, Any]:
    """``PlaneState``: the plane's label values as a display-oriented PNG, and the session's state."""
    display = session.display
    png = label_png(display.plane_to_display(session.plane(k, t)))
    return {
        "k": k, "t": t, "mask": png_data_url(png), "score": score,
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
        session.set_label(body.label, body.label_name, body.color, body.code)
        score = session.interact(segmenter, state.segmenter_lock, body.k, body.t, body.label, prompt, frozenset(body.locked))
        state.sessions.changed(session)
        return plane_state(session, body.k, body.t, score)


@router.get("/{session_id}/mask")
def get_mask(session_id: str, k: int = 0, t: int = 0, axis: str = "k", index: int | None = None,
             state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The session's plane ``(k, t)``, or with ``axis`` ``j``/``i`` and ``index`` a reformatted plane's labels."""
    session = state.sessions.get(session_id)
    if axis == "k":
        with session.lock:
            return plane_state(session, k, t)
    if axis not in AXIS_NAMES:
        raise MedfmError(f"axis must be one of {', '.join(AXIS_NAMES)}; got {axis!r}")
    if index is None:
        raise MedfmError(f"a plane across {axis} needs its index")
    view = state.load_image(session.image_id).view(AXIS_NAMES[axis])
    with session.lock:
        png = label_png(view.plane_to_display(view.plane(session.labels, index, t)))
        revision = session.revision
    return {"axis": axis, "index": index, "t": t, "mask": png_data_url(png),
            "revision": revision}


@router.put("/{session_id}/planes")
def replace_plane(session_id: str, body: PlaneIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """An edited label plane (brush, eraser) in display orientation, as one undoable step: plane ``(k, t)``,
    or with ``axis`` ``j``/``i`` and ``index`` an MPR view's plane."""
    session = state.sessions.get(session_id)
    if body.axis == "k":
        display = session.display
        values = decode_label_png(body.mask, display.width, display.height)
        with session.lock:
            session.replace_plane(body.k, body.t, display.plane_to_display(values), frozenset(body.locked))
            state.sessions.changed(session)
            return plane_state(session, body.k, body.t)
    if body.index is None:
        raise MedfmError(f"a plane across {body.axis} needs its index")
    view = state.load_image(session.image_id).view(AXIS_NAMES[body.axis])
    values = decode_label_png(body.mask, view.width, view.height)
    with session.lock:
        session.replace_view_plane(view, body.index, body.t, view.plane_to_display(values), frozenset(body.locked))
        state.sessions.changed(session)
        png = label_png(view.plane_to_display(view.plane(session.labels, body.index, body.t)))
        return {"axis": body.axis, "index": body.index, "t": body.t, "mask": png_data_url(png),
                "labels": labels_json(session), "can_undo": bool(session.undo_stack), "can_redo": bool(session.redo_stack),
                "revision": session.revision}


@router.post("/{session_id}/fill-holes")
def fill_holes(session_id: str, body: FillIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        added = session.fill_holes(body.k, body.t, body.label, frozenset(body.locked))
        state.sessions.changed(session)
        return {**plane_state(session, body.k, body.t), "filled": added}


@router.post("/{session_id}/smooth")
def smooth(session_id: str, body: SmoothIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Smooths a structure's outline on the plane, or with ``whole`` through the volume (one undoable step)."""
    session = state.sessions.get(session_id)
    with session.lock:
        changed = session.smooth(body.k, body.t, body.label, body.sigma, body.whole, frozenset(body.locked))
        state.sessions.changed(session)
        return {**plane_state(session, body.k, body.t), "changed": changed}


def review(session: SegmentationSession, label: int, below: float) -> dict[str, Any]:
    """The planes structure ``label``'s last propagation reached, each with its score, those under ``below`` marked low."""
    scores = session.propagation_scores.get(label, {})
    return {"label": label, "below": below, "planes": [
        {"k": k, "t": t, "score": round(score, 4), "low": score < below} for (k, t), score in sorted(scores.items())
    ]}


@router.get("/{session_id}/propagation")
def propagation_review(session_id: str, label: int = 1, below: float = REVIEW_BELOW,
                       state: ServerState = Depends(get_state)) -> dict[str, Any]:
    if not 0 < label < 256:
        raise MedfmError(f"label must be an integer from 1 to 255; got {label}")
    if not 0 <= below <= 1:
        raise MedfmError(f"below must be a score from 0 to 1; got {below}")
    session = state.sessions.get(session_id)
    with session.lock:
        return review(session, label, below)


@router.get("/{session_id}/measure")
def measure(session_id: str, label: int, k: int = 0, t: int = 0, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """ROI statistics of structure ``label``: on plane ``(k, t)`` and over the whole structure."""
    if not 0 < label < 256:
        raise MedfmError(f"label must be an integer from 1 to 255; got {label}")
    session = state.sessions.get(session_id)
    if session.image.num_channels != 1:
        raise MedfmError("statistics need a grey image; this one is in colour")
    session.image.check_plane_index(k, t)
    with session.lock:
        return roi_statistics(session.image, session.labels, label, k, t)


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
    check_unlocked(body.label, frozenset(body.locked))  # said now, not by a failed job
    session = state.sessions.get(session_id)

    def work(progress) -> dict[str, Any]:
        segmenter = state.segmenter
        with session.lock:
            k, t = session.propagate(segmenter, state.segmenter_lock, body.label, body.axis, frozenset(body.locked))
            state.sessions.changed(session)
            planes = int((session.labels == body.label).any(axis=(0, 1)).sum())
            progress(1, 1)
            return {"k": k, "t": t, "planes": planes, "revision": session.revision,
                    "review": review(session, body.label, REVIEW_BELOW)}

    return {"job": state.jobs.submit("propagate", work)}


@router.post("/{session_id}/labels")
def set_label(session_id: str, body: LabelIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    with session.lock:
        session.set_label(body.label, body.name, body.color, body.code)
        return {"labels": labels_json(session)}


@router.post("/{session_id}/save")
def save(session_id: str, body: SaveIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    session = state.sessions.get(session_id)
    loaded = state.load_image(session.image_id)
    segmenter = state.segmenter
    with session.lock:
        labels = session.label_image(segmenter.info)
        sidecar = {"image_id": session.image_id, "labels": labels_json(session), "author": body.author}
    return state.annotations.save(session.image_id, body.name, labels, body.format, sidecar, loaded.series)


@router.delete("/{session_id}")
def close_session(session_id: str, state: ServerState = Depends(get_state)) -> dict[str, str]:
    state.sessions.remove(session_id)
    return {"session": session_id, "state": "closed"}
