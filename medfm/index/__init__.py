"""Persistent vector indexes of image embeddings: add, update, delete, filtered search.

``create_index``, ``open_index`` and ``open_or_create_index`` take a folder (the embedded
usearch + SQLite default, :mod:`medfm.index.local`), a ``chroma://HOST:PORT/COLLECTION``
address (a Chroma server, :mod:`medfm.index.chroma`), or a Milvus collection: ``http(s)://HOST:PORT/COLLECTION``
(a Milvus server) or ``PATH.db/COLLECTION`` (milvus-lite, embedded; :mod:`medfm.index.milvus`); all give
an :class:`Index`.
"""

from __future__ import annotations

import os
from typing import Any

from medfm.index.base import Hit, Index, IndexUnavailableError, MissingIdsError
from medfm.models.encoders.base import EncoderInfo, model_record


def _backend(location: str | os.PathLike) -> Any:
    from medfm.index.chroma import SCHEME
    from medfm.index.milvus import is_milvus_location

    if isinstance(location, str) and location.startswith(SCHEME):
        from medfm.index.chroma import ChromaIndex

        return ChromaIndex
    if is_milvus_location(location):
        from medfm.index.milvus import MilvusIndex

        return MilvusIndex
    from medfm.index.local import LocalIndex

    return LocalIndex


def create_index(location: str | os.PathLike, model: EncoderInfo, **settings: Any) -> Index:
    """A new, empty index for vectors of ``model``; ``settings`` tune the local backend
    (see :class:`medfm.index.local.LocalIndex`)."""
    return _backend(location).create(location, model_record(model), **settings)


def open_index(location: str | os.PathLike) -> Index:
    """An existing index, checked: a damaged local index is refused."""
    return _backend(location).open(location)


def open_or_create_index(location: str | os.PathLike, model: EncoderInfo, **settings: Any) -> Index:
    """The index at ``location`` if there is one (it must hold ``model``'s vectors), else a new one
    (:attr:`Index.created`)."""
    backend = _backend(location)
    if not backend.exists(location):
        index = backend.create(location, model_record(model), **settings)
        index.created = True
        return index
    index = backend.open(location)
    index.check_model(model)
    return index


__all__ = ["Hit", "Index", "IndexUnavailableError", "MissingIdsError", "create_index", "open_index", "open_or_create_index"]
