"""Closed questions about catalogued images, answered as ``medfm ask`` does (:func:`medfm.tasks.ask.ask`),
with the server index's nearest other cases as evidence."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictInt, StringConstraints

from medfm.errors import FileError, MedfmError
from medfm.server.limits import MAX_EVIDENCE, MAX_QUESTION_IMAGES
from medfm.server.routes.report import abstain_threshold, catalog_case
from medfm.server.routes.search import MAX_LABELS
from medfm.server.state import ServerState, get_state
from medfm.tasks.ask import MAX_QUESTION_CHARS

router = APIRouter(prefix="/api", tags=["ask"])


class AskIn(BaseModel):
    #: several images are one question's frames or slices
    image_ids: list[int] = Field(min_length=1, max_length=MAX_QUESTION_IMAGES)
    question: Annotated[str, StringConstraints(max_length=MAX_QUESTION_CHARS * 2)]
    choices: list[str] | None = Field(None, max_length=MAX_LABELS)
    k: StrictInt = Field(5, ge=1, le=MAX_EVIDENCE)
    abstain: bool = True


@router.post("/ask")
def ask(body: AskIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.tasks.ask import ask as ask_question

    records = [state.record(image_id) for image_id in dict.fromkeys(body.image_ids)]
    try:
        with state.encoder_lock, state.index_lock:
            result = ask_question(records, body.question, state.encoder, choices=body.choices, index=state.index(), k=body.k,
                                  abstain_below=abstain_threshold(state, body.abstain), exclude=set(body.image_ids),
                                  router=state.router)
    except FileError as exc:  # its path may name the patient: say which images by id
        raise MedfmError(f"image(s) {', '.join(map(str, body.image_ids))} cannot be read: {exc.reason}") from None
    evidence = [{**hit, **catalog_case(state, hit["id"])} for hit in result.get("evidence", [])]
    return {**result, "image_ids": body.image_ids, "evidence": evidence, "provenance": result["provenance"].to_dict()}
