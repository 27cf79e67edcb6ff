"""The embedded default index: a folder with usearch vectors and SQLite metadata.

Why usearch rather than FAISS (both have wheels here, see the dependency notes):

- **add / delete / update by id**: usearch keys every vector by a 64-bit id and removes
  and re-adds in place; FAISS's HNSW index cannot remove vectors at all (only its flat
  and IVF indexes can), so updates would mean rebuilding.
- **persistence**: one ``save``/``load`` file per index, which we checksum; FAISS is the
  same here.
- **speed and memory**: HNSW in both; usearch stores f32, f16 or i8 vectors in the graph
  (``dtype``). Measured by ``benchmarks/embed_bench.py`` at 100k clustered 512-d vectors
  on 2 busy cores: usearch f16 reaches recall@10 0.99 at p50 0.3 ms (122 MB); i8 stalls
  near 0.88 recall (quantisation); FAISS HNSW32 is as accurate and builds ~4x faster
  (27 s against 106 s) but cannot delete. f32 is the default, so stored vectors are
  exactly the encoder's; the ``large`` profile (f16, a wider graph: :data:`PROFILES`)
  is for large collections.
- **filtered search**: neither filters on metadata natively from Python (FAISS has id
  selectors, usearch none), so filters are answered here: SQLite finds the matching ids;
  a small match set is scored exactly from its stored vectors, a large one by
  approximate search with oversampling, widened until ``k`` matches are found.

Folder layout: ``index.json`` (format, model, settings, the data files and their
sha256), ``vectors-<generation>.usearch`` and ``metadata-<generation>.sqlite``. A save
writes a new generation and then replaces ``index.json`` atomically, so a crash leaves
the previous state whole; opening verifies every checksum and refuses a damaged file
rather than return silently wrong hits.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from usearch.index import Index as UsearchGraph

from medfm.errors import MedfmError, display_path
from medfm.index.base import Hit, Index, Metadata, MissingIdsError, clean_metadata
from medfm.io.formats import atomic_path

MANIFEST = "index.json"
FORMAT = "medfm-index"
VERSION = 1
#: expansion_search 128 rather than 64: at 1M's density (500 vectors per cluster; 200k over 400
#: centres) recall@10 rises from 0.945 to 0.974 for about 0.35 ms more CPU per query.
DEFAULT_SETTINGS = {"dtype": "f32", "connectivity": 16, "expansion_add": 64, "expansion_search": 128}
#: Named starting points for the settings: ``default`` keeps the encoder's exact vectors and
#: builds fast; ``large`` is for collections of 100k vectors and more, where the default
#: graph's recall@10 falls with size (0.92-0.93 at 1M; 0.974 at 200k vectors as dense as 1M's,
#: against 0.999 for ``large``): a wider graph, built and searched with more candidates,
#: storing f16 so that it still takes 41 % less memory, in the same build time. Figures in
#: docs/scaling.md, measured by benchmarks/scale_bench.py.
PROFILES = {
    "default": DEFAULT_SETTINGS,
    "large": {"dtype": "f16", "connectivity": 32, "expansion_add": 128, "expansion_search": 128},
}
#: Vectors added at once below which the graph is built on one thread: usearch's threads make the graph, and
#: so every approximate search, depend on their timing; one thread builds the same graph every time, and
#: threads pay only for large batches (``index build`` adds 256 at a time; the scale benchmark's 50k keep them).
SINGLE_THREAD_BELOW = 10_000
#: Filtered searches matching at most this many items are scored exactly: cheaper than
#: oversampling the graph, and exact.
EXACT_FILTER_LIMIT = 20_000


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _json_path(key: str) -> str:
    return '$."' + key.replace('"', '""') + '"'


class LocalIndex(Index):
    """An index in a folder; create with :meth:`create`, reopen with :meth:`open`.

    ``settings``: ``profile`` (a named set of the others, see :data:`PROFILES`; ``default``
    unless given), usearch's ``dtype`` (``"f32"``, ``"f16"``, ``"i8"``: how vectors are
    stored), ``connectivity`` (graph degree), ``expansion_add`` and ``expansion_search``
    (candidate list sizes: higher is slower and more accurate). Settings given beside a
    profile override its values.
    """

    def __init__(self, folder: Path, model: dict[str, Any], settings: dict[str, Any],
                 graph: UsearchGraph, db: sqlite3.Connection) -> None:
        self.folder = folder
        self.location = display_path(folder)
        self.model = model
        self.settings = settings
        self._graph = graph
        self._db = db

    @staticmethod
    def _new_graph(model: dict[str, Any], settings: dict[str, Any]) -> UsearchGraph:
        return UsearchGraph(ndim=model["embed_dim"], metric="cos", dtype=settings["dtype"],
                            connectivity=settings["connectivity"], expansion_add=settings["expansion_add"],
                            expansion_search=settings["expansion_search"])

    @classmethod
    def create(cls, folder: str | os.PathLike, model: dict[str, Any], **settings: Any) -> LocalIndex:
        """A new, empty index in ``folder`` (created; it must not hold an index already)."""
        folder = Path(folder)
        if (folder / MANIFEST).exists():
            raise MedfmError(f"{display_path(folder)} already holds an index; open it instead")
        profile = settings.pop("profile", None) or "default"
        if profile not in PROFILES:
            raise MedfmError(f"unknown index profile {profile!r}; choose from {', '.join(PROFILES)}")
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise MedfmError(f"unknown index settings {sorted(unknown)}; choose from profile, {', '.join(DEFAULT_SETTINGS)}")
        settings = {**PROFILES[profile], **settings}
        if settings["dtype"] not in ("f32", "f16", "i8"):
            raise MedfmError(f"index dtype must be one of f32, f16, i8; got {settings['dtype']!r}")
        db = _memory_db()
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, metadata TEXT NOT NULL)")
        index = cls(folder, dict(model), settings, cls._new_graph(model, settings), db)
        index.save()
        return index

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        return (Path(folder) / MANIFEST).exists()

    @classmethod
    def open(cls, folder: str | os.PathLike) -> LocalIndex:
        """Reopen a saved index after checking every file against its recorded sha256."""
        folder = Path(folder)
        where = display_path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise MedfmError(f"{where} is not a medfm index (no {MANIFEST}); build one with `medfm index build`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MedfmError(f"index {where}: {MANIFEST} is damaged ({exc}); rebuild the index") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise MedfmError(f"index {where}: {MANIFEST} is not a medfm index manifest")
        if manifest.get("version") != VERSION:
            raise MedfmError(f"index {where} has format version {manifest.get('version')}; this medfm reads {VERSION}")
        try:
            entries = {role: manifest["files"][role] for role in ("vectors", "metadata")}
            model, settings, count = manifest["model"], manifest["settings"], manifest["count"]
        except (KeyError, TypeError):
            raise MedfmError(f"index {where}: {MANIFEST} lacks required fields; rebuild the index") from None
        files = {}
        for role, entry in entries.items():
            path = folder / entry["name"]
            if not path.is_file():
                raise MedfmError(f"index {where}: {entry['name']} is missing; the index is incomplete, rebuild it")
            if _sha256(path) != entry["sha256"]:
                raise MedfmError(f"index {where}: {entry['name']} does not match the checksum recorded when it "
                                 "was saved; the file is damaged, rebuild the index")
            files[role] = path
        graph = cls._new_graph(model, settings)
        graph.load(os.fspath(files["vectors"]))
        db = _memory_db()
        source = sqlite3.connect(files["metadata"])
        source.backup(db)
        source.close()
        index = cls(folder, model, settings, graph, db)
        if len(graph) != len(index) or len(index) != count:
            raise MedfmError(f"index {where}: vectors ({len(graph)}) and metadata ({len(index)}) disagree; rebuild the index")
        return index

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        generation = secrets.token_hex(6)
        vectors = self.folder / f"vectors-{generation}.usearch"
        metadata = self.folder / f"metadata-{generation}.sqlite"
        try:
            self._graph.save(os.fspath(vectors))
            target = sqlite3.connect(metadata)
            try:
                self._db.backup(target)
            finally:
                target.close()
        except (OSError, RuntimeError, sqlite3.Error) as exc:  # a full or read-only disk: the last saved generation stands
            vectors.unlink(missing_ok=True)
            metadata.unlink(missing_ok=True)
            raise MedfmError(f"index {display_path(self.folder)}: cannot save: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        manifest = {
            "format": FORMAT, "version": VERSION, "backend": "usearch", "model": self.model,
            "settings": self.settings, "count": len(self),
            "files": {"vectors": {"name": vectors.name, "sha256": _sha256(vectors)},
                      "metadata": {"name": metadata.name, "sha256": _sha256(metadata)}},
        }
        with atomic_path(self.folder / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2))
        # earlier generations (and leftovers of an interrupted save) are no longer referenced
        for stale in [*self.folder.glob("vectors-*.usearch"), *self.folder.glob("metadata-*.sqlite")]:
            if stale not in (vectors, metadata):
                stale.unlink(missing_ok=True)

    def set_expansion_search(self, expansion: int) -> None:
        """Search with ``expansion`` candidates from now on (kept on :meth:`save`): recall against
        latency, tunable without rebuilding the graph."""
        if int(expansion) < 1:
            raise MedfmError(f"expansion_search must be a positive number of candidates, got {expansion}")
        self._graph.expansion_search = int(expansion)
        self.settings = {**self.settings, "expansion_search": int(expansion)}

    def close(self) -> None:
        self._db.close()

    def discard(self) -> None:
        """Delete the index's files, and its folder if that leaves it empty."""
        self._db.close()
        for name in [MANIFEST, *(p.name for p in self.folder.glob("vectors-*.usearch")),
                     *(p.name for p in self.folder.glob("metadata-*.sqlite"))]:
            (self.folder / name).unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:  # the user's own files are there too
            pass

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM items").fetchone()[0]

    def ids(self) -> set[int]:
        return {row[0] for row in self._db.execute("SELECT id FROM items")}

    def add(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        vectors = self._check_vectors(ids, vectors, metadata)
        keys = np.asarray(ids, dtype=np.uint64)
        if len(keys) and self._graph.contains(keys).any():
            held = keys[self._graph.contains(keys)]
            raise MedfmError(f"index {self.location} already holds id(s) {', '.join(map(str, held[:5]))}; use update")
        # one transaction: if the graph refuses the vectors, the metadata rows roll back
        with self._db:
            self._db.executemany("INSERT INTO items (id, metadata) VALUES (?, ?)",
                                 [(int(i), json.dumps(clean_metadata(m))) for i, m in zip(ids, metadata)])
            if len(keys):
                self._graph.add(keys, vectors, threads=1 if len(keys) < SINGLE_THREAD_BELOW else 0)

    def update(self, ids: Sequence[int], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]) -> None:
        vectors = self._check_vectors(ids, vectors, metadata)
        keys = np.asarray(ids, dtype=np.uint64)
        absent = keys[~self._graph.contains(keys)] if len(keys) else keys
        if len(absent):
            raise MedfmError(f"index {self.location} has no id(s) {', '.join(map(str, absent[:5]))}; use add")
        self.delete(ids)
        self.add(ids, vectors, metadata)

    def delete(self, ids: Sequence[int]) -> None:
        keys = np.asarray(ids, dtype=np.uint64)
        if not len(keys):
            return
        with self._db:
            self._db.executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])
        self._graph.remove(keys[self._graph.contains(keys)])

    def records(self, where: Mapping[str, Any] | None = None) -> list[tuple[int, Metadata]]:
        sql, params = "SELECT id, metadata FROM items", []
        if where:
            conditions = clean_metadata(where)
            sql += " WHERE " + " AND ".join("json_extract(metadata, ?) = ?" for _ in conditions)
            for key, value in conditions.items():
                params += [_json_path(key), value]
        return [(row[0], json.loads(row[1])) for row in self._db.execute(sql + " ORDER BY id", params)]

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        outside = [int(i) for i in ids if not 0 <= int(i) < 2**63]  # no key can hold them (SQLite ids are int64)
        if outside:
            raise MissingIdsError(self.location, outside)
        keys = np.asarray(ids, dtype=np.uint64)
        if len(keys) and not self._graph.contains(keys).all():
            raise MissingIdsError(self.location, keys[~self._graph.contains(keys)])
        if not len(keys):
            return np.zeros((0, self.model["embed_dim"]), np.float32)
        return np.stack(self._graph.get(keys, dtype="f32")).astype(np.float32, copy=False)

    def search(self, query: np.ndarray, k: int = 10, where: Mapping[str, Any] | None = None, exact: bool = False) -> list[Hit]:
        query = self._check_query(query, k)
        if not where:
            if not len(self):
                return []
            matches = self._graph.search(query, min(k, len(self)), exact=exact)
            found = [(int(key), 1.0 - float(dist)) for key, dist in zip(matches.keys, matches.distances)]
        else:
            allowed = dict(self.records(where))
            if exact or len(allowed) <= EXACT_FILTER_LIMIT:
                found = self._exact_among(query, k, list(allowed))
            else:
                found = self._oversampled(query, k, allowed)
        metadata = dict(self._metadata_of([key for key, _ in found]))
        return [Hit(key, score, metadata[key]) for key, score in found]

    def _exact_among(self, query: np.ndarray, k: int, ids: list[int]) -> list[tuple[int, float]]:
        if not ids:
            return []
        scores = self.vectors(ids) @ query
        best = np.argsort(-scores, kind="stable")[:k]
        return [(ids[i], float(scores[i])) for i in best]

    def _oversampled(self, query: np.ndarray, k: int, allowed: Mapping[int, Metadata]) -> list[tuple[int, float]]:
        # enough candidates that, were matches spread evenly, about 2k would pass the filter
        count = min(len(self), 2 * k * -(-len(self) // len(allowed)))
        while True:
            matches = self._graph.search(query, count)
            found = [(int(key), 1.0 - float(dist)) for key, dist in zip(matches.keys, matches.distances) if int(key) in allowed]
            if len(found) >= k or count >= len(self):
                return found[:k]
            count = min(len(self), count * 4)

    def _metadata_of(self, ids: list[int]) -> list[tuple[int, Metadata]]:
        if not ids:
            return []
        rows = self._db.execute(f"SELECT id, metadata FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)
        return [(row[0], json.loads(row[1])) for row in rows]


def _memory_db() -> sqlite3.Connection:
    """The in-memory metadata table. An index may be opened in one thread and used in another
    (a server's worker threads); like the vector graph, it must not be used by two at once."""
    return sqlite3.connect(":memory:", check_same_thread=False)
