"""Versioned annotations: every save is a new version, none is ever overwritten.

Layout: ``<root>/<image_id>/<name>/v0001.nii.gz`` (or ``.dcm``, a DICOM SEG) with the
sidecar ``v0001.json`` (labels, names, colours, voxel counts, created time, and the label map's
provenance as :meth:`~medfm.provenance.Provenance.to_dict` gives it: model, weights, prompts, scores).
A save writes a draft file first, then claims the next version number
(:func:`medfm.server.versions.claim_version`, the rules report versions share): two threads or
processes saving at once get two numbers, and nobody sees a half-written file. A version is listed once its
sidecar exists, which is written (through its own temporary file) after the claim. What a
save killed part-way leaves (drafts, temporary files, a claimed label file without its
sidecar) is removed when the server starts (:meth:`AnnotationStore.remove_leftovers`, also in the
image's saved reports' folder, :mod:`medfm.server.reports`), so the next save takes the number the
killed one had claimed: numbers do not skip.

Each version is a ``draft`` when saved and can be marked ``final`` (and back); its sidecar
names its ``author`` (as the client gave it). Deleting a version moves its files into the
annotation's ``.deleted/`` folder: it is kept, no longer listed, and its number is never
given to another version. A final version cannot be deleted: mark it draft first.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.io import Image
from medfm.io.annotation_versions import FORMATS, NAME_PATTERN, saved_version, version_labels, version_numbers
from medfm.io.dicom import DicomSeries
from medfm.io.label_maps import save_segmentation
from medfm.server.errors import NotFound
from medfm.server.versions import (
    DRAFT_PREFIX, TMP_PREFIX, claim_version, draft_file, fsync, record_file, set_version_aside, with_status, write_json,
)

#: A saved label file: ``v0001.nii.gz`` or ``v0001.dcm``.
_LABEL_FILE = re.compile(r"(v\d{4,})(\.nii\.gz|\.dcm)")


class AnnotationNotFound(NotFound):
    """No such annotation or version (404)."""


def check_name(name: str) -> str:
    """``name`` if it is a valid annotation name, else a MedfmError saying what is allowed."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise MedfmError(f"annotation name {name!r} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")
    return name


class AnnotationStore:
    """The annotations of every image under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, image_id: int, name: str, labels: Image, fmt: str, sidecar: dict[str, Any],
             series: DicomSeries | None = None) -> dict[str, Any]:
        """Write ``labels`` as the next version of ``name``: ``{"name", "version", "format", "created", "voxels"}``.

        The sidecar holds ``sidecar``, the label map's ``provenance`` (the same record as the
        file's and as ``medfm segment``'s) and its voxels per label.
        """
        if fmt not in FORMATS:
            raise MedfmError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
        if fmt == "dicom-seg" and series is None:
            raise MedfmError("format dicom-seg needs an image that is a DICOM series; save as nifti")
        folder = self.root / str(int(image_id)) / check_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = FORMATS[fmt]
        draft = draft_file(folder, suffix)
        try:
            save_segmentation(labels, draft, series)
            fsync(draft)  # on disk before it gets a version number: a power cut leaves no torn version
            version = claim_version(folder, draft, suffix)
        finally:
            draft.unlink(missing_ok=True)
        values, counts = np.unique(labels.array, return_counts=True)
        record = {**sidecar, "provenance": labels.provenance.to_dict(), "name": name, "version": version, "format": fmt,
                  "created": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "status": "draft",
                  "voxels": {str(int(v)): int(c) for v, c in zip(values, counts) if v != 0}}
        try:
            write_json(record_file(folder, version), record)
        except BaseException:  # give the number back: a label file without its sidecar is no version
            (folder / f"v{version:04d}{suffix}").unlink(missing_ok=True)
            raise
        fsync(folder)
        return {key: record.get(key) for key in ("name", "version", "format", "created", "voxels", "author", "status")}

    def remove_leftovers(self) -> int:
        """Delete what killed saves left (drafts, temporary files, label files without a sidecar) in every
        folder of every image (its annotations' and its reports'); returns how many.

        Call it only when no save is running (at start-up): a running save has a draft, and a
        claimed label file whose sidecar it is about to write.
        """
        if not self.root.is_dir():
            return 0
        removed = 0
        for folder in (p for image_dir in self.root.iterdir() if image_dir.is_dir() for p in image_dir.iterdir() if p.is_dir()):
            for path in list(folder.iterdir()):
                label_file = _LABEL_FILE.fullmatch(path.name)
                orphan = label_file is not None and not (folder / f"{label_file.group(1)}.json").exists()
                if path.is_file() and (path.name.startswith((TMP_PREFIX, DRAFT_PREFIX)) or orphan):
                    path.unlink()
                    removed += 1
        return removed

    def set_aside(self, image_id: int, trash: Path) -> Path | None:
        """Move every annotation (and saved report) of an image out of the store (its catalog entry was deleted) into
        ``trash/annotations-<id>-<time>``; returns that folder, ``None`` when it had none."""
        folder = self.root / str(int(image_id))
        if not folder.is_dir():
            return None
        trash.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        target = trash / f"annotations-{int(image_id)}-{stamp}"
        os.replace(folder, target)
        return target

    def list(self, image_id: int) -> list[dict[str, Any]]:
        """``[{"name", "versions": [VERSION_FIELDS]}]``, by name, oldest version first."""
        folder = self.root / str(int(image_id))
        if not folder.is_dir():
            return []
        listing = []
        for name_dir in sorted(p for p in folder.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name)):
            versions = [self.sidecar(image_id, name_dir.name, v) for v in sorted(version_numbers(name_dir))]
            listing.append({"name": name_dir.name, "versions": [
                version_summary(record) for record in versions
            ]})
        return listing

    def final_image_ids(self) -> set[int]:
        """The images with at least one version marked final."""
        final = set()
        for image_dir in (p for p in self.root.glob("*") if p.is_dir() and p.name.isdigit()):
            sidecars = (s for name_dir in image_dir.iterdir() if name_dir.is_dir() and NAME_PATTERN.fullmatch(name_dir.name)
                        for s in name_dir.glob("v*.json"))
            if any(json.loads(sidecar.read_text()).get("status") == "final" for sidecar in sidecars):
                final.add(int(image_dir.name))
        return final

    def set_status(self, image_id: int, name: str, version: int, status: str) -> dict[str, Any]:
        """Mark a version ``draft`` or ``final``: its :func:`version_summary`."""
        record = with_status(self.sidecar(image_id, name, version), status)
        write_json(record_file(self._folder(image_id, name), version), record)
        return version_summary(record)

    def delete(self, image_id: int, name: str, version: int) -> None:
        """Move a draft version into its name's ``.deleted/`` folder (kept, unlisted, its number never reused)."""
        set_version_aside(self._folder(image_id, name), version, self.sidecar(image_id, name, version), name,
                          self.file(image_id, name, version))

    def sidecar(self, image_id: int, name: str, version: int) -> dict[str, Any]:
        path = record_file(self._folder(image_id, name), version)
        if not path.is_file():
            raise AnnotationNotFound(f"image {image_id} has no annotation {name!r} version {version}")
        return json.loads(path.read_text())

    def file(self, image_id: int, name: str, version: int) -> Path:
        """The saved label file of a version."""
        record = self.sidecar(image_id, name, version)
        return self._folder(image_id, name) / f"v{int(version):04d}{FORMATS[record['format']]}"

    def labels(self, image_id: int, name: str, version: int, image: Image, series: DicomSeries | None = None) -> np.ndarray:
        """A saved version's label map on ``image``'s grid: ``(I, J, K, T)`` uint8 (:func:`version_labels`)."""
        self.sidecar(image_id, name, version)  # 404 for a version that does not exist
        return version_labels(saved_version(self._folder(image_id, name), image_id, int(version)), image, series)

    def _folder(self, image_id: int, name: str) -> Path:
        return self.root / str(int(image_id)) / check_name(name)


#: What a listing shows of a version (sidecars saved before statuses existed are drafts).
VERSION_FIELDS = ("version", "format", "created", "labels", "author", "status", "voxels")


def version_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {**{key: record.get(key) for key in VERSION_FIELDS}, "status": record.get("status") or "draft"}
