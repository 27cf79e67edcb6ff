"""Interactive segmentation sessions: one image, its label map, each structure's prompts, undo/redo.

A client sends one interaction at a time. The session adds it to the structure's earlier
prompts on that plane and predicts the plane again from all of them, with the previous
logits as ``mask_input``, so a negative click refines the mask instead of starting over.
Every change (an interaction, a propagation, an undo) is one step holding the planes and
prompt records it replaced, which makes undo and redo exact. Coordinates here are plane
pixels (:meth:`medfm.io.Image.frame`); :mod:`medfm.server.display` maps the browser's.
"""

from __future__ import annotations


import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.io import Image
from medfm.models.segmenters import Prompt, Scribble, Segmenter, SegmenterInfo
from medfm.provenance import pixels_id
from medfm.server.display import Display
from medfm.server.errors import NotFound
from medfm.server.limits import MAX_POINTS_PER_PLANE, MAX_SCRIBBLE_POINTS_PER_PLANE
from medfm.structures import default_color, term
from medfm.tasks.segment import propagate, segmentation_provenance

#: Undo steps kept per session (fewer when the sessions' memory runs short).
HISTORY = 100
#: The widest smoothing (Gaussian sigma, in pixels) one request may ask for.
MAX_SMOOTH_SIGMA = 10.0

Plane = tuple[int, int]
#: A structure on a plane: (label, k, t).
Key = tuple[int, int, int]


class SessionNotFound(NotFound):
    """No session with that id, or it expired (404)."""


@dataclass
class Structure:
    """One structure's interactions on one plane, the logits of its current mask and the model's score for it."""

    interactions: list[Prompt] = field(default_factory=list)
    logits: np.ndarray | None = None
    score: float | None = None
    #: where an interaction came from when the user did not draw it (``{index: {"text_prompt": ...}}``)
    origins: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: the model whose prediction the mask is (the server's segmenter can change between prompts)
    answered_by: SegmenterInfo | None = None

    def combined(self, label: int, k: int, t: int) -> Prompt:
        """All interactions as one prompt; the latest box stands (a box replaces the earlier one)."""
        boxes = [box for prompt in self.interactions for box in prompt.boxes]
        return Prompt(
            points=[p for prompt in self.interactions for p in prompt.points],
            point_labels=[v for prompt in self.interactions for v in prompt.point_labels],
            boxes=boxes[-1:],
            scribbles=[s for prompt in self.interactions for s in prompt.scribbles],
            label=label, slice_index=k, frame_index=t,
        )

    def check_size(self, label: int, k: int, t: int) -> None:
        """MedfmError when the interactions have gathered more points than one plane takes."""
        points = sum(len(prompt.points) for prompt in self.interactions)
        scribbled = sum(len(s.points) for prompt in self.interactions for s in prompt.scribbles)
        if points > MAX_POINTS_PER_PLANE or scribbled > MAX_SCRIBBLE_POINTS_PER_PLANE:
            raise MedfmError(f"structure {label} on plane ({k}, {t}) would have {points} clicks and {scribbled} scribble points; "
                             f"a plane takes at most {MAX_POINTS_PER_PLANE} and {MAX_SCRIBBLE_POINTS_PER_PLANE}: undo some first")

    @property
    def nbytes(self) -> int:
        return 0 if self.logits is None else int(self.logits.nbytes)


@dataclass
class Step:
    """One undoable change: label planes and structures before and after."""

    focus: Plane
    planes_before: dict[Plane, np.ndarray]
    planes_after: dict[Plane, np.ndarray]
    structures_before: dict[Key, Structure | None]
    structures_after: dict[Key, Structure | None]

    @cached_property
    def nbytes(self) -> int:
        planes = [*self.planes_before.values(), *self.planes_after.values()]
        structures = [s for s in (*self.structures_before.values(), *self.structures_after.values()) if s is not None]
        return sum(int(p.nbytes) for p in planes) + sum(s.nbytes for s in structures)


class SegmentationSession:
    """The label map being drawn on one image, with its history. Use under :attr:`lock`."""

    def __init__(self, image_id: int, image: Image, labels: np.ndarray | None = None,
                 label_info: dict[int, dict[str, str]] | None = None) -> None:
        self.id = uuid.uuid4().hex
        self.image_id = image_id
        self.image = image
        self.labels = np.zeros(image.shape[:4], np.uint8) if labels is None else labels.astype(np.uint8)
        self.label_info: dict[int, dict[str, str]] = dict(label_info or {})
        self.structures: dict[Key, Structure] = {}
        self.undo_stack: list[Step] = []
        self.redo_stack: list[Step] = []
        self.revision = 0
        #: per structure, the model's score on each plane its last propagation reached: ``{label: {(k, t): score}}``
        self.propagation_scores: dict[int, dict[Plane, float]] = {}
        self.lock = threading.Lock()
        self.last_used = time.monotonic()

    @property
    def nbytes(self) -> int:
        """Memory this session holds: its image, label map and undo/redo history."""
        steps = sum(step.nbytes for step in (*self.undo_stack, *self.redo_stack))
        return int(self.image.array.nbytes) + int(self.labels.nbytes) + steps

    def drop_oldest_undo(self) -> bool:
        """Forget the oldest undo step (to free memory); ``False`` when there is none."""
        if not self.undo_stack:
            return False
        del self.undo_stack[0]
        return True

    @cached_property
    def display(self) -> Display:
        """How the browser shows this image's planes (display pixels ↔ plane pixels)."""
        return Display.of(self.image)

    def plane(self, k: int, t: int) -> np.ndarray:
        """The ``(rows, columns)`` label plane ``(k, t)`` (a view)."""
        self.image.check_plane_index(k, t)
        return self.labels[:, :, k, t].T

    def set_label(self, label: int, name: str | None = None, color: str | None = None, code: str | None = None) -> None:
        """Name, recolour or code structure ``label`` (1 to 255), creating it with the palette's colour if new.

        ``code`` is a SNOMED CT code of :func:`medfm.structures.terminology` (its meaning names the
        structure unless ``name`` is given); ``""`` removes the structure's code."""
        if not isinstance(label, int) or not 0 < label < 256:
            raise MedfmError(f"label must be an integer from 1 to 255 (0 is background); got {label!r}")
        coded = term(code) if code else None
        info = self.label_info.setdefault(label, {"name": f"label {label}", "color": default_color(label)})
        if name or coded:
            info["name"] = name or coded.meaning
        if color:
            info["color"] = color
        if coded:
            info["code"] = coded.to_dict()
        elif code == "":
            info.pop("code", None)

    def interact(self, segmenter: Segmenter, segmenter_lock: threading.RLock, k: int, t: int, label: int,
                 interaction: Prompt, locked: frozenset[int] = frozenset(), origin: dict[str, Any] | None = None) -> float:
        """Add ``interaction`` to structure ``label`` on plane ``(k, t)`` and predict it again; returns the score.

        Pixels of the ``locked`` structures stay as they are. ``origin`` (say, the words a box was derived
        from) goes with the interaction into the provenance of saved label maps."""
        self.image.check_plane_index(k, t)
        check_unlocked(label, locked)
        self.set_label(label)
        key = (label, k, t)
        before = self.structures.get(key)
        structure = Structure(list(before.interactions) if before else [], before.logits if before else None,
                              origins=dict(before.origins) if before else {})
        structure.interactions.append(interaction)
        if origin is not None:
            structure.origins[len(structure.interactions) - 1] = origin
        structure.check_size(label, k, t)
        prompt = structure.combined(label, k, t)
        prompt.mask_input = structure.logits
        with segmenter_lock:
            segmenter.set_image(self.image.frame(k, t))
            prediction = segmenter.predict(prompt)
        structure.logits, structure.score, structure.answered_by = prediction.logits, float(prediction.score), segmenter.info
        plane = self.plane(k, t).copy()
        plane[plane == label] = 0
        plane[prediction.mask & ~np.isin(plane, list(locked))] = label
        self._apply(Step((k, t), {(k, t): self.plane(k, t).copy()}, {(k, t): plane}, {key: before}, {key: structure}))
        return float(prediction.score)

    def replace_plane(self, k: int, t: int, plane: np.ndarray, locked: frozenset[int] = frozenset()) -> None:
        """Replace the label plane ``(k, t)`` (``(rows, columns)``, plane pixels) by an edited one (a
        brush stroke, filled holes) as one undoable step; pixels that are or would become one of the
        ``locked`` structures stay as they were. The structures' prompts are kept."""
        self.image.check_plane_index(k, t)
        before = self.plane(k, t).copy()
        if plane.shape != before.shape:
            raise MedfmError(f"the edited plane is {plane.shape[1]}x{plane.shape[0]} pixels; plane ({k}, {t}) is "
                             f"{before.shape[1]}x{before.shape[0]}")
        after = plane.astype(np.uint8)
        keep = np.isin(before, list(locked)) | np.isin(after, list(locked))
        after[keep] = before[keep]
        for value in np.unique(after[after > 0]).tolist():
            self.set_label(int(value))
        self._apply(Step((k, t), {(k, t): before}, {(k, t): after}, {}, {}))

    def replace_view_plane(self, view: Display, index: int, t: int, plane: np.ndarray, locked: frozenset[int] = frozenset()) -> None:
        """Replace the labels of plane ``index`` across ``view.axis`` (an MPR view's plane, ``(rows, columns)`` as
        :meth:`Display.plane` gives it) at frame ``t`` by an edited one, as one undoable step over the session's
        planes ``(k, t)`` it crosses; locked structures stay as in :meth:`replace_plane`."""
        if view.axis == 2:
            self.replace_plane(index, t, plane, locked)
            return
        self.image.check_plane_index(0, t)
        before_frame = self.labels[:, :, :, t:t + 1]
        before = view.plane(before_frame, index, 0)
        if plane.shape != before.shape:
            raise MedfmError(f"the edited plane is {plane.shape[1]}x{plane.shape[0]} pixels; plane {index} across "
                             f"{'ijk'[view.axis]} is {before.shape[1]}x{before.shape[0]}")
        after_frame = before_frame.copy()
        edited = plane.astype(np.uint8)
        keep = np.isin(before, list(locked)) | np.isin(edited, list(locked))
        edited[keep] = before[keep]
        view.plane(after_frame, index, 0)[...] = edited  # a view into after_frame
        for value in np.unique(edited[edited > 0]).tolist():
            self.set_label(int(value))
        changed = np.nonzero((after_frame != before_frame).any(axis=(0, 1, 3)))[0].tolist()
        if changed:
            self._apply(Step((changed[len(changed) // 2], t), {(k, t): self.plane(k, t).copy() for k in changed},
                             {(k, t): after_frame[:, :, k, 0].T.copy() for k in changed}, {}, {}))

    def fill_holes(self, k: int, t: int, label: int, locked: frozenset[int] = frozenset()) -> int:
        """Fill the holes of structure ``label`` on plane ``(k, t)`` (one undoable step); returns the pixels added."""
        from scipy.ndimage import binary_fill_holes

        check_unlocked(label, locked)
        plane = self.plane(k, t).copy()
        filled = binary_fill_holes(plane == label) & (plane != label) & ~np.isin(plane, list(locked))
        plane[filled] = label
        if filled.any():
            self.replace_plane(k, t, plane, locked)
        return int(filled.sum())

    def smooth(self, k: int, t: int, label: int, sigma: float, whole: bool = False, locked: frozenset[int] = frozenset()) -> int:
        """Smooth structure ``label``'s outline (one undoable step): a Gaussian of ``sigma`` pixels over its
        mask, kept where it is above one half; on plane ``(k, t)``, or with ``whole`` on every plane of
        frame ``t`` in 3D (spacing-aware: ``sigma`` is in pixels of the plane, scaled across slices).
        Pixels of other structures, locked or not, stay theirs. Returns how many pixels changed."""
        from scipy.ndimage import gaussian_filter

        check_unlocked(label, locked)
        self.image.check_plane_index(k, t)
        if not (isinstance(sigma, (int, float)) and 0 < sigma <= MAX_SMOOTH_SIGMA):
            raise MedfmError(f"sigma must be above 0 and at most {MAX_SMOOTH_SIGMA} pixels; got {sigma!r}")
        planes = range(self.image.shape[2]) if whole else [k]
        before = {(z, t): self.plane(z, t).copy() for z in planes}
        stack = np.stack([before[(z, t)] for z in planes])  # (planes, rows, columns)
        spacing = self.image.spacing
        across = sigma * spacing[0] / spacing[2] if whole and spacing[2] > 0 else 0.0
        smooth = gaussian_filter((stack == label).astype(np.float32), sigma=(across, sigma, sigma)) > 0.5
        smooth &= (stack == 0) | (stack == label)  # never over another structure
        after_stack = np.where(stack == label, 0, stack)
        after_stack[smooth] = label
        changed = int((after_stack != stack).sum())
        if changed:
            after = {(z, t): after_stack[n] for n, z in enumerate(planes)}
            touched = [plane for plane in after if not np.array_equal(after[plane], before[plane])]
            self._apply(Step((k, t), {p: before[p] for p in touched}, {p: after[p] for p in touched}, {}, {}))
        return changed

    @cached_property
    def input_id(self) -> str:
        """The image's :func:`~medfm.provenance.pixels_id`, hashed once per session, not once per propagation."""
        return pixels_id(self.image.array)

    def propagate(self, segmenter: Segmenter, segmenter_lock: threading.RLock, label: int, axis: str,
                  locked: frozenset[int] = frozenset()) -> Plane:
        """Carry structure ``label`` through the image from its prompted planes (one undoable step);
        pixels of the ``locked`` structures stay as they are."""
        check_unlocked(label, locked)
        seeds = {key: s for key, s in self.structures.items() if key[0] == label and s.interactions}
        if not seeds:
            raise MedfmError(f"structure {label} has no prompts to propagate from: click on it first")
        index = 1 if axis == "k" else 2
        prompts = {key[index]: [s.combined(*key)] for key, s in seeds.items()}
        with segmenter_lock:
            propagated = propagate(self.image, segmenter, prompts, axis=axis, input_id=self.input_id)
        result = propagated.array[..., 0]
        self.propagation_scores[label] = {
            (plane["slice_index"], plane["frame_index"]): float(plane["score"])
            for structure in propagated.provenance.structures if structure.get("label") == label for plane in structure["planes"]
        }
        touched = {(k, t) for k, t in zip(*np.nonzero((result == label).any(axis=(0, 1))))}
        touched |= {(key[1], key[2]) for key in seeds}
        before = {(int(k), int(t)): self.plane(k, t).copy() for k, t in touched}
        after = {}
        for (k, t), plane in before.items():
            plane = plane.copy()
            plane[plane == label] = 0
            plane[(result[:, :, k, t].T == label) & ~np.isin(plane, list(locked))] = label
            after[(k, t)] = plane
        focus = next(iter(seeds))[1:]
        self._apply(Step(focus, before, after, {}, {}))
        return focus

    def undo(self) -> Plane:
        if not self.undo_stack:
            raise MedfmError("nothing to undo")
        step = self.undo_stack.pop()
        self._restore(step.planes_before, step.structures_before)
        self.redo_stack.append(step)
        self.revision += 1
        return step.focus

    def redo(self) -> Plane:
        if not self.redo_stack:
            raise MedfmError("nothing to redo")
        step = self.redo_stack.pop()
        self._restore(step.planes_after, step.structures_after)
        self.undo_stack.append(step)
        self.revision += 1
        return step.focus

    def label_image(self, model: SegmenterInfo) -> Image:
        """A copy of the label map on the image's grid, no patient data, with the provenance
        :func:`~medfm.tasks.segment.segmentation_provenance` gives the CLI's label maps: ``model``,
        every prompt on its plane, and per structure its name and the score of each prompted plane (with the
        model that made that plane when it is not ``model``: an adapter switched on or off meanwhile)."""
        labels = self.image.with_array(self.labels.copy())
        labels.phi = {}
        prompts = [{**prompt.to_dict(), "label": label, "slice_index": k, "frame_index": t, **structure.origins.get(n, {})}
                   for (label, k, t), structure in sorted(self.structures.items())
                   for n, prompt in enumerate(structure.interactions)]
        structures = [
            {"label": value, "label_name": info["name"], "color": info.get("color") or default_color(value),
             **({"code": info["code"]} if info.get("code") else {}), "planes": [
                {"slice_index": k, "frame_index": t, "score": structure.score, **_other_model(structure.answered_by, model)}
                for (label, k, t), structure in sorted(self.structures.items()) if label == value and structure.interactions
            ]}
            for value, info in sorted(self.label_info.items())
        ]
        labels.provenance = segmentation_provenance(self.image, model, prompts, structures, input_id=self.input_id)
        return labels

    def _apply(self, step: Step) -> None:
        self._restore(step.planes_after, step.structures_after)
        self.undo_stack.append(step)
        del self.undo_stack[:-HISTORY]
        self.redo_stack.clear()
        self.revision += 1

    def _restore(self, planes: dict[Plane, np.ndarray], structures: dict[Key, Structure | None]) -> None:
        for (k, t), plane in planes.items():
            self.labels[:, :, k, t] = plane.T
        for key, structure in structures.items():
            if structure is None:
                self.structures.pop(key, None)
            else:
                self.structures[key] = structure


class SessionStore:
    """Open sessions by id, holding at most ``max_bytes`` (:attr:`SegmentationSession.nbytes`).

    A session unused for ``idle_seconds`` is dropped. When a new or changed session brings
    the total over ``max_bytes``, the least recently used others are closed, then the
    session's own oldest undo steps are forgotten.
    """

    def __init__(self, idle_seconds: float, max_bytes: int) -> None:
        self.idle_seconds = idle_seconds
        self.max_bytes = max_bytes
        self._sessions: dict[str, SegmentationSession] = {}
        self._lock = threading.Lock()

    def add(self, session: SegmentationSession) -> SegmentationSession:
        if session.nbytes > self.max_bytes:
            raise MedfmError(f"image {session.image_id} needs {session.nbytes / 2**20:.0f} MiB for a session, more than the "
                             f"server's {self.max_bytes / 2**20:.0f} MiB for sessions (medfm serve --session-mb)")
        with self._lock:
            self._expire()
            self._sessions[session.id] = session
            self._fit(session)
        return session

    def changed(self, session: SegmentationSession) -> None:
        """Call after ``session`` grew (a prompt, a propagation): keeps the total under the limit."""
        with self._lock:
            self._fit(session)

    def usage(self) -> dict[str, int]:
        """``{"bytes", "limit", "count"}`` of the open sessions."""
        with self._lock:
            return {"bytes": sum(s.nbytes for s in self._sessions.values()), "limit": self.max_bytes,
                    "count": len(self._sessions)}

    def get(self, session_id: str) -> SegmentationSession:
        with self._lock:
            self._expire()
            session = self._sessions.get(session_id)
            if session is None:
                raise SessionNotFound(f"no session {session_id!r} (it may have expired after being idle or "
                                      "been closed to make room for newer ones)")
            session.last_used = time.monotonic()
            return session

    def remove(self, session_id: str) -> None:
        with self._lock:
            if self._sessions.pop(session_id, None) is None:
                raise SessionNotFound(f"no session {session_id!r}")

    def _fit(self, keep: SegmentationSession) -> None:
        total = sum(s.nbytes for s in self._sessions.values())
        for other in sorted((s for s in self._sessions.values() if s is not keep), key=lambda s: s.last_used):
            if total <= self.max_bytes:
                return
            total -= other.nbytes
            del self._sessions[other.id]
        while total > self.max_bytes and keep.drop_oldest_undo():
            total = keep.nbytes

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.idle_seconds
        for session_id in [s.id for s in self._sessions.values() if s.last_used < cutoff]:
            del self._sessions[session_id]


def check_unlocked(label: int, locked: frozenset[int]) -> None:
    if label in locked:
        raise MedfmError(f"structure {label} is locked: unlock it to change it")


def interaction(points: list[tuple[float, float]], point_labels: list[int], box: tuple[float, float, float, float] | None,
                scribble: tuple[list[tuple[float, float]], bool] | None) -> Prompt:
    """One client interaction (plane pixels) as a prompt."""
    return Prompt(
        points=[(float(x), float(y)) for x, y in points], point_labels=[int(v) for v in point_labels],
        boxes=[box] if box else [], scribbles=[Scribble(list(scribble[0]), positive=scribble[1])] if scribble else [],
    )


def _other_model(answered_by: SegmenterInfo | None, model: SegmenterInfo) -> dict[str, str]:
    """``{"model", "weights_sha256"}`` of the model that made a plane, when it is not the label map's ``model``."""
    if answered_by is None or answered_by.weights_sha256 == model.weights_sha256:
        return {}
    return {"model": answered_by.name, "weights_sha256": answered_by.weights_sha256}
