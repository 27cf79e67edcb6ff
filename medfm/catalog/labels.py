"""Which files of an ingest are an image's labels, and what a dataset says about each image.

Two sources, the first that applies winning:

* **A manifest**: a ``manifest.csv`` among the ingested files, or one given explicitly.
  It needs an ``image`` column (paths relative to the manifest's folder, or absolute).
  The ``mask`` column and every other column whose filled cells all name existing files
  (``fov_mask``, ``annotation``; several files separated by ``;``) give *label files*,
  named by their column. Every other column gives *tags*, searchable text (diagnosis,
  subject, split). Columns that name patients (:data:`PATIENT_COLUMNS`) are not catalogued.
* **A layout**: a ``masks/`` folder beside ``images/`` (Kvasir-SEG, HC18), or ``labelsTr/``
  beside ``imagesTr/`` (Medical Segmentation Decathlon, nnU-Net). A label file belongs
  to the image whose name it repeats, with an optional ``_suffix`` (``001_HC_mask.png``
  for ``001_HC.jpg``); an nnU-Net channel number (``case_0000.nii.gz``) is ignored.

Label files are never catalogued as images of their own.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medfm.errors import MedfmError, display_path
from medfm.io.formats import image_suffix

#: The name a manifest gives to the file of an image's labels that trains and evaluates segmenters.
MASK = "mask"
#: A manifest's column of image paths.
IMAGE = "image"
#: The tag (``"true"``) of an image whose file marks it synthetic (a generator made it): set at ingest
#: from the file's marks, kept when a dataset's labels are saved again, and left out of evaluation sets.
SYNTHETIC = "synthetic"
#: The file name under which a folder's manifest is found.
MANIFEST_NAME = "manifest.csv"
#: ``{label folder: its image folder}`` of the layouts recognised without a manifest.
LAYOUTS = {"masks": "images", "labelsTr": "imagesTr"}
_LAYOUT_FOLDERS = {*LAYOUTS, *LAYOUTS.values()}
#: Manifest columns that can name patients: left out of the catalog.
PATIENT_COLUMNS = frozenset({"patient", "patient_id", "patientid", "patient_name", "name", "mrn",
                             "birth_date", "date_of_birth", "dob"})
_NNUNET_CHANNEL = re.compile(r"_\d{4}$")


@dataclass
class ImageLabels:
    """What a dataset gives one image: ``(name, path)`` label files and ``{column: value}`` tags."""

    files: list[tuple[str, Path]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetLabels:
    """The labels found for an ingest: per image path, and which paths are label files."""

    images: dict[Path, ImageLabels] = field(default_factory=dict)
    label_paths: set[Path] = field(default_factory=set)
    unmatched: int = 0

    def add_file(self, image: Path, name: str, label: Path) -> None:
        self.images.setdefault(image, ImageLabels()).files.append((name, label))
        self.label_paths.add(label)


def _resolve(folder: Path, cell: str) -> Path:
    return (folder / cell.strip()).resolve()


def read_manifest_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and rows of a manifest with an ``image`` column; a one-line error otherwise."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            # A row longer than the header puts its extra cells under None, as a list: not a column.
            rows = [{k.strip(): v or "" for k, v in row.items() if isinstance(k, str)} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({reason})") from None
    if IMAGE not in columns:
        raise MedfmError(f"{display_path(path)}: a manifest needs an {IMAGE!r} column; "
                         f"the columns are {', '.join(columns) or '(none)'}")
    return columns, rows


def manifest_images(path: Path) -> list[Path]:
    """The image paths a manifest names (resolved), for ingesting a manifest given explicitly."""
    _columns, rows = read_manifest_rows(path)
    named = [_resolve(path.parent, row[IMAGE]) for row in rows if row[IMAGE].strip()]
    images = [image for image in named if image.exists()]  # the others are reported with the labels
    if not images:
        raise MedfmError(f"{display_path(path)}: none of its {len(named)} images exists "
                         "(relative paths are relative to the manifest's folder)")
    return images


def _file_columns(folder: Path, columns: list[str], rows: list[dict[str, str]]) -> list[str]:
    """The columns, besides ``image``, that name files: ``mask``, and those whose filled cells all do."""
    found = []
    for column in columns:
        if column == IMAGE or column in PATIENT_COLUMNS:
            continue
        cells = [row[column] for row in rows if row[column].strip()]
        if column == MASK or (cells and all(_resolve(folder, part).is_file()
                                            for cell in cells for part in cell.split(";") if part.strip())):
            found.append(column)
    return found


def _apply_manifest(path: Path, labels: DatasetLabels, bad: list[tuple[str, str]]) -> None:
    columns, rows = read_manifest_rows(path)
    files = _file_columns(path.parent, columns, rows)
    tags = [c for c in columns if c not in files and c != IMAGE and c not in PATIENT_COLUMNS and c]
    for line, row in enumerate(rows, start=2):
        if not row[IMAGE].strip():
            bad.append((display_path(path), f"line {line}: no image"))
            continue
        image = _resolve(path.parent, row[IMAGE])
        if not image.exists():
            bad.append((display_path(path), f"line {line}: image {row[IMAGE].strip()!r} does not exist"))
            continue
        entry = labels.images.setdefault(image, ImageLabels())
        for column in files:
            for part in (p for p in row[column].split(";") if p.strip()):
                label = _resolve(path.parent, part)
                if label.is_file():
                    labels.add_file(image, column, label)
                else:
                    bad.append((display_path(path), f"line {line}: {column} {part.strip()!r} is not a file"))
        entry.tags.update((column, row[column].strip()) for column in tags if row[column].strip())


def _case_name(path: Path) -> str:
    suffix = image_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _apply_layouts(files: Iterable[Path], labels: DatasetLabels) -> None:
    by_folder: dict[Path, list[Path]] = {}
    for path in files:
        # Only a layout's folders can pair images with labels: the name is checked first, as
        # matching suffixes for every file of an archive cost more than the rest of this.
        if path.parent.name in _LAYOUT_FOLDERS and image_suffix(path):
            by_folder.setdefault(path.parent, []).append(path)
    for folder, label_files in by_folder.items():
        if folder.name not in LAYOUTS or folder.parent / LAYOUTS[folder.name] not in by_folder:
            continue
        image_folder = folder.parent / LAYOUTS[folder.name]
        cases: dict[str, list[Path]] = {}
        for image in by_folder[image_folder]:
            cases.setdefault(_NNUNET_CHANNEL.sub("", _case_name(image)), []).append(image)
        for label in label_files:
            if label in labels.label_paths:
                continue
            images = _matching_images(_case_name(label), cases)
            if not images:
                labels.unmatched += 1
                labels.label_paths.add(label)
            for image in images:
                if not labels.images.get(image, ImageLabels()).files:  # a manifest's label files win
                    labels.add_file(image, MASK, label)
                else:
                    labels.label_paths.add(label)


def _matching_images(name: str, cases: dict[str, list[Path]]) -> list[Path]:
    """The images of the case ``name`` repeats: the same name, else the longest ``case_suffix``/``case-suffix``."""
    if name in cases:
        return cases[name]
    prefixes = [case for case in cases if name.startswith(case) and name[len(case)] in "_-."]
    return cases[max(prefixes, key=len)] if prefixes else []


def may_hold_labels(path: str) -> bool:
    """Whether :func:`find_labels` can use the file at ``path`` (a manifest, or a file in a layout's
    folder); plain text, since it runs on every file of an ingest, most of them unchanged."""
    folder, _, name = path.rpartition(os.sep)
    return name == MANIFEST_NAME or folder.rpartition(os.sep)[2] in _LAYOUT_FOLDERS


def find_labels(files: list[Path], manifests: Iterable[Path] = ()) -> tuple[DatasetLabels, list[tuple[str, str]]]:
    """The labels of ``files`` (resolved paths of an ingest) from ``manifests`` and from every
    ``manifest.csv`` among them, then from folder layouts; and ``(path, reason)`` for bad rows.

    A ``manifest.csv`` found without an ``image`` column is not a manifest (it stays a
    skipped file); one given explicitly must have it."""
    labels, bad = DatasetLabels(), []
    explicit = list(manifests)
    for manifest in dict.fromkeys([*explicit, *(p for p in files if p.name == MANIFEST_NAME)]):
        try:
            _apply_manifest(manifest, labels, bad)
        except MedfmError:
            if manifest in explicit:
                raise
    _apply_layouts(files, labels)
    return labels, bad
