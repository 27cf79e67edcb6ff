"""Uploads into the data directory: in one multipart request, or in chunks that can resume.

Either way files are written into a hidden folder, ``uploads/.incoming-<id>``, renamed to
``uploads/<id>`` once every file is whole, so an ingest never sees a cut-off file.

A chunked upload declares its files (names and sizes) first, kept in
``uploads/.incoming-<id>.json``. Its content is then one stream, the files one after
another in declared order, sent in chunks at increasing offsets: a chunk may hold many small
files (a thin-slice CT study of 3,000 files goes in a few hundred requests) or part of a
large one. :meth:`Uploads.received` tells a client that lost its connection where to go
on. Uploads left unfinished for :data:`STALE_SECONDS` are removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from medfm.errors import MedfmError
from medfm.server.errors import NotFound

#: Bytes per chunk the server suggests (each chunk is one request).
CHUNK_BYTES = 8 * 1024 * 1024
#: Files one upload may hold.
MAX_FILES = 100_000
#: Unfinished uploads untouched this long are removed (at start-up and when a new one begins).
STALE_SECONDS = 24 * 3600
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


class UploadNotFound(NotFound):
    """No unfinished upload with that id (404)."""


def safe_name(name: str | None) -> str:
    """A file name without folders or odd characters (keeping its suffix, which names its format)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "file").name).lstrip(".")
    return cleaned[-120:] or "file"


def storage_error(exc: OSError) -> MedfmError:
    return MedfmError(f"cannot store the upload in the data directory: {exc.strerror or type(exc).__name__}")


class Uploads:
    """The uploads folder of a data directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def store(self, files: list[tuple[str | None, BinaryIO]]) -> Path:
        """Files ``(name, stream)`` of one request in a new folder under ``uploads``, which appears only once all are whole."""
        upload_id = uuid.uuid4().hex
        incoming = self._incoming(upload_id)
        try:
            incoming.mkdir(parents=True)
            for number, (name, stream) in enumerate(files):
                with open(incoming / f"{number:05d}-{safe_name(name)}", "wb") as out:
                    shutil.copyfileobj(stream, out)
            return incoming.rename(self.folder / upload_id)
        except OSError as exc:
            shutil.rmtree(incoming, ignore_errors=True)
            raise storage_error(exc) from None
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise

    # ---- chunked uploads -------------------------------------------------------------

    def begin(self, files: list[tuple[str, int]]) -> str:
        """Declare a chunked upload of ``files`` ``(name, size in bytes)``; returns its id."""
        if not 1 <= len(files) <= MAX_FILES:
            raise MedfmError(f"an upload holds 1 to {MAX_FILES} files; got {len(files)}")
        total = sum(size for _name, size in files)
        self.remove_stale()
        upload_id = uuid.uuid4().hex
        try:
            self._incoming(upload_id).mkdir(parents=True)
            free = shutil.disk_usage(self.folder).free
            if total > free:
                raise MedfmError(f"the upload needs {total / 2**20:.0f} MiB; the data directory has {free / 2**20:.0f} MiB free")
            names = [f"{number:05d}-{safe_name(name)}" for number, (name, _size) in enumerate(files)]
            _write_json(self._manifest(upload_id), {"names": names, "sizes": [size for _name, size in files]})
        except OSError as exc:
            self.cancel(upload_id)
            raise storage_error(exc) from None
        except MedfmError:
            self.cancel(upload_id)
            raise
        return upload_id

    def received(self, upload_id: str) -> tuple[int, int]:
        """Bytes of the upload's stream received so far, and in all."""
        incoming, manifest = self._open(upload_id)
        return _received(incoming, manifest), sum(manifest["sizes"])

    def write(self, upload_id: str, offset: int, chunk: bytes) -> int:
        """Write ``chunk`` at ``offset`` of the upload's stream; returns the bytes received so far.

        ``offset`` must be what was received so far (a chunk sent twice, after a lost answer,
        is refused with the offset to go on from, never written twice).
        """
        incoming, manifest = self._open(upload_id)
        with self._lock(upload_id):
            have = _received(incoming, manifest)
            if offset != have:
                raise OffsetMismatch(f"the upload has {have} bytes; send the chunk at offset {have}", have)
            total = sum(manifest["sizes"])
            if have + len(chunk) > total:
                raise MedfmError(f"the upload's files were declared with {total} bytes; this chunk would make {have + len(chunk)}")
            end_of_chunk, start = have + len(chunk), 0
            try:
                for name, size in zip(manifest["names"], manifest["sizes"]):
                    begin, end = max(start, have), min(start + size, end_of_chunk)
                    if begin < end:
                        with open(incoming / name, "ab") as out:
                            out.write(chunk[begin - have:end - have])
                    start += size
            except OSError as exc:
                raise storage_error(exc) from None
            os.utime(self._manifest(upload_id))  # still in use: not stale
            return end_of_chunk

    def finish(self, upload_id: str) -> Path:
        """The upload's folder, renamed into place once every byte is in."""
        incoming, manifest = self._open(upload_id)
        with self._lock(upload_id):
            have, total = _received(incoming, manifest), sum(manifest["sizes"])
            if have != total:
                raise MedfmError(f"the upload is not complete: {have} of {total} bytes received; send the rest from offset {have}")
            try:
                for name in manifest["names"]:
                    (incoming / name).touch()  # empty files got no bytes, hence no file yet
                folder = incoming.rename(self.folder / upload_id)
                self._manifest(upload_id).unlink()
            except OSError as exc:
                raise storage_error(exc) from None
        self._forget_lock(upload_id)
        return folder

    def cancel(self, upload_id: str) -> None:
        shutil.rmtree(self._incoming(upload_id), ignore_errors=True)
        self._manifest(upload_id).unlink(missing_ok=True)
        self._forget_lock(upload_id)

    def remove_stale(self, older_than: float = STALE_SECONDS) -> None:
        """Remove unfinished uploads (and folders of killed one-request uploads) untouched for ``older_than`` seconds."""
        if not self.folder.is_dir():
            return
        cutoff = time.time() - older_than
        for incoming in [p for p in self.folder.glob(".incoming-*") if p.is_dir()]:
            manifest = incoming.with_name(incoming.name + ".json")
            try:
                last_used = max(p.stat().st_mtime for p in (incoming, manifest) if p.exists())
                if last_used < cutoff:
                    shutil.rmtree(incoming)
                    manifest.unlink(missing_ok=True)
            except OSError:
                pass  # removed meanwhile, or not ours to remove: left for the next time

    def _open(self, upload_id: str) -> tuple[Path, dict[str, Any]]:
        if not _UPLOAD_ID.fullmatch(upload_id) or not self._manifest(upload_id).is_file():
            raise UploadNotFound(f"no unfinished upload {upload_id!r}")
        return self._incoming(upload_id), json.loads(self._manifest(upload_id).read_text())

    def _incoming(self, upload_id: str) -> Path:
        return self.folder / f".incoming-{upload_id}"

    def _manifest(self, upload_id: str) -> Path:
        return self.folder / f".incoming-{upload_id}.json"

    def _lock(self, upload_id: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(upload_id, threading.Lock())

    def _forget_lock(self, upload_id: str) -> None:
        with self._locks_lock:
            self._locks.pop(upload_id, None)


class OffsetMismatch(MedfmError):
    """A chunk at the wrong offset (409); ``received`` is where the file stands."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


def _received(incoming: Path, manifest: dict[str, Any]) -> int:
    """Bytes of the stream on disk: files are filled in order, so it is the sum of their sizes."""
    total = 0
    for name in manifest["names"]:
        try:
            total += (incoming / name).stat().st_size
        except FileNotFoundError:
            pass
    return total


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
