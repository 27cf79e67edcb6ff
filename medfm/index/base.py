"""What every vector index offers, whichever engine stores the vectors.

An index holds unit-length embeddings ``(D,)`` of images under integer ids (catalog ids,
or a stable number derived from the file path), each with flat metadata (``path``,
``modality``, ``body_part``, ``dataset``, ``label``, any other key). It records the model
that made the vectors and refuses queries from another one: mixing embedding spaces
gives plausible-looking but meaningless hits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.io.limits import positive_env_number
from medfm.models.encoders.base import EncoderInfo, model_record

#: Keys whose values are upper-cased on write and in filters, as the catalog stores them.
UPPER_CASE_KEYS = ("modality", "body_part")

Metadata = dict[str, str]


class MissingIdsError(MedfmError):
    """Ids asked of an index that it does not hold, as a field (``ids``), with the index's ``location``."""

    def __init__(self, location: str, ids: Sequence[int]) -> None:
        self.location = location
        self.ids = [int(i) for i in ids]
        super().__init__(f"index {location} has no id(s) {', '.join(map(str, self.ids[:5]))}")


#: How long each request to a vector server waits for its answer, in seconds (default 60).
TIMEOUT_ENV = "MEDFM_INDEX_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 60.0


def server_timeout_s() -> float:
    """How long each request to a vector server (Chroma, Milvus) waits (``MEDFM_INDEX_TIMEOUT_S``, read at each call)."""
    return positive_env_number(TIMEOUT_ENV, DEFAULT_TIMEOUT_S, float)


class IndexUnavailableError(MedfmError):
    """The engine behind an index stopped answering (a server that died or cannot be reached), with the
    index's ``location``; what was written before it is kept (each write is durable or absent)."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        super().__init__(message)


@dataclass(frozen=True)
class Hit:
    """One search result: ``score`` is the cosine similarity (higher is closer)."""

    id: int
    score: float
    metadata: Metadata

    @property
    def path(self) -> str | None:
        return self.metadata.get("path")

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "path", "score", **metadata}``, JSON-ready."""
        return {"id": self.id, "path": self.path, "score": round(self.score, 6), **self.metadata}


def clean_metadata(metadata: Mapping[str, Any]) -> Metadata:
    """Flat ``str -> str`` metadata: ``None`` values dropped, other scalars as text.

    Every backend stores and compares text, so a filter ``label=1`` means the same thing
    whether the label was written as ``1`` or ``"1"``.
    """
    cleaned = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if not isinstance(value, (str, int, float, bool, np.generic)):
            raise MedfmError(f"metadata {key!r} must be text or a number, got {type(value).__name__}")
        text = str(value.item() if isinstance(value, np.generic) else value)
        cleaned[str(key)] = text.upper() if key in UPPER_CASE_KEYS else text
    return cleaned


def _describe(record: Mapping[str, Any]) -> str:
    sha = record["weights_sha256"]
    return f"{record['name']!r} ({record['embed_dim']}-d, weights {sha[:12]})"


class Index(ABC):
    """Vectors with ids and metadata: add, update, delete, search, persist.

    ``model`` is the :func:`~medfm.models.encoders.base.model_record` of the encoder the vectors come from; ``location``
    says where the index lives, for messages.
    """

    model: dict[str, Any]
    location: str
    #: Whether :func:`medfm.index.open_or_create_index` made this index new rather than opening one.
    created: bool = False

    def check_model(self, info: EncoderInfo) -> None:
        """Refuse an encoder other than the one that built the index (name, size and weights)."""
        if model_record(info) != self.model:
            raise MedfmError(
                f"index {self.location} was built with model {_describe(self.model)} but the query uses "
                f"{_describe(model_record(info))}; use the same model or build another index"
            )

    def _check_vectors(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]] | None) -> np.ndarray:
        """``vectors`` as ``(N, D)`` float32 unit rows, checked against ``ids`` and ``metadata``."""
        vectors = np.asarray(vectors, dtype=np.float32)
        dim = self.model["embed_dim"]
        if vectors.ndim != 2 or vectors.shape[1] != dim:
            raise MedfmError(f"index {self.location} holds {dim}-d vectors; got an array of shape {vectors.shape}")
        if len(ids) != len(vectors) or (metadata is not None and len(metadata) != len(ids)):
            raise MedfmError(f"got {len(ids)} ids for {len(vectors)} vectors"
                             + (f" and {len(metadata)} metadata entries" if metadata is not None else ""))
        if len(set(int(i) for i in ids)) != len(ids):
            raise MedfmError("ids must be unique within one call")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise MedfmError("vectors must be finite and non-zero")
        # cosine scores are plain dot products only for unit rows
        return vectors / norms

    def _check_query(self, query: np.ndarray, k: int) -> np.ndarray:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.model["embed_dim"]:
            raise MedfmError(f"index {self.location} holds {self.model['embed_dim']}-d vectors; the query has {query.shape[0]}")
        if k < 1:
            raise MedfmError(f"k must be a positive number of hits, got {k}")
        return query / max(float(np.linalg.norm(query)), 1e-12)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def ids(self) -> set[int]:
        """Every id held."""

    @abstractmethod
    def add(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Store ``vectors`` ``(N, D)`` under new ``ids``; an id already held is refused."""

    @abstractmethod
    def update(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        """Replace the vectors and metadata of ``ids``, which must be held."""

    @abstractmethod
    def delete(self, ids: Sequence[int]) -> None:
        """Remove ``ids``; ids not held are ignored."""

    @abstractmethod
    def records(self, where: Mapping[str, Any] | None = None) -> list[tuple[int, Metadata]]:
        """``(id, metadata)`` of every item matching ``where`` (equality on each key), by id."""

    @abstractmethod
    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored ``(N, D)`` float32 vectors of ``ids``, in that order."""

    @abstractmethod
    def search(self, query: np.ndarray, k: int = 10, where: Mapping[str, Any] | None = None, exact: bool = False) -> list[Hit]:
        """The ``k`` items most similar to ``query`` ``(D,)`` that match ``where``, best first.

        ``exact`` compares against every matching vector; otherwise the engine's
        approximate search is used where it is faster.
        """

    @abstractmethod
    def save(self) -> None:
        """Make every change so far durable."""

    @abstractmethod
    def discard(self) -> None:
        """Delete the whole index (files or collection); the object is unusable after."""

    def close(self) -> None:
        """Release the engine's resources (unsaved changes are lost)."""

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r}, model={self.model['name']!r}, size={len(self)})"

