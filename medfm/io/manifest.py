"""CSV manifests: one row per image, with its path and labels or mask (as ``../shared/data`` and most
challenge datasets have them). Relative paths are relative to the manifest's folder."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from medfm.errors import MedfmError, display_path


def read_rows(path: str | os.PathLike, required: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The rows of a CSV manifest as ``{column: stripped value}``; every ``required`` column must exist."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise MedfmError(f"{display_path(path)}: no column {missing[0]!r}; the columns are {', '.join(columns) or '(none)'}")
            rows = [{key: (value or "").strip() for key, value in row.items() if key is not None} for row in reader]
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MedfmError(f"{display_path(path)}: not a CSV manifest ({exc})") from None
    if not rows:
        raise MedfmError(f"{display_path(path)}: the manifest has no rows")
    return rows


def read_manifest(path: str | os.PathLike, label_column: str, path_column: str = "path") -> tuple[list[str], list[str]]:
    """``(image paths, labels)`` from a CSV manifest; every row needs both columns filled."""
    path = Path(path)
    images, labels = [], []
    for line, row in enumerate(read_rows(path, (path_column, label_column)), start=2):
        if not row[path_column] or not row[label_column]:
            raise MedfmError(f"{display_path(path)}, line {line}: empty {path_column!r} or {label_column!r}")
        images.append(str((path.parent / row[path_column]).resolve()))
        labels.append(row[label_column])
    return images, labels


def read_manifest_columns(path: str | os.PathLike, columns: list[str], path_column: str = "path") -> dict[str, dict[str, str]]:
    """``{resolved image path: {column: value}}`` for the named ``columns`` of a CSV manifest
    (empty cells left out), e.g. the captions an index stores beside each image."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            present = reader.fieldnames or []
            missing = [c for c in (path_column, *columns) if c not in present]
            if missing:
                raise MedfmError(f"{display_path(path)}: no column {missing[0]!r}; the columns are {', '.join(present) or '(none)'}")
            rows = list(reader)
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc.strerror or exc})") from None
    table = {}
    for line, row in enumerate(rows, start=2):
        if not (row.get(path_column) or "").strip():
            raise MedfmError(f"{display_path(path)}, line {line}: empty {path_column!r}")
        image = str((path.parent / row[path_column].strip()).resolve())
        table[image] = {c: " ".join(row[c].split()) for c in columns if (row.get(c) or "").strip()}
    if not table:
        raise MedfmError(f"{display_path(path)}: the manifest has no rows")
    return table
