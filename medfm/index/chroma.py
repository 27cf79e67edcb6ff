"""The same index on a Chroma server (``chroma run``), addressed as ``chroma://HOST:PORT/COLLECTION``.

The server persists and searches (HNSW, cosine space, the embedded ``large`` profile's graph:
:data:`HNSW`); the collection's metadata records the model, so that every client refuses
queries from another one. Needs the ``chroma``
extra (``chromadb``); medfm never starts the server itself.

Every request waits at most ``MEDFM_INDEX_TIMEOUT_S`` seconds (default 60) for the server,
so one that hangs without closing the connection stops a build like one that died. The
Chroma client itself never times out (chromadb 1.5.9 builds its HTTP session with
``timeout=None`` and offers no setting), so medfm sets its session's timeout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from medfm.errors import MedfmError
from medfm.index.base import (
    TIMEOUT_ENV,
    Hit,
    Index,
    IndexUnavailableError,
    Metadata,
    MissingIdsError,
    clean_metadata,
    server_timeout_s,
)

SCHEME = "chroma://"
#: The collection's graph: the embedded ``large`` profile's (:data:`medfm.index.local.PROFILES`), as
#: Milvus's. Chroma's own defaults (16 neighbours, 100 candidates at build and search) are the narrower
#: graph whose recall falls with size (docs/scaling.md, section 1).
HNSW = {"space": "cosine", "max_neighbors": 32, "ef_construction": 128, "ef_search": 128}
_MODEL_KEYS = {"name": "medfm_model", "embed_dim": "medfm_embed_dim", "weights_sha256": "medfm_weights_sha256"}
# Chroma refuses larger pages than its max batch size; this stays well under it
_PAGE = 1000
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    conditions = [{key: value} for key, value in clean_metadata(where or {}).items()]
    if len(conditions) > 1:
        return {"$and": conditions}
    return conditions[0] if conditions else None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@contextmanager
def _answering(url: str) -> Iterator[None]:
    """A server that dies or cannot be reached inside the block raised as an :class:`IndexUnavailableError`
    naming the server, instead of the HTTP client's exception."""
    import httpx

    try:
        yield
    except httpx.TimeoutException:
        parts = urlsplit(url)
        raise IndexUnavailableError(url, f"the Chroma server at {parts.hostname}:{parts.port} did not answer "
                                         f"within {server_timeout_s():g} s ({TIMEOUT_ENV})") from None
    except httpx.TransportError as exc:
        parts = urlsplit(url)
        # the transport's own words (refused, reset, disconnected): never the request's content
        raise IndexUnavailableError(url, f"lost the Chroma server at {parts.hostname}:{parts.port}: "
                                         f"{_first_line(exc).rstrip('.')}") from None


def _server_call(method: _Method) -> _Method:
    """``method`` run :func:`_answering` its index's server."""

    @functools.wraps(method)
    def call(self: ChromaIndex, *args: Any, **kwargs: Any) -> Any:
        with _answering(self.location):
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


def _connect(url: str) -> tuple[Any, str]:
    try:
        import chromadb
        import httpx
        from chromadb.config import Settings
    except ImportError:
        raise MedfmError("chroma:// indexes need the chromadb package: pip install 'medfm[chroma]'") from None
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if not parts.hostname or not parts.port or not name:
        raise MedfmError(f"Chroma index address must look like chroma://HOST:PORT/COLLECTION, got {url!r}")
    timeout = httpx.Timeout(server_timeout_s())
    try:
        # the client's constructor already talks to the server, without a timeout: ask with one first
        httpx.get(f"http://{parts.hostname}:{parts.port}/api/v2/heartbeat", timeout=timeout).raise_for_status()
        client = chromadb.HttpClient(host=parts.hostname, port=parts.port,
                                     settings=Settings(anonymized_telemetry=False))
    except httpx.TimeoutException:
        raise MedfmError(f"the Chroma server at {parts.hostname}:{parts.port} did not answer within "
                         f"{server_timeout_s():g} s ({TIMEOUT_ENV})") from None
    except Exception as exc:
        raise MedfmError(f"cannot reach the Chroma server at {parts.hostname}:{parts.port}: {_first_line(exc)}") from None
    client._server._session.timeout = timeout  # pinned chromadb 1.5.9: the HTTP session of its FastAPI client
    return client, name


class ChromaIndex(Index):
    """A collection on a Chroma server; :meth:`create` or :meth:`open` it by URL."""

    def __init__(self, url: str, collection: Any, model: dict[str, Any]) -> None:
        self.location = url
        self.model = model
        self._collection = collection

    @staticmethod
    def exists(url: str) -> bool:
        client, name = _connect(url)
        with _answering(url):
            return name in {collection.name for collection in client.list_collections()}

    @classmethod
    def create(cls, url: str, model: dict[str, Any], **settings: Any) -> ChromaIndex:
        """A new collection for vectors of ``model``; refuses an existing one."""
        if settings:
            raise MedfmError(f"Chroma indexes use fixed HNSW settings (see medfm.index.chroma); drop the settings {sorted(settings)}")
        if cls.exists(url):
            raise MedfmError(f"{url} already holds an index; open it instead")
        client, name = _connect(url)
        metadata = {_MODEL_KEYS[key]: value for key, value in model.items() if value is not None}
        try:
            collection = client.create_collection(name, embedding_function=None, metadata=metadata,
                                                  configuration={"hnsw": HNSW})
        except Exception as exc:
            raise MedfmError(f"cannot create Chroma collection {name!r}: {str(exc).splitlines()[0]}") from None
        return cls(url, collection, dict(model))

    @classmethod
    def open(cls, url: str) -> ChromaIndex:
        from chromadb.errors import NotFoundError

        client, name = _connect(url)
        try:
            with _answering(url):
                collection = client.get_collection(name, embedding_function=None)
        except NotFoundError:
            raise MedfmError(f"{url}: no such index on the Chroma server; build one with `medfm index build`") from None
        stored = collection.metadata or {}
        if _MODEL_KEYS["name"] not in stored:
            raise MedfmError(f"{url}: this Chroma collection was not made by medfm (no model recorded)")
        model = {key: stored.get(field) for key, field in _MODEL_KEYS.items()}
        model["embed_dim"] = int(model["embed_dim"])
        return cls(url, collection, model)

    @_server_call
    def set_expansion_search(self, expansion: int) -> None:
        """Search with ``expansion`` candidates (HNSW ``ef``) from now on: recall against latency, as
        :meth:`medfm.index.local.LocalIndex.set_expansion_search`. Chroma keeps it per collection,
        so every client of this collection searches with it."""
        if int(expansion) < 1:
            raise MedfmError(f"expansion_search must be a positive number of candidates, got {expansion}")
        self._collection.modify(configuration={"hnsw": {"ef_search": int(expansion)}})

    @_server_call
    def __len__(self) -> int:
        return self._collection.count()

    @_server_call
    def _pages(self, **query: Any) -> list[dict[str, Any]]:
        pages, offset = [], 0
        while True:
            page = self._collection.get(limit=_PAGE, offset=offset, **query)
            pages.append(page)
            if len(page["ids"]) < _PAGE:
                return pages
            offset += _PAGE

    def _get(self, keys: list[str], include: list[str]) -> dict[str, list[Any]]:
        """``collection.get(ids=keys)`` a page of ids at a time: the server looks ids up in one SQLite
        statement, which takes at most 32,766 of them."""
        found: dict[str, list[Any]] = {"ids": [], **{field: [] for field in include}}
        for start in range(0, len(keys), _PAGE):
            page = self._collection.get(ids=keys[start:start + _PAGE], include=include)
            for field in found:
                found[field] += list(page[field])
        return found

    def ids(self) -> set[int]:
        return {int(i) for page in self._pages(include=[]) for i in page["ids"]}

    @_server_call
    def add(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        vectors = self._check_vectors(ids, vectors, metadata)
        keys = [str(int(i)) for i in ids]
        held = self._get(keys, [])["ids"]
        if held:
            raise MedfmError(f"index {self.location} already holds id(s) {', '.join(held[:5])}; use update")
        for start in range(0, len(keys), _PAGE):
            stop = start + _PAGE
            self._collection.add(ids=keys[start:stop], embeddings=vectors[start:stop],
                                 metadatas=[clean_metadata(m) for m in metadata[start:stop]])

    @_server_call
    def update(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        self._check_vectors(ids, vectors, metadata)
        keys = [str(int(i)) for i in ids]
        absent = set(keys) - set(self._get(keys, [])["ids"])
        if absent:
            raise MedfmError(f"index {self.location} has no id(s) {', '.join(sorted(absent)[:5])}; use add")
        # delete then add: Chroma's update merges metadata, and a replaced record must not keep old keys
        self.delete(ids)
        self.add(ids, vectors, metadata)

    @_server_call
    def delete(self, ids: Sequence[int]) -> None:
        keys = [str(int(i)) for i in ids]
        for start in range(0, len(keys), _PAGE):
            self._collection.delete(ids=keys[start:start + _PAGE])

    def records(self, where: Mapping[str, Any] | None = None) -> list[tuple[int, Metadata]]:
        found = [(int(i), m) for page in self._pages(where=_where(where), include=["metadatas"])
                 for i, m in zip(page["ids"], page["metadatas"])]
        return sorted(found, key=lambda item: item[0])

    @_server_call
    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        keys = [str(int(i)) for i in ids]
        got = self._get(keys, ["embeddings"])
        by_id = dict(zip(got["ids"], got["embeddings"]))
        absent = [key for key in keys if key not in by_id]
        if absent:
            raise MissingIdsError(self.location, absent)
        # Chroma returns records in its own order, not the order asked for
        return np.asarray([by_id[key] for key in keys], dtype=np.float32).reshape(len(keys), self.model["embed_dim"])

    @_server_call
    def search(self, query: np.ndarray, k: int = 10, where: Mapping[str, Any] | None = None, exact: bool = False) -> list[Hit]:
        query = self._check_query(query, k)
        if exact:
            return self._exact(query, k, where)
        # no count first: the server returns fewer than k hits when it holds fewer, and counting costs ~0.1 ms
        # per thousand vectors (100 ms at 1M, 20 times the search)
        result = self._collection.query(query_embeddings=[query], n_results=k, where=_where(where),
                                        include=["metadatas", "distances"])
        return [Hit(int(i), 1.0 - float(d), m) for i, d, m in
                zip(result["ids"][0], result["distances"][0], result["metadatas"][0])]

    def _exact(self, query: np.ndarray, k: int, where: Mapping[str, Any] | None) -> list[Hit]:
        # Chroma has no brute-force mode: score every matching vector here
        ids, metadata, vectors = [], [], []
        for page in self._pages(where=_where(where), include=["metadatas", "embeddings"]):
            ids += page["ids"]
            metadata += page["metadatas"]
            vectors += list(page["embeddings"])
        if not ids:
            return []
        scores = np.asarray(vectors, dtype=np.float32) @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(int(ids[i]), float(scores[i]), metadata[i]) for i in best]

    def save(self) -> None:
        """Nothing to do: the server makes each write durable."""

    @_server_call
    def discard(self) -> None:
        client, name = _connect(self.location)
        client.delete_collection(name)
