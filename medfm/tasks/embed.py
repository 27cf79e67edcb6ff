"""One embedding per image, for similar-case search and zero/few-shot classification.

A 2D image is one plane. A volume or a video is embedded plane by plane and aggregated:
up to ``max_planes`` planes, evenly spaced over all its ``(k, t)`` planes (the centres of
``max_planes`` equal runs, so the first and last slices, often outside the body, are
not favoured), are encoded, and the mean of their unit embeddings is re-normalised.

:func:`embed_paths` caches each file's embedding on disk, keyed by the sha256 of the
file's bytes (a folder or a catalog record: of its files' names and bytes) with the encoder's name, its
weights' sha256 and the aggregation settings, so a re-run or a grown collection only
embeds what is new. Encoders with random weights (no ``weights_sha256``) are never
cached: nothing identifies their weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medfm.catalog.loading import load_record, record_paths
from medfm.catalog.store import ImageRecord
from medfm.errors import FileError, MedfmError, display_path
from medfm.io import Image, load
from medfm.io.formats import atomic_path
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import MAX_PLANES, Window, aggregate, sample_planes
from medfm.paths import data_dir
from medfm.scale import Runner, split

#: Bump when the aggregation changes, so that older cached embeddings are not reused.
_CACHE_VERSION = 1

#: ``progress(done, total)``: files finished so far, out of all.
Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``data_dir()/cache/embeddings``."""
    return data_dir() / "cache" / "embeddings"


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file names and bytes in sorted order."""
    if path.is_dir():
        return files_sha256(path, sorted(p for p in path.rglob("*") if p.is_file()))
    return files_sha256(path.parent, [path], names=False)


def files_sha256(folder: Path, files: Sequence[Path], names: bool = True) -> str:
    """sha256 of ``files``' names relative to ``folder`` (with ``names``) and bytes, in the order given."""
    digest = hashlib.sha256()
    for file in files:
        if names:
            digest.update(os.fsencode(file.relative_to(folder)) + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def record_sha256(record: ImageRecord) -> str:
    """sha256 of a catalog record's files: their names (relative to their common folder) and bytes."""
    paths = sorted(record_paths(record))
    return files_sha256(Path(os.path.commonpath([str(p.parent) for p in paths])), paths)


def _source(source: str | os.PathLike | ImageRecord, cached: bool) -> tuple[str, Path | None, str | None, Callable[[], Image]]:
    """``(name for messages, path or None for a record, content hash for the cache or None, loader)``."""
    if isinstance(source, ImageRecord):
        present = cached and all(p.is_file() for p in record_paths(source))
        content = record_sha256(source) if present else None
        return f"catalog image {source.id}", None, content, lambda: load_record(source)
    path = Path(os.fsdecode(source))
    content = content_sha256(path) if cached and path.exists() else None
    return display_path(path), path, content, lambda: load(path)  # load's errors name the file already


def _planes_of(image: Image, name: str, path: Path | None, max_planes: int, window: Window | None) -> list[np.ndarray]:
    try:
        return sample_planes(image, max_planes, window)
    except MedfmError as exc:
        raise (FileError(path, str(exc)) if path is not None else MedfmError(f"{name}: {exc}")) from None


def image_planes(source: str | os.PathLike | ImageRecord, max_planes: int = MAX_PLANES, window: Window | None = None) -> list[np.ndarray]:
    """The planes of ``source`` (a file, a DICOM folder or a catalog record) that :func:`embed_paths` embeds and
    aggregates for it; errors as :func:`embed_paths` raises them."""
    return planes_and_modality(source, max_planes, window)[0]


def planes_and_modality(source: str | os.PathLike | ImageRecord, max_planes: int = MAX_PLANES,
                        window: Window | None = None) -> tuple[list[np.ndarray], str]:
    """:func:`image_planes` and the modality the image records (a DICOM Modality code such as ``CT``; ``OT``
    when it records none), from one read."""
    name, path, _, read = _source(source, cached=False)
    image = read()
    return _planes_of(image, name, path, max_planes, window), image.modality


class _Cache:
    """``<folder>/<key[:2]>/<key>.npy`` files, each written whole or not at all."""

    def __init__(self, folder: Path, encoder: Encoder, settings: dict) -> None:
        self.folder = folder
        self.dim = encoder.info.embed_dim
        self.salt = json.dumps({"encoder": encoder.info.name, "weights": encoder.info.weights_sha256,
                                "version": _CACHE_VERSION, **settings}, sort_keys=True)

    def path(self, content: str) -> Path:
        key = hashlib.sha256(f"{content}:{self.salt}".encode()).hexdigest()
        return self.folder / key[:2] / f"{key}.npy"

    def get(self, content: str) -> np.ndarray | None:
        try:
            vector = np.load(self.path(content))
        except (OSError, ValueError):
            return None
        return vector if vector.shape == (self.dim,) else None

    def put(self, content: str, vector: np.ndarray) -> None:
        with atomic_path(self.path(content), create_folders=True) as tmp, open(tmp, "wb") as handle:
            np.save(handle, vector)


#: Files per unit of work sent to a runner's worker.
RUNNER_CHUNK = 64


def _embed_on(runner: Runner, paths: Sequence[str | os.PathLike | ImageRecord], dim: int, progress: Progress | None,
              **options: Any) -> np.ndarray:
    chunks = split(list(paths), runner.workers, RUNNER_CHUNK)
    out = np.zeros((len(paths), dim), np.float32)
    done = 0
    for chunk, vectors in zip(chunks, runner.map(embed_files, [(chunk, options) for chunk in chunks]), strict=True):
        out[done:done + len(chunk)] = vectors
        done += len(chunk)
        if progress is not None:
            progress(done, len(paths))
    return out


def embed_files(encoder: Encoder, chunk: tuple[list[str | os.PathLike | ImageRecord], dict[str, Any]]) -> np.ndarray:
    """:func:`embed_paths` ``(paths, options)`` as a runner's unit of work."""
    paths, options = chunk
    return embed_paths(paths, encoder, **options)


def embed_paths(
    paths: Sequence[str | os.PathLike | ImageRecord],
    encoder: Encoder,
    *,
    batch_size: int = 32,
    cache: bool | str | os.PathLike = True,
    max_planes: int = MAX_PLANES,
    window: Window | None = None,
    progress: Progress | None = None,
    runner: Runner | None = None,
) -> np.ndarray:
    """``(len(paths), D)`` float32 unit embeddings, row ``i`` for ``paths[i]``: a file, a DICOM
    folder, or a catalog record (read from exactly its own files, see :func:`load_record`).

    Planes of several files go through the encoder together, ``batch_size`` at a time.
    ``cache``: ``True`` for :func:`default_cache_dir`, a folder, or ``False`` for none.
    ``progress(done, total)`` is called after each file. An unreadable file or one the
    encoder cannot take raises :class:`~medfm.errors.FileError` (path and reason as fields).
    ``runner`` (:func:`medfm.scale.encoder_runner` for ``encoder``) embeds chunks of the files on its
    workers, each with its own copy of the encoder; the rows are the same.
    """
    if batch_size < 1:
        raise MedfmError(f"batch_size must be at least 1; got {batch_size}")
    if runner is not None:
        return _embed_on(runner, paths, encoder.info.embed_dim, progress, batch_size=batch_size, cache=cache,
                         max_planes=max_planes, window=window)
    store = None
    if cache is not False and encoder.info.weights_sha256:
        folder = default_cache_dir() if cache is True else Path(cache)
        store = _Cache(folder, encoder, {"max_planes": max_planes, "window": window})
    out = np.zeros((len(paths), encoder.info.embed_dim), np.float32)
    pending: list[tuple[int, str | None, int]] = []  # (row, content hash, number of its planes)
    planes: list[np.ndarray] = []
    done = 0

    def finished(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None and count:
            progress(done, len(paths))

    def flush() -> None:
        embeddings = np.concatenate([encoder.encode_planes(planes[start:start + batch_size])
                                     for start in range(0, len(planes), batch_size)])
        start = 0
        for row, content, count in pending:
            out[row] = aggregate(embeddings[start:start + count])
            start += count
            if store is not None:
                store.put(content, out[row])
        finished(len(pending))
        pending.clear()
        planes.clear()

    for row, source in enumerate(paths):
        name, path, content, read = _source(source, store is not None)
        cached = store.get(content) if content is not None else None
        if cached is not None:
            out[row] = cached
            finished(1)
            continue
        file_planes = _planes_of(read(), name, path, max_planes, window)
        pending.append((row, content, len(file_planes)))
        planes.extend(file_planes)
        if len(planes) >= batch_size:
            flush()
    if pending:
        flush()
    return out
