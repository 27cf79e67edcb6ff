"""Catalog and images: listing, details, planes as PNG, uploads and ingest."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from pydantic import BaseModel

from medfm.catalog import ImageRecord, ingest
from medfm.errors import MedfmError
from medfm.server.display import render_png
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["catalog"])

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 96


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
            "pacs": bool(state.settings.pacs_url)}


@router.get("/images")
def list_images(modality: str | None = None, body_part: str | None = None, dataset: str | None = None,
                text: str | None = None, limit: int | None = None, show_phi: bool = False,
                state: ServerState = Depends(get_state)) -> dict[str, Any]:
    records = state.catalog.query(modality=modality, body_part=body_part, dataset=dataset, text=text, limit=limit)
    return {"images": [summary(record, show_phi) for record in records]}


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
    loaded = state.load_image(image_id)
    loaded.image.check_plane_index(k, t)
    if width is not None and width <= 0:
        raise MedfmError(f"window width must be positive; got {width}")
    default_center, default_width = loaded.window
    window = (default_center if center is None else center, default_width if width is None else width)
    return Response(render_png(loaded.image, k, t, loaded.display, window), media_type="image/png")


@router.get("/images/{image_id}/thumbnail.png", response_class=Response)
def thumbnail_png(image_id: int, state: ServerState = Depends(get_state)) -> Response:
    loaded = state.load_image(image_id)
    shape = loaded.image.shape
    png = render_png(loaded.image, shape[2] // 2, shape[3] // 2, loaded.display, loaded.window, max_side=THUMBNAIL_SIDE)
    return Response(png, media_type="image/png")


def _ingest_job(state: ServerState, folder: Path, shown_from: Path):
    """Work for a job: ingest ``folder``; bad files are named relative to ``shown_from``."""
    def work(progress) -> dict[str, Any]:
        report = ingest([folder], state.catalog, progress=progress)
        image_ids = [record.id for record in state.catalog.query(text=str(folder))
                     if Path(record.source_path).is_relative_to(folder)]
        bad = [[_relative(name, shown_from), reason] for name, reason in report.bad]
        if report.added:  # similar-case search covers new images without anyone asking
            state.index_new_images()
        return {"image_ids": image_ids, "bad": bad}
    return work


def _relative(name: str, root: Path) -> str:
    path = Path(name)
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


@router.post("/uploads")
async def upload(request: Request, state: ServerState = Depends(get_state)) -> dict[str, str]:
    form = await request.form()
    files = [item for item in form.getlist("files") if hasattr(item, "filename")]
    if not files:
        raise MedfmError("no files uploaded: send multipart form field 'files'")
    try:
        # copying a large upload off the event loop keeps the server answering meanwhile
        folder = await run_in_threadpool(_store_uploads, files, state.data_dir / "uploads")
    finally:
        await form.close()
    return {"job": state.jobs.submit("ingest", _ingest_job(state, folder, folder))}


def _store_uploads(files: list[Any], uploads: Path) -> Path:
    """The uploaded files in a new folder under ``uploads``, which appears only once all are whole.

    They are written into a hidden folder that is renamed at the end, so a crash or a full
    disk never leaves a cut-off file where an ingest would find it.
    """
    name = uuid.uuid4().hex
    incoming = uploads / f".incoming-{name}"
    try:
        incoming.mkdir(parents=True)
        for number, item in enumerate(files):
            with open(incoming / f"{number:04d}-{_safe_name(item.filename)}", "wb") as out:
                shutil.copyfileobj(item.file, out)
        return incoming.rename(uploads / name)
    except OSError as exc:
        shutil.rmtree(incoming, ignore_errors=True)
        raise MedfmError(f"cannot store the upload in the data directory: {exc.strerror or type(exc).__name__}") from None
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise


def _safe_name(name: str | None) -> str:
    """A file name without folders or odd characters (keeping its suffix, which names its format)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "file").name).lstrip(".")
    return cleaned[-120:] or "file"


class IngestRequest(BaseModel):
    path: str


@router.post("/ingest")
def ingest_folder(body: IngestRequest, state: ServerState = Depends(get_state)) -> dict[str, str]:
    from medfm.server.security import inside_data_dir

    folder = inside_data_dir(body.path, state.data_dir)
    return {"job": state.jobs.submit("ingest", _ingest_job(state, folder, state.data_dir))}
