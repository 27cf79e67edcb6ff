"""Numbered versions in a folder, never overwritten: the rules annotation versions and report versions share.

A version's record is ``v0001.json`` in its folder (an annotation's sidecar, or a whole saved
report); a version exists once its record does. A new version's complete file is linked to the
next free number with :func:`os.link`, which fails when the name exists: two threads or processes
saving at once get two numbers, and nobody sees a half-written file. A record is rewritten (a
status change) through a temporary file and a rename. Each version is a ``draft`` when saved and
can be marked ``final`` (and back). Deleting a version moves its files into the folder's
``.deleted/``: kept, no longer listed, its number never given to another version; a final version
cannot be deleted. What a killed save leaves (``.draft-*`` and ``.tmp-*`` files) is removed at
start-up (:meth:`medfm.server.annotations.AnnotationStore.remove_leftovers`).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal, get_args

from medfm.errors import MedfmError
from medfm.io.annotation_versions import version_numbers

#: A version's status: saved as a draft, then marked final (or back).
VersionStatus = Literal["draft", "final"]
STATUSES: tuple[str, ...] = get_args(VersionStatus)
#: Where a folder's deleted versions are kept.
DELETED = ".deleted"
#: Name prefixes of what a save writes before its version is complete.
DRAFT_PREFIX, TMP_PREFIX = ".draft-", ".tmp-"


def record_file(folder: Path, version: int) -> Path:
    """The record (``v0001.json``) of a version."""
    return folder / f"v{int(version):04d}.json"


def draft_file(folder: Path, suffix: str) -> Path:
    """A fresh name for a file being written before it gets a number."""
    return folder / f"{DRAFT_PREFIX}{uuid.uuid4().hex}{suffix}"


def claim_version(folder: Path, draft: Path, suffix: str) -> int:
    """Link the complete file ``draft`` as ``v<next><suffix>`` in ``folder``; returns the number, never one
    a version listed or deleted has."""
    deleted = version_numbers(folder / DELETED) if (folder / DELETED).is_dir() else []
    version = max([*version_numbers(folder), *deleted], default=0) + 1
    while True:
        try:
            os.link(draft, folder / f"v{version:04d}{suffix}")
            return version
        except FileExistsError:
            version += 1


def with_status(record: dict[str, Any], status: str) -> dict[str, Any]:
    """``record`` marked ``status`` (draft or final); MedfmError naming the choices for another."""
    if status not in STATUSES:
        raise MedfmError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
    return {**record, "status": status}


def set_version_aside(folder: Path, version: int, record: dict[str, Any], what: str, *others: Path) -> None:
    """Move a draft version's record, then its ``others`` files, into ``folder/.deleted/``; a final one is refused."""
    if record.get("status") == "final":
        raise MedfmError(f"{what} version {version} is final: mark it draft before deleting it")
    trash = folder / DELETED
    trash.mkdir(exist_ok=True)
    # the record first: the version is unlisted at once, and its number is taken for good; a file
    # left behind by a crash in between is a leftover that start-up removes
    os.replace(record_file(folder, version), trash / record_file(folder, version).name)
    for path in others:
        os.replace(path, trash / path.name)
    fsync(folder)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` at ``path`` through a temporary file and a rename (never a torn file)."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    tmp.write_text(json.dumps(record, indent=1))
    fsync(tmp)
    os.replace(tmp, path)


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') writes to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
