"""Similar-case search over the server's index of the catalog, index builds, zero-shot classification."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from medfm.errors import FileError, MedfmError
from medfm.index import Index, MissingIdsError
from medfm.pairs import parse_pairs
from medfm.catalog.browse import display_name
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["search"])


#: Metadata a search may filter on: what a hit shows (an index also holds each image's path, which may
#: name the patient and must not be guessable through filters).
WHERE_KEYS = ("modality", "body_part", "dataset")
#: Most hits one response carries.
MAX_HITS = 1000


@router.get("/search")
def search(image_id: int | None = None, text: str | None = None, k: int = 10,
           where: Annotated[list[str] | None, Query(description="KEY=VALUE, repeatable; KEY one of modality, body_part, dataset")] = None,
           exact: bool = False, abstain: bool = False, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.tasks.search import search as search_index

    if (image_id is None) == (text is None):
        raise MedfmError("give exactly one of image_id and text")
    if k > MAX_HITS:
        raise MedfmError(f"k must be at most {MAX_HITS}; got {k}")
    filters = parse_pairs(where or [], "where", "modality=CT")
    if unknown := sorted(set(filters) - set(WHERE_KEYS)):
        raise MedfmError(f"where can filter on {', '.join(WHERE_KEYS)}; got {', '.join(unknown)}")
    hits, threshold = None, None
    if image_id is not None:  # an indexed image by its stored embedding: never waits for the encoder
        with state.index_lock:
            index = require_index(state)
            index.check_model(state.encoder_info())
            threshold = _abstain_below(index) if abstain else None
            try:
                hits = search_index(index, None, item_id=image_id, k=k, where=filters, exact=exact, abstain_below=threshold)
            except MissingIdsError:  # an image not indexed yet (just uploaded): read and embed it below
                pass
    if hits is None:
        query = {"text": text} if text is not None else {"image": state.load_image(image_id).image}
        with state.encoder_lock, state.index_lock:
            index = require_index(state)
            threshold = _abstain_below(index) if abstain else None
            hits = search_index(index, state.encoder, **query, k=k, where=filters, exact=exact, abstain_below=threshold)
    return {"hits": [_hit(state, hit.id, hit.score) for hit in hits],
            "best_score": None if hits.best_score is None else round(float(hits.best_score), 6), "abstain_below": threshold}


def require_index(state: ServerState) -> Index:
    """The catalog's search index; call it holding ``state.index_lock``."""
    index = state.index()
    if index is None:
        raise MedfmError("the catalog is not indexed yet: POST /api/index/build first")
    return index


def _abstain_below(index: Index) -> float:
    """The similarity under which the index's model calls a hit unrelated (400 for a model without one)."""
    from medfm.models.registry import abstention_threshold

    return abstention_threshold(index.model["name"], index.model["weights_sha256"], "search")


def _hit(state: ServerState, image_id: int, score: float) -> dict[str, Any]:
    record = state.record(image_id)
    return {"image_id": image_id, "name": display_name(record), "score": round(float(score), 6), "modality": record.modality,
            "body_part": record.body_part, "dataset": record.dataset, "description": record.description}


@router.post("/index/build")
def build_index(state: ServerState = Depends(get_state)) -> dict[str, str]:
    return {"job": state.index_new_images()}


#: Most labels one request may score: each is encoded once per prompt template while the encoder is held.
MAX_LABELS = 100


class ClassifyIn(BaseModel):
    #: checked as the CLI's labels are, by medfm.tasks.classify.check_labels
    labels: list[str] = Field(max_length=MAX_LABELS)
    #: answer "other" when the image is like none of the labels (the encoder's calibrated threshold)
    abstain: bool = False


@router.post("/images/{image_id}/classify")
def classify(image_id: int, body: ClassifyIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    from medfm.models.registry import abstention_threshold
    from medfm.tasks.classify import classify as classify_images

    record = state.record(image_id)
    try:
        with state.encoder_lock:
            info = state.encoder.info
            threshold = abstention_threshold(info.name, info.weights_sha256, "zero_shot") if body.abstain else None
            (result,) = classify_images([record], state.encoder, labels=body.labels, abstain_below=threshold)
    except FileError as exc:  # its path may name the patient: say which image by id
        raise MedfmError(f"image {image_id} cannot be classified: {exc.reason}") from None
    return {"probabilities": result["probabilities"], "prediction": result["prediction"], "model": result["model"],
            **{key: result[key] for key in ("similarity", "ood_score", "abstained") if key in result}}
