"""Versioned reports of an image, kept beside its annotation versions: every save is a new version.

Layout: ``<annotations root>/<image_id>/.report/v0001.json``, one file per version: ``{"image_id",
"created" (UTC, to the millisecond), "author", "status", "edited", "text", "sentences": [{"text",
"source"}], "provenance"}``; a sentence's ``source`` is the catalog image it came from (None: the
user's own). The version number is the file's name. The folder's name is no annotation name (those
never start with a dot), so annotation listings and training never see it, and it moves with the
image's annotations when the image is deleted (:meth:`AnnotationStore.set_aside`).

The numbering, status and deletion rules are the annotations' (:mod:`medfm.server.versions`): a
save writes the whole record to a draft file, then links it to the next number, so a version is
complete the moment it is listed; a killed save leaves only its draft, which start-up removes
(:meth:`AnnotationStore.remove_leftovers` visits this folder too), and numbers never skip nor
come back after a delete.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medfm.io.annotation_versions import version_numbers
from medfm.server.errors import NotFound
from medfm.server.versions import claim_version, draft_file, fsync, record_file, set_version_aside, with_status, write_json

#: The folder of an image's saved reports, inside its annotations' folder.
REPORT_FOLDER = ".report"
#: Characters of a version's text that a listing shows.
PREVIEW_CHARS = 80


class ReportNotFound(NotFound):
    """No such saved report version (404)."""


class ReportStore:
    """The saved reports of every image under ``root`` (the annotations' root)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, image_id: int, sentences: list[dict[str, Any]], author: str | None, edited: bool,
             provenance: dict[str, Any]) -> dict[str, Any]:
        """Write the report (its ``sentences``, each ``{"text", "source"}``, in order) as the image's next
        version, a draft: the version as :meth:`get` reads it."""
        folder = self._folder(image_id)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"image_id": int(image_id), "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "author": author, "status": "draft", "edited": bool(edited),
                  "text": " ".join(s["text"] for s in sentences),
                  "sentences": [{"text": s["text"], "source": s.get("source")} for s in sentences],
                  "provenance": provenance}
        draft = draft_file(folder, ".json")
        try:
            draft.write_text(json.dumps(record, indent=1))
            fsync(draft)  # on disk before it gets a number: a power cut leaves no torn version
            version = claim_version(folder, draft, ".json")
        finally:
            draft.unlink(missing_ok=True)
        fsync(folder)
        return {"version": version, **record}

    def list(self, image_id: int) -> list[dict[str, Any]]:
        """The image's versions, newest first, as :func:`report_summary` gives them."""
        folder = self._folder(image_id)
        if not folder.is_dir():
            return []
        return [report_summary(self.get(image_id, v)) for v in sorted(version_numbers(folder), reverse=True)]

    def get(self, image_id: int, version: int) -> dict[str, Any]:
        """A saved version: its record with its ``version``."""
        path = record_file(self._folder(image_id), version)
        if not path.is_file():
            raise ReportNotFound(f"image {image_id} has no saved report version {version}")
        return {"version": int(version), **json.loads(path.read_text())}

    def set_status(self, image_id: int, version: int, status: str) -> dict[str, Any]:
        """Mark a version ``draft`` or ``final``: its :func:`report_summary`."""
        record = with_status(self.get(image_id, version), status)
        write_json(record_file(self._folder(image_id), version), {k: v for k, v in record.items() if k != "version"})
        return report_summary(record)

    def delete(self, image_id: int, version: int) -> None:
        """Move a draft version into ``.deleted/`` (kept, unlisted, its number never reused); a final one is refused."""
        set_version_aside(self._folder(image_id), version, self.get(image_id, version), "report")

    def _folder(self, image_id: int) -> Path:
        return self.root / str(int(image_id)) / REPORT_FOLDER


def report_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a listing shows of a version: ``{"version", "created", "author", "status", "edited", "preview"}``."""
    text = record.get("text") or ""
    preview = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1].rstrip() + "…"
    return {**{key: record.get(key) for key in ("version", "created", "author", "status", "edited")}, "preview": preview}
