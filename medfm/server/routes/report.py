"""Reports of a catalogued image, from the server's index, and a draft as a DICOM SR.

``POST /api/report`` drafts as ``medfm report`` does by default (:func:`medfm.tasks.report.draft_report`:
retrieval-augmented, every sentence naming the indexed case it came from, here a catalog image);
the image itself, being indexed, is never its own past case.
``POST /api/report/sr`` writes the draft the user kept (perhaps edited) as a Comprehensive SR;
saved versions of a report are :mod:`medfm.server.routes.report_versions`'s.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, StrictInt, StringConstraints

from medfm.catalog.browse import display_name
from medfm.errors import MedfmError
from medfm.provenance import Provenance
from medfm.server.limits import MAX_REPORT_CASES, MAX_REPORT_SENTENCES, MAX_SR_SENTENCES, FiniteFloat
from medfm.server.routes.search import require_index
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["report"])


class ReportIn(BaseModel):
    image_id: int
    k: StrictInt | None = Field(None, ge=1, le=MAX_REPORT_CASES)
    ratio: FiniteFloat | None = Field(None, ge=0, le=1)
    sentences: StrictInt | None = Field(None, ge=1, le=MAX_REPORT_SENTENCES)
    #: the router abstains under the encoder's calibrated zero-shot threshold (as medfm report does)
    abstain: bool = True


class SentenceIn(BaseModel):
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    #: the catalog image the sentence came from (None: written by the user)
    source: int | None = None


class ReportSrIn(BaseModel):
    image_id: int
    sentences: list[SentenceIn] = Field(min_length=1, max_length=MAX_SR_SENTENCES)
    #: whether the user changed the draft
    edited: bool = False


def abstain_threshold(state: ServerState, abstain: bool) -> dict[str, float] | None:
    """The encoder's calibrated zero-shot thresholds by question axis when ``abstain`` (400 for a model without
    them), else None; call it holding ``state.encoder_lock``."""
    from medfm.models.registry import question_abstention

    info = state.encoder.info
    return question_abstention(abstain, None, info.name, info.weights_sha256)


def catalog_case(state: ServerState, image_id: int | None) -> dict[str, Any]:
    """A retrieved case as the page shows it: its catalog id and name (None once deleted from the catalog,
    or for a sentence the user wrote, whose source is None)."""
    if image_id is None:
        return {"image_id": None, "name": None}
    try:
        return {"image_id": image_id, "name": display_name(state.record(image_id))}
    except MedfmError:
        return {"image_id": image_id, "name": None}


@router.post("/report")
def report(body: ReportIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.tasks.report import draft_report

    image = state.load_image(body.image_id).image
    options = {key: value for key, value in (("k", body.k), ("ratio", body.ratio), ("max_sentences", body.sentences))
               if value is not None}  # the library's defaults are the only defaults
    with state.encoder_lock, state.index_lock:
        result = draft_report(image, state.encoder, require_index(state), abstain_below=abstain_threshold(state, body.abstain),
                              exclude={body.image_id}, **options)
    return {**result, "image_id": body.image_id,
            "sentences": [{**s, **catalog_case(state, s["source"])} for s in result["sentences"]],
            "contexts": [{**c, **catalog_case(state, c["id"])} for c in result["contexts"]],
            "provenance": result["provenance"].to_dict()}


@router.post("/report/sr", response_class=Response)
def report_sr(body: ReportSrIn, state: ServerState = Depends(get_state)) -> Response:
    state.record(body.image_id)  # 404 for an unknown image, before the encoder is asked
    provenance = workbench_provenance(state, body.image_id, body.sentences, body.edited)
    return sr_response(state, body.image_id, [s.text for s in body.sentences], provenance, f"report-{body.image_id}.dcm")


def workbench_provenance(state: ServerState, image_id: int, sentences: list[SentenceIn], edited: bool) -> Provenance:
    """Where a report kept in the workbench came from: the encoder that drafted it, the image, the source cases,
    and whether the user changed the draft."""
    info = state.encoder_info()
    sources = sorted({s.source for s in sentences if s.source is not None})
    return Provenance(
        kind="report", model=info.name, weights_sha256=info.weights_sha256,
        inputs=(f"catalog-image:{image_id}", *(f"index-item:{source}" for source in sources)),
        parameters={"method": "retrieval-augmented draft (workbench)", "edited": edited})


def sr_response(state: ServerState, image_id: int, sentences: list[str], provenance: Provenance, filename: str) -> Response:
    """``sentences`` as a DICOM Comprehensive SR download referencing the image's series (when it is DICOM)."""
    from medfm.tasks.report import save_report_sr

    loaded = state.load_image(image_id)
    draft = {"sentences": [{"text": text} for text in sentences], "provenance": provenance}
    with tempfile.TemporaryDirectory(prefix="medfm-sr-") as folder:
        path = save_report_sr(draft, Path(folder) / "report.dcm", loaded.series)
        data = path.read_bytes()
    return Response(data, media_type="application/dicom", headers={"Content-Disposition": f'attachment; filename="{filename}"'})
