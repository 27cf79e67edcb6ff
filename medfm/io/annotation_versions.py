"""Reading the annotation versions the workbench saves (the one reader; the server's store writes them).

Layout: ``<root>/<image_id>/<name>/v0001.nii.gz`` (or ``.dcm``, a DICOM SEG) beside its
sidecar ``v0001.json`` (its ``status``: draft or final); a version exists once its sidecar
does. :func:`latest_versions` picks, per annotation name of every image, the version to
learn from; :func:`version_labels` reads one back as a label map on its image's grid.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.dicom import DicomSeries
from medfm.io.image import Image

#: ``format`` value → file suffix.
FORMATS = {"nifti": ".nii.gz", "dicom-seg": ".dcm"}
#: Annotation names: letters, digits, ``-``, ``_`` and ``.``, not starting with a dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
VERSION_FILE = re.compile(r"v(\d{4,})\.json")


@dataclass(frozen=True)
class SavedVersion:
    """One saved version: its image's catalog id, annotation name, number, label file and sidecar record."""

    image_id: int
    name: str
    version: int
    path: Path
    sidecar: dict[str, Any]


def version_numbers(folder: Path) -> list[int]:
    """Version numbers in ``folder`` whose sidecar is written (the version is complete)."""
    return [int(m.group(1)) for p in folder.iterdir() if (m := VERSION_FILE.fullmatch(p.name))]


def saved_version(folder: Path, image_id: int, version: int) -> SavedVersion:
    sidecar = json.loads((folder / f"v{version:04d}.json").read_text())
    return SavedVersion(image_id, folder.name, version, folder / f"v{version:04d}{FORMATS[sidecar['format']]}", sidecar)


def latest_versions(root: str | os.PathLike, final_only: bool = False) -> list[SavedVersion]:
    """Per annotation name of every image under ``root``: its newest version marked final, else (unless
    ``final_only``) its newest version (a draft), by image id then name. Deleted versions (set aside in
    ``.deleted``) are not listed."""
    root = Path(root)
    if not root.is_dir():
        raise MedfmError(f"{display_path(root)}: not a folder of saved annotations")
    found = []
    for image_dir in sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
        for folder in sorted(p for p in image_dir.iterdir() if p.is_dir() and NAME_PATTERN.fullmatch(p.name)):
            versions = [saved_version(folder, int(image_dir.name), n) for n in sorted(version_numbers(folder))]
            final = [v for v in versions if v.sidecar.get("status") == "final"]
            chosen = final if final_only else final or versions
            if chosen:
                found.append(chosen[-1])
    if not found and final_only:
        raise MedfmError(f"{display_path(root)}: holds no annotation version marked final; mark the versions to learn from final")
    if not found:
        raise MedfmError(f"{display_path(root)}: holds no saved annotation version (<image id>/<name>/v0001.json)")
    return found


def version_labels(saved: SavedVersion, image: Image, series: DicomSeries | None = None) -> np.ndarray:
    """A saved version's label map on ``image``'s grid: ``(I, J, K, T)`` uint8.

    A DICOM SEG needs its source ``series``; its segments 1..n are the label values the
    sidecar's ``voxels`` lists, in ascending order, as the SEG writer numbers them.
    """
    shape = image.shape[:4]
    if saved.path.suffix == ".dcm":
        if series is None:
            raise MedfmError(f"{display_path(saved.path)}: a DICOM SEG, but its image is not a DICOM series")
        from medfm.io.dicom.seg import read_seg

        values = np.array([0, *sorted(int(v) for v in saved.sidecar["voxels"])], np.uint8)
        return values[read_seg(saved.path, series, image)][..., None]
    from medfm.io.formats import load

    array = np.asarray(load(saved.path).array)[..., 0]
    if array.shape != tuple(shape):
        raise MedfmError(f"{display_path(saved.path)}: annotation shape {array.shape} differs from its image's {tuple(shape)}")
    return array.astype(np.uint8)
