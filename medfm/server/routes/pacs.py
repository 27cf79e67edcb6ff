"""PACS over DICOMweb, when the server was started with ``--pacs URL``: search, pull into the catalog, push DICOM SEG."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from medfm.catalog.pacs import pull, push_segmentation
from medfm.errors import MedfmError
from medfm.io.dicomweb import DicomWeb, check_uid
from medfm.server.errors import NotFound
from medfm.server.jobs import Progress
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/pacs", tags=["pacs"])


def _pacs(state: ServerState) -> DicomWeb:
    """The configured PACS; 404 when the server has none (the endpoints exist only with one)."""
    if not state.settings.pacs_url:
        raise NotFound("no PACS configured; start medfm serve with --pacs URL")
    return DicomWeb(state.settings.pacs_url)


@router.get("/studies")
def studies(modality: str | None = None, study_date: str | None = None, accession: str | None = None,
            limit: int | None = None, show_phi: bool = False, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    found = _pacs(state).search_studies(modality=modality, study_date=study_date, accession=accession,
                                        limit=limit, show_phi=show_phi)
    return {"studies": found}


@router.get("/studies/{study_uid}/series")
def series(study_uid: str, modality: str | None = None, show_phi: bool = False,
           state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return {"series": _pacs(state).search_series(study_uid, show_phi, modality=modality)}


class PullRequest(BaseModel):
    study_uid: str
    series_uid: str | None = None


@router.post("/pull")
def pull_study(body: PullRequest, state: ServerState = Depends(get_state)) -> dict[str, str]:
    pacs = _pacs(state)
    # Checked here, not only in the job, so that a bad UID is a 400 now rather than a failed job later.
    check_uid("study UID", body.study_uid)
    if body.series_uid is not None:
        check_uid("series UID", body.series_uid)

    def work(progress: Progress) -> dict[str, Any]:
        report = pull(pacs, body.study_uid, series_uid=body.series_uid, catalog=state.catalog,
                      folder=state.data_dir / "pacs", progress=progress)
        if report.added:  # similar-case search covers the pulled images without anyone asking
            state.index_new_images()
        return {"image_ids": report.image_ids}

    return {"job": state.jobs.submit("pacs-pull", work)}


class PushRequest(BaseModel):
    image_id: int
    name: str
    version: int


@router.post("/push")
def push(body: PushRequest, state: ServerState = Depends(get_state)) -> dict[str, str]:
    import pydicom

    pacs = _pacs(state)
    path = state.annotations.file(body.image_id, body.name, body.version)
    if path.suffix != ".dcm":
        raise MedfmError(f"annotation {body.name!r} version {body.version} is not a DICOM SEG; "
                         "save it with format dicom-seg to push it")
    sop_uid = push_segmentation(pacs, path)
    return {"sop_instance_uid": sop_uid, "series_uid": str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)}
