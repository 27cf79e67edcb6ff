"""Catalog images back out as a CSV manifest that training and evaluation commands read.

Columns: ``image``, ``mask`` (empty for an image without one), ``dataset`` when any
image has one, the other label files by their name (several joined by ``;``), then the
tags (a tag named ``dataset`` overrides the catalog's dataset name). Paths are relative
to the manifest's folder (so the manifest and its data move together), or absolute with
``absolute=True``; :func:`medfm.io.manifest.read_manifest` reads either. ``image`` is the
image file, or the folder of a DICOM series' files.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from medfm.catalog.labels import IMAGE, MASK
from medfm.catalog.loading import record_paths
from medfm.catalog.store import ImageRecord
from medfm.errors import MedfmError, display_path
from medfm.io.formats import atomic_path


def _image_path(record: ImageRecord) -> str:
    paths = record_paths(record)
    return str(paths[0]) if len(paths) == 1 else record.source_path


def manifest_rows(records: Sequence[ImageRecord], folder: Path, absolute: bool = False) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of the manifest of ``records`` (fetched with their files) written in ``folder``."""

    def shown(path: str) -> str:
        return path if absolute else os.path.relpath(path, folder)

    rows = []
    for record in records:
        row = {IMAGE: shown(_image_path(record)), MASK: ""}
        if record.dataset:
            row["dataset"] = record.dataset
        for label in record.label_files:
            row[label.name] = ";".join(filter(None, [row.get(label.name, ""), shown(label.path)]))
        row.update(record.tags)
        rows.append(row)
    columns = list(dict.fromkeys(column for row in rows for column in row))
    return columns, rows


def export_manifest(records: Sequence[ImageRecord], path: str | os.PathLike, absolute: bool = False) -> int:
    """Write the manifest of ``records`` (fetched with their files) to ``path``; returns the rows written."""
    if not records:
        raise MedfmError(f"{display_path(path)}: no catalog image matches; nothing written")
    columns, rows = manifest_rows(records, Path(path).absolute().parent, absolute)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
