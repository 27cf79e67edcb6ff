"""The same index in a Milvus collection: ``http(s)://HOST:PORT/COLLECTION`` (a Milvus server)
or ``PATH.db/COLLECTION`` (milvus-lite, embedded in this process, data in the folder ``PATH.db``).

The location is Milvus's own address (what ``pymilvus.MilvusClient`` takes) followed by the
collection. Milvus persists, indexes and filters: one collection per index with an INT64
primary key ``id``, a ``vector`` field searched by an HNSW graph in cosine space
(:data:`INDEX_PARAMS`, the embedded ``large`` profile's graph) and the flat metadata as a
JSON field ``metadata``, which filters address as ``metadata["KEY"] == "VALUE"``. The
collection's properties record the model, so that every client refuses queries from another
one. Needs the ``milvus`` extra (``pymilvus``, and ``milvus-lite`` for ``.db`` locations);
medfm never starts a Milvus server itself.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
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

SERVER_SCHEMES = ("http://", "https://")
LITE_SUFFIX = ".db"
_MODEL_KEYS = {"name": "medfm.model", "embed_dim": "medfm.embed_dim", "weights_sha256": "medfm.weights_sha256"}
#: HNSW as the embedded ``large`` profile builds it (connectivity 32, expansion_add 128); both
#: milvus-lite (FAISS ``IndexHNSWFlat``) and the Milvus server take these names.
INDEX_PARAMS = {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 32, "efConstruction": 128}}
#: Candidates examined per search (the ``large`` profile's expansion_search; Milvus needs at least ``k``).
EF_SEARCH = 128
#: The most hits one Milvus search returns (the server's ``topk`` limit).
MAX_RESULTS = 16_384
# rows per insert, get and query page: a few MB per gRPC message for 512-d vectors
_PAGE = 1000
_INT64 = (-(2**63), 2**63)


def is_milvus_location(location: str | os.PathLike) -> bool:
    """Whether ``location`` names a Milvus collection rather than a local index folder."""
    text = os.fspath(location)
    return text.startswith(SERVER_SCHEMES) or Path(text).parent.name.endswith(LITE_SUFFIX) or text.endswith(LITE_SUFFIX)


def _split(location: str) -> tuple[str, str]:
    """``(Milvus URI, collection)`` of a location, checked."""
    if location.startswith(SERVER_SCHEMES):
        parts = urlsplit(location)
        name = parts.path.strip("/")
        if not parts.hostname or not parts.port or not name or "/" in name:
            raise MedfmError(f"Milvus index address must look like http://HOST:PORT/COLLECTION, got {location!r}")
        return f"{parts.scheme}://{parts.hostname}:{parts.port}", name
    path = Path(location)
    if not path.parent.name.endswith(LITE_SUFFIX):
        raise MedfmError(f"a milvus-lite index must look like PATH.db/COLLECTION, got {location!r}")
    return os.fspath(path.parent.resolve()), path.name


def _message(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc).splitlines()[0]


class _Client:
    """A ``pymilvus.MilvusClient`` whose errors (a server gone away mid-build, a refused request) are
    one-line :class:`MedfmError` naming the index; a resumed build then skips what was written."""

    def __init__(self, client: Any, location: str) -> None:
        from pymilvus import MilvusException

        self._client = client
        self._location = location
        self._error = MilvusException

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        bounded = _takes_timeout(type(self._client), name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if bounded:
                kwargs.setdefault("timeout", server_timeout_s())
            with self.errors():
                return method(*args, **kwargs)
        return call

    @contextmanager
    def errors(self) -> Iterator[None]:
        import grpc

        try:
            yield
        except self._error as exc:
            raise MedfmError(f"Milvus index {self._location}: {_message(exc)}") from None
        except grpc.RpcError as exc:  # pymilvus lets transport failures through: a hung or vanished server
            what = (f"the server did not answer within {server_timeout_s():g} s ({TIMEOUT_ENV})"
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else f"lost the server: {exc.details()}")
            raise IndexUnavailableError(self._location, f"Milvus index {self._location}: {what}") from None


@functools.cache
def _takes_timeout(client_type: type, name: str) -> bool:
    """Whether the client's method ``name`` takes ``timeout``: a server that hangs without closing the connection
    must not hold a build forever, so every such call is given one."""
    return "timeout" in inspect.signature(getattr(client_type, name)).parameters


def _connect(location: str) -> tuple[_Client, str]:
    uri, name = _split(location)
    try:
        from pymilvus import MilvusClient, MilvusException
    except ImportError:
        raise MedfmError("Milvus indexes need the pymilvus package: pip install 'medfm[milvus]'") from None
    # pymilvus logs every failed call with its traceback on stderr; the failure reaches the caller as
    # an exception, which medfm reports in one line
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    if not uri.startswith(SERVER_SCHEMES):
        try:
            import milvus_lite  # noqa: F401  (pymilvus starts it for .db locations)
        except ImportError:
            raise MedfmError("PATH.db indexes need the milvus-lite package: pip install 'medfm[milvus]'") from None
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return _Client(MilvusClient(uri, timeout=server_timeout_s()), location), name
    except MilvusException as exc:
        where = uri if not uri.startswith(SERVER_SCHEMES) else urlsplit(uri).netloc
        raise MedfmError(f"cannot reach the Milvus server at {where}: {_message(exc)}") from None


def _quote(text: str) -> str:
    """A string literal of Milvus's filter language (double quotes, C-style escapes)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _filter(where: Mapping[str, Any] | None) -> str:
    return " and ".join(f"metadata[{_quote(key)}] == {_quote(value)}" for key, value in clean_metadata(where or {}).items())


def _in_int64(ids: Sequence[int]) -> list[int]:
    return [int(i) for i in ids if _INT64[0] <= int(i) < _INT64[1]]


class MilvusIndex(Index):
    """A collection on a Milvus server or in milvus-lite; :meth:`create` or :meth:`open` it by location."""

    def __init__(self, location: str, client: Any, collection: str, model: dict[str, Any]) -> None:
        self.location = location
        self.model = model
        self._client = client
        self._collection = collection
        self.expansion_search = EF_SEARCH

    def set_expansion_search(self, expansion: int) -> None:
        """Search with ``expansion`` candidates (HNSW ``ef``) from now on, in this client only:
        recall against latency, as :meth:`medfm.index.local.LocalIndex.set_expansion_search`."""
        if int(expansion) < 1:
            raise MedfmError(f"expansion_search must be a positive number of candidates, got {expansion}")
        self.expansion_search = int(expansion)

    @staticmethod
    def exists(location: str | os.PathLike) -> bool:
        location = os.fspath(location)
        uri, _ = _split(location)
        if not uri.startswith(SERVER_SCHEMES) and not Path(uri).exists():
            return False  # no need to start milvus-lite (and create its folder) to know
        client, name = _connect(location)
        try:
            return bool(client.has_collection(name))
        finally:
            client.close()

    @classmethod
    def create(cls, location: str | os.PathLike, model: dict[str, Any], **settings: Any) -> MilvusIndex:
        """A new collection for vectors of ``model``; refuses an existing one."""
        location = os.fspath(location)
        if settings:
            raise MedfmError(f"Milvus indexes use fixed HNSW settings (see medfm.index.milvus); drop the settings {sorted(settings)}")
        client, name = _connect(location)
        if client.has_collection(name):
            client.close()
            raise MedfmError(f"{location} already holds an index; open it instead")
        from pymilvus import DataType

        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(model["embed_dim"]))
        schema.add_field("metadata", DataType.JSON)
        index_params = client.prepare_index_params()
        index_params.add_index("vector", **INDEX_PARAMS)
        properties = {field: str(model[key]) for key, field in _MODEL_KEYS.items() if model.get(key) is not None}
        try:
            # Strong consistency: a search or resumed build sees every write acknowledged before it
            client.create_collection(name, schema=schema, index_params=index_params, properties=properties,
                                     consistency_level="Strong")
        except MedfmError:
            client.close()
            raise
        return cls(location, client, name, dict(model))

    @classmethod
    def open(cls, location: str | os.PathLike) -> MilvusIndex:
        location = os.fspath(location)
        missing = MedfmError(f"{location}: no such index in Milvus; build one with `medfm index build`")
        uri, _ = _split(location)
        if not uri.startswith(SERVER_SCHEMES) and not Path(uri).exists():
            raise missing
        client, name = _connect(location)
        if not client.has_collection(name):
            client.close()
            raise missing
        stored = client.describe_collection(name).get("properties") or {}
        if _MODEL_KEYS["name"] not in stored:
            client.close()
            raise MedfmError(f"{location}: this Milvus collection was not made by medfm (no model recorded)")
        model = {key: stored.get(field) for key, field in _MODEL_KEYS.items()}
        model["embed_dim"] = int(model["embed_dim"])
        client.load_collection(name)
        return cls(location, client, name, model)

    def close(self) -> None:
        self._client.close()

    def __len__(self) -> int:
        return int(self._client.query(self._collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def _rows(self, where: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching the filter ``where``, paged (a single query returns at most :data:`MAX_RESULTS`)."""
        rows, iterator = [], self._client.query_iterator(self._collection, batch_size=_PAGE, filter=where, output_fields=fields)
        with self._client.errors():
            try:
                while page := iterator.next():
                    rows += page
            finally:
                iterator.close()
        return rows

    def _held(self, ids: Sequence[int]) -> set[int]:
        keys, held = _in_int64(ids), set()
        for start in range(0, len(keys), _PAGE):
            held |= {int(row["id"]) for row in self._client.get(self._collection, ids=keys[start:start + _PAGE], output_fields=["id"])}
        return held

    def ids(self) -> set[int]:
        return {int(row["id"]) for row in self._rows("", ["id"])}

    def _write(self, method: str, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        outside = [int(i) for i in ids if not _INT64[0] <= int(i) < _INT64[1]]
        if outside:
            raise MedfmError(f"Milvus ids are 64-bit signed integers; got {outside[0]}")
        rows = [{"id": int(i), "vector": vector, "metadata": clean_metadata(m)} for i, vector, m in zip(ids, vectors, metadata)]
        for start in range(0, len(rows), _PAGE):
            getattr(self._client, method)(self._collection, rows[start:start + _PAGE])

    def add(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        vectors = self._check_vectors(ids, vectors, metadata)
        held = sorted(self._held(ids))
        if held:
            raise MedfmError(f"index {self.location} already holds id(s) {', '.join(map(str, held[:5]))}; use update")
        self._write("insert", ids, vectors, metadata)

    def update(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        vectors = self._check_vectors(ids, vectors, metadata)
        absent = sorted({int(i) for i in ids} - self._held(ids))
        if absent:
            raise MedfmError(f"index {self.location} has no id(s) {', '.join(map(str, absent[:5]))}; use add")
        # upsert replaces whole rows, so a replaced record keeps none of its old metadata keys
        self._write("upsert", ids, vectors, metadata)

    def delete(self, ids: Sequence[int]) -> None:
        keys = _in_int64(ids)
        for start in range(0, len(keys), _PAGE):
            self._client.delete(self._collection, ids=keys[start:start + _PAGE])

    def records(self, where: Mapping[str, Any] | None = None) -> list[tuple[int, Metadata]]:
        found = [(int(row["id"]), row["metadata"]) for row in self._rows(_filter(where), ["metadata"])]
        return sorted(found, key=lambda item: item[0])

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        keys = [int(i) for i in ids]
        by_id: dict[int, Any] = {}
        inside = _in_int64(keys)
        for start in range(0, len(inside), _PAGE):
            by_id |= {int(row["id"]): row["vector"]
                      for row in self._client.get(self._collection, ids=inside[start:start + _PAGE], output_fields=["vector"])}
        absent = [key for key in keys if key not in by_id]
        if absent:
            raise MissingIdsError(self.location, absent)
        # Milvus returns rows in its own order, not the order asked for
        return np.asarray([by_id[key] for key in keys], dtype=np.float32).reshape(len(keys), self.model["embed_dim"])

    def search(self, query: np.ndarray, k: int = 10, where: Mapping[str, Any] | None = None, exact: bool = False) -> list[Hit]:
        query = self._check_query(query, k)
        if exact:
            return self._exact(query, k, where)
        if k > MAX_RESULTS:
            raise MedfmError(f"Milvus returns at most {MAX_RESULTS} hits per search; ask for fewer or search exactly")
        result = self._client.search(self._collection, [query.tolist()], limit=k, filter=_filter(where),
                                     output_fields=["metadata"],
                                     search_params={"metric_type": "COSINE", "params": {"ef": max(self.expansion_search, k)}})
        return [Hit(int(hit["id"]), float(hit["distance"]), hit["entity"]["metadata"]) for hit in result[0]]

    def _exact(self, query: np.ndarray, k: int, where: Mapping[str, Any] | None) -> list[Hit]:
        # a search with HNSW is always approximate: score every matching vector here
        rows = self._rows(_filter(where), ["vector", "metadata"])
        if not rows:
            return []
        scores = np.asarray([row["vector"] for row in rows], dtype=np.float32) @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [Hit(int(rows[i]["id"]), float(scores[i]), rows[i]["metadata"]) for i in best]

    def save(self) -> None:
        """Nothing to do: every write is in Milvus's write-ahead log when its call returns."""

    def discard(self) -> None:
        self._client.drop_collection(self._collection)
