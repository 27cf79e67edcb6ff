"""Saved versions of an image's report: the text the user kept in the Report panel, with its evidence.

Stored beside the image's annotation versions under the same rules (:mod:`medfm.server.reports`):
saved as a draft, listed newest first, loaded by number, marked final, deleted (set aside, its
number never reused), and exported as a DICOM SR as ``POST /api/report/sr`` exports a fresh draft.
Answers hold what the user typed, the sentences' source cases as the draft named them, and ids:
nothing of the patient.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator

from medfm.provenance import Provenance
from medfm.server.limits import MAX_REPORT_CHARS, MAX_SR_SENTENCES, StructureName
from medfm.server.routes.annotations import StatusIn
from medfm.server.routes.report import SentenceIn, catalog_case, sr_response, workbench_provenance
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/images/{image_id}/reports", tags=["report"])


class ReportVersionIn(BaseModel):
    sentences: list[SentenceIn] = Field(min_length=1, max_length=MAX_SR_SENTENCES)
    #: as the client names its user (1 to 64 characters)
    author: StructureName | None = None
    #: whether the user changed the machine's draft
    edited: bool = False

    @field_validator("sentences")
    @classmethod
    def within_limit(cls, sentences: list[SentenceIn]) -> list[SentenceIn]:
        chars = sum(len(s.text) for s in sentences)
        if chars > MAX_REPORT_CHARS:
            raise ValueError(f"the report has {chars} characters; at most {MAX_REPORT_CHARS}")
        return sentences


def shown(state: ServerState, record: dict[str, Any]) -> dict[str, Any]:
    """A saved version as the page shows it: each sentence with its source case's catalog id and name."""
    return {**record, "sentences": [{**s, **catalog_case(state, s["source"])} for s in record["sentences"]]}


@router.get("")
def list_reports(image_id: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """``{"image_id", "versions"}``: the saved versions, newest first."""
    state.record(image_id)
    return {"image_id": image_id, "versions": state.reports.list(image_id)}


@router.post("")
def save_report(image_id: int, body: ReportVersionIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Save the report as the image's next version, a draft."""
    state.record(image_id)
    provenance = workbench_provenance(state, image_id, body.sentences, body.edited)
    sentences = [{"text": s.text, "source": s.source} for s in body.sentences]
    return shown(state, state.reports.save(image_id, sentences, body.author, body.edited, provenance.to_dict()))


@router.get("/{version}")
def load_report(image_id: int, version: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    state.record(image_id)
    return shown(state, state.reports.get(image_id, version))


@router.patch("/{version}")
def set_status(image_id: int, version: int, body: StatusIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Mark a version draft or final."""
    state.record(image_id)
    return state.reports.set_status(image_id, version, body.status)


@router.delete("/{version}")
def delete_version(image_id: int, version: int, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Delete a draft version (kept aside on disk; its number is never reused)."""
    state.record(image_id)
    state.reports.delete(image_id, version)
    return {"version": version, "state": "deleted"}


@router.get("/{version}/sr", response_class=Response)
def version_sr(image_id: int, version: int, state: ServerState = Depends(get_state)) -> Response:
    """A saved version as a DICOM Comprehensive SR; its provenance names the version and its status."""
    state.record(image_id)
    record = state.reports.get(image_id, version)
    saved = Provenance.from_dict(record["provenance"])
    provenance = replace(saved, parameters={**saved.parameters, "report_version": version, "status": record["status"]})
    return sr_response(state, image_id, [s["text"] for s in record["sentences"]], provenance,
                       f"report-{image_id}-v{version:04d}.dcm")
