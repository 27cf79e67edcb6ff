"""Adding images: uploads (in one request, or chunked and resumable) and ingest of a data-directory folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from medfm.catalog import ingest
from medfm.errors import MedfmError
from medfm.server.jobs import Progress
from medfm.server.state import ServerState, get_state
from medfm.server.uploads import CHUNK_BYTES, MAX_FILES

router = APIRouter(prefix="/api", tags=["uploads"])


def ingest_job(state: ServerState, folder: Path, shown_from: Path):
    """Work for a job: ingest ``folder``; bad files are named relative to ``shown_from``."""
    def work(progress: Progress) -> dict[str, Any]:
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
        folder = await run_in_threadpool(state.uploads.store, [(item.filename, item.file) for item in files])
    finally:
        await form.close()
    return {"job": state.jobs.submit("ingest", ingest_job(state, folder, folder))}


class DeclaredFile(BaseModel):
    name: str = Field(min_length=1, max_length=1024)
    size: int = Field(ge=0)


class ChunkedUploadIn(BaseModel):
    files: list[DeclaredFile] = Field(min_length=1, max_length=MAX_FILES)


@router.post("/uploads/chunked")
def begin_chunked_upload(body: ChunkedUploadIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    upload_id = state.uploads.begin([(f.name, f.size) for f in body.files])
    return {"upload": upload_id, "chunk_bytes": min(CHUNK_BYTES, state.settings.max_upload_bytes)}


@router.get("/uploads/chunked/{upload_id}")
def chunked_upload_status(upload_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    received, size = state.uploads.received(upload_id)
    return {"upload": upload_id, "received": received, "size": size}


@router.put("/uploads/chunked/{upload_id}")
async def upload_chunk(upload_id: str, offset: int, request: Request,
                       state: ServerState = Depends(get_state)) -> dict[str, int]:
    chunk = await request.body()
    return {"received": await run_in_threadpool(state.uploads.write, upload_id, offset, chunk)}


@router.post("/uploads/chunked/{upload_id}/finish")
def finish_chunked_upload(upload_id: str, state: ServerState = Depends(get_state)) -> dict[str, str]:
    folder = state.uploads.finish(upload_id)
    return {"job": state.jobs.submit("ingest", ingest_job(state, folder, folder))}


@router.delete("/uploads/chunked/{upload_id}")
def cancel_chunked_upload(upload_id: str, state: ServerState = Depends(get_state)) -> dict[str, str]:
    state.uploads.received(upload_id)  # 404 when there is no such upload
    state.uploads.cancel(upload_id)
    return {"upload": upload_id, "state": "cancelled"}


class IngestRequest(BaseModel):
    path: str


@router.post("/ingest")
def ingest_folder(body: IngestRequest, state: ServerState = Depends(get_state)) -> dict[str, str]:
    from medfm.server.security import inside_data_dir

    folder = inside_data_dir(body.path, state.data_dir)
    return {"job": state.jobs.submit("ingest", ingest_job(state, folder, state.data_dir))}
