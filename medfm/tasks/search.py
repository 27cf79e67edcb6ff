"""Similar-case search: embed a collection into an index, then query it by image, text or an indexed item.

:func:`build_index` is resumable: ids already in the index are skipped, and the index
is saved after every chunk and at the end, so an interrupted build loses at most one
chunk. A server index (``chroma://``) whose server dies or cannot be reached mid-build
stops it with one :class:`~medfm.index.IndexUnavailableError`; re-running the same build
once the server is back finishes it. Catalogued images keep their catalog id and metadata
(path, modality, body part, dataset); a path given directly gets a stable id derived from
its resolved path.
:func:`delete_images` removes images from a catalog and from its indexes together.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.catalog.store import Catalog, ImageRecord
from medfm.errors import MedfmError, display_path
from medfm.index import Hit, Index, IndexUnavailableError, open_or_create_index
from medfm.io import Image
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import embed_image
from medfm.progress import progress_bar
from medfm.provenance import Provenance, pixels_id, text_id
from medfm.scale import LocalRunner, Runner, split
from medfm.tasks.batch import expand_paths, failure
from medfm.tasks.embed import content_sha256, embed_paths

#: Paths embedded between two checkpoints of the index during a build.
CHUNK = 256
#: A build saves the index at least this often (seconds), and after the last chunk.
SAVE_EVERY_S = 60.0


@dataclass(frozen=True)
class Item:
    """Something to index: ``id``, the image ``path`` and its metadata (which holds ``path``);
    a catalogued image keeps its ``record`` and is read from exactly the record's files."""

    id: int
    path: str
    metadata: dict[str, Any]
    record: ImageRecord | None = None

    @property
    def source(self) -> str | ImageRecord:
        return self.record if self.record is not None else self.path


class Hits(list):
    """The hits of one :func:`search`, best first (a list of :class:`~medfm.index.Hit`), with
    ``provenance``: which model and index answered which query, with which settings, and
    ``best_score``: the best similarity found, also when abstaining dropped every hit."""

    def __init__(self, hits: Sequence[Hit], provenance: Provenance, best_score: float | None = None) -> None:
        super().__init__(hits)
        self.provenance = provenance
        self.best_score = best_score


@dataclass
class BuildReport:
    """What one build did: ``added`` items, ``skipped`` ones already indexed, ``bad`` ``(path, reason)``."""

    index: str
    added: int = 0
    skipped: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)


def path_id(path: str | os.PathLike) -> int:
    """A stable 63-bit id for an image given by path (its resolved path, hashed)."""
    digest = hashlib.blake2b(os.fsencode(Path(path).resolve()), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _looks_like_catalog(source: str) -> bool:
    return "://" in source or source.endswith((".db", ".sqlite", ".sqlite3"))


def collect_items(sources: Sequence[str | os.PathLike], catalog: str | None = None,
                  metadata: Mapping[str, Mapping[str, Any]] | None = None) -> list[Item]:
    """The items named by ``sources`` (catalog URLs or ``.db`` files: all their images; else
    image files, folders of them, or DICOM series folders), by ``catalog`` (all its images) and by ``metadata``
    (``{path: {key: value}}``, e.g. a manifest's captions from
    :func:`medfm.io.manifest.read_manifest_columns`, stored beside each image).

    A catalogued image's ``caption`` (in its catalog metadata, else its dataset manifest's ``caption``
    column) is stored too: report drafting (:mod:`medfm.tasks.report`) composes drafts from indexed captions."""
    metadata = metadata or {}
    sources = [*sources, *metadata]
    from medfm.catalog import open_catalog

    catalogs = [catalog] if catalog else []
    items: dict[int, Item] = {}
    for source in map(os.fspath, sources):
        if _looks_like_catalog(source):
            catalogs.append(source)
        elif not Path(source).exists():
            raise MedfmError(f"{display_path(source)}: no such file or folder")
        else:
            for one in expand_paths([source]):  # a folder of pictures gives each, as for every batch command
                given = os.fspath(one.path)
                resolved = str(Path(given).resolve())
                extra = metadata.get(given) or metadata.get(resolved) or {}
                items.setdefault(path_id(resolved), Item(path_id(resolved), resolved, {**extra, "path": resolved}))
    if len(catalogs) > 1:
        raise MedfmError(f"give one catalog per index build (catalog ids would clash); got {len(catalogs)}")
    for url in catalogs:
        with open_catalog(url, existing=True) as store:
            for record in store.query(with_files=True):
                caption = (record.metadata or {}).get("caption") or record.tags.get("caption")
                stored = {"path": record.source_path, "modality": record.modality, "body_part": record.body_part,
                          "dataset": record.dataset, "caption": caption if isinstance(caption, str) else None}
                items[record.id] = Item(record.id, record.source_path, stored, record)
    if not items:
        raise MedfmError("nothing to index: give image paths, or a catalog with images")
    return list(items.values())


def embed_chunk(encoder: Encoder, chunk: tuple[list[Item], int]) -> tuple[list[Item], np.ndarray, list[tuple[str, str]]]:
    """The items of ``chunk = (items, batch_size)`` that could be embedded, their ``(N, D)`` vectors,
    and ``(path, reason)`` for the others (a runner's unit of work in :func:`build_index`)."""
    items, batch_size = chunk
    try:
        return items, embed_paths([item.source for item in items], encoder, batch_size=batch_size), []
    except MedfmError:
        pass
    # one bad file fails the whole call: find which, and keep the others
    kept, vectors, bad = [], [], []
    for item in items:
        try:
            vectors.append(embed_paths([item.source], encoder, batch_size=batch_size)[0])
            kept.append(item)
        except MedfmError as exc:
            failed = failure(Path(item.path), exc)  # the reason alone when the error names the file already
            bad.append((failed["input"], failed["reason"]))
    return kept, np.asarray(vectors, np.float32).reshape(len(kept), encoder.info.embed_dim), bad


def build_index(
    sources: Sequence[str | os.PathLike],
    encoder: Encoder,
    index: str | os.PathLike,
    *,
    catalog: str | None = None,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    runner: Runner | None = None,
    **settings: Any,
) -> BuildReport:
    """Embed every item of ``sources``, ``catalog`` and ``metadata`` (see :func:`collect_items`) not yet in
    ``index`` (a folder, a ``chroma://`` address or a Milvus location; see :mod:`medfm.index`), created if needed
    with ``settings``.

    Bad images do not stop the build: they are listed in the report; a new index to which
    none could be added is not kept. An existing index built with another model is refused. ``runner`` (e.g. :func:`medfm.scale.ray_runner`
    holding ``encoder``'s model on each worker) embeds the chunks elsewhere; this process
    still writes the index, in the same order, so the result is that of a local build.
    """
    items = collect_items(sources, catalog, metadata)
    store = open_or_create_index(index, encoder.info, **settings)
    report = BuildReport(store.location)
    runner = runner or LocalRunner(encoder)
    try:
        held = store.ids()
        todo = [item for item in items if item.id not in held]
        report.skipped = len(items) - len(todo)
        chunks = [(chunk, batch_size) for chunk in split(todo, runner.workers, CHUNK)]
        saved_at = time.monotonic()
        with progress_bar(progress) as bar:
            task = bar.add_task("embedding", total=len(todo))
            for (chunk, _), (kept, vectors, bad) in zip(chunks, runner.map(embed_chunk, chunks), strict=True):
                store.add([item.id for item in kept], vectors, [item.metadata for item in kept])
                report.added += len(kept)
                report.bad.extend(bad)
                bar.advance(task, len(chunk))
                if time.monotonic() - saved_at > SAVE_EVERY_S:
                    store.save()
                    saved_at = time.monotonic()
        if store.created and not report.added:
            store.discard()  # a new index that would hold nothing (every image bad) is not left behind
        else:
            store.save()
    except IndexUnavailableError as exc:
        # the server keeps what it acknowledged, and a re-run writes exactly the ids it lacks: nothing twice, nothing lost
        raise IndexUnavailableError(exc.location, f"{exc}; the build stopped with at least {report.skipped + report.added} of "
                                                  f"{len(items)} images indexed: run the same command again once the "
                                                  "server is back to index the rest") from None
    finally:
        store.close()
    return report


def delete_images(catalog: Catalog, image_ids: Sequence[int], indexes: Sequence[Index] = ()) -> int:
    """Remove images from ``catalog`` and their vectors from each of its ``indexes`` (saved), so that no search
    finds an image the catalog no longer holds; returns how many images the catalog removed.

    The vectors go first: a failure between the two leaves an image catalogued but not indexed,
    which the next :func:`build_index` (resumable) indexes again, rather than hits for an image that is gone.
    """
    for index in indexes:
        index.delete(image_ids)
        index.save()
    return catalog.delete(image_ids)


def embed_query(encoder: Encoder, *, image: str | os.PathLike | Image | None = None, text: str | None = None) -> np.ndarray:
    """``(D,)`` unit embedding of exactly one of ``image`` (path or :class:`Image`) or ``text``."""
    if (image is None) == (text is None):
        raise MedfmError("give exactly one query: an image or a text")
    if text is not None:
        if not text.strip():
            raise MedfmError("the text query is empty")
        return encoder.encode_text([text])[0]
    if isinstance(image, Image):
        return embed_image(image, encoder)
    # embed_paths names the file in its errors; no cache for one-off queries
    return embed_paths([image], encoder, cache=False)[0]


def search(
    index: Index,
    encoder: Encoder | None,
    *,
    image: str | os.PathLike | Image | None = None,
    text: str | None = None,
    item_id: int | None = None,
    k: int = 10,
    where: Mapping[str, Any] | None = None,
    exact: bool = False,
    abstain_below: float | None = None,
) -> Hits:
    """The ``k`` indexed images most similar to the query, best first, among those whose
    metadata matches ``where`` (``{"modality": "CT"}``, ...); ``exact`` compares against
    every matching vector instead of the approximate graph.

    The query is exactly one of ``image`` (path or :class:`Image`), ``text``, or ``item_id``:
    an indexed item, searched by its stored embedding (nothing is read or encoded; an id
    the index does not hold raises :class:`~medfm.index.MissingIdsError`). ``encoder`` must
    be the index's model; it may be ``None`` for an ``item_id`` query.

    The hits' ``provenance`` (kind ``search``) names the model and its weights, the query
    by a hash (:func:`~medfm.provenance.text_id`, the file's sha256 or
    :func:`~medfm.provenance.pixels_id`: a query text may name the patient) or by the
    indexed item's id, and the index (location and size), ``k``, ``where`` and ``exact``.

    With ``abstain_below`` (a similarity; :func:`medfm.models.registry.abstention_thresholds`
    gives the calibrated one for text queries), hits less similar than it are dropped: a
    query for something the index does not hold then answers with no hits rather than with
    the least unlike ones. ``Hits.best_score`` keeps the best score found either way.
    """
    if sum(query is not None for query in (image, text, item_id)) != 1:
        raise MedfmError("give exactly one query: an image, a text or an indexed item's id")
    if item_id is not None:
        if encoder is not None:
            index.check_model(encoder.info)
        vector, query = index.vectors([item_id])[0], f"index-item:{item_id}"
    else:
        if encoder is None:
            raise MedfmError("an image or text query needs the index's model to embed it")
        index.check_model(encoder.info)
        vector = embed_query(encoder, image=image, text=text)
        query = (text_id(text) if text is not None else pixels_id(image.array) if isinstance(image, Image)
                 else f"file-sha256:{content_sha256(Path(image))}")
    found = index.search(vector, k, where=where, exact=exact)
    provenance = Provenance(
        kind="search", model=index.model["name"], weights_sha256=index.model["weights_sha256"], inputs=(query,),
        parameters={"index": index.location, "size": len(index), "k": k, "where": dict(where or {}), "exact": exact,
                    "abstain_below": abstain_below},
    )
    kept = [hit for hit in found if abstain_below is None or hit.score >= abstain_below]
    return Hits(kept, provenance, best_score=found[0].score if found else None)
