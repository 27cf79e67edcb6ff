"""Many inputs in one process: which inputs, where their outputs go, and a run that survives bad ones.

Inputs come from paths (files; a folder gives its pictures and each of its DICOM series, a DICOM series folder
stays one input), a manifest of images with optional per-image prompts (:func:`read_batch_manifest`)
or a catalog query (:func:`catalog_inputs`). :func:`run_batch` applies one function to each input:
an input that raises :class:`MedfmError` is recorded as a failure (its path and the reason) and
the run goes on; any other exception is a bug and stops it. The task modules hold the functions
that batch their own work (``segment_files``, ``classify_files``); :func:`describe_files` is
``medfm info``'s. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.errors import FileError, MedfmError, display_path
from medfm.io.formats import image_suffix, registered_formats
from medfm.io.manifest import read_rows
from medfm.progress import progress_bar

#: Manifest columns: the image (``image``, else ``path``), and its prompts in ``medfm segment``'s text forms.
IMAGE_COLUMNS = ("image", "path")
PROMPT_COLUMNS = ("box", "points")
#: Catalog fields a ``--where KEY=VALUE`` query can filter on (:meth:`Catalog.query`'s filters).
CATALOG_FILTERS = ("modality", "body_part", "dataset", "text")
#: Inputs in these formats give PNG label maps by default; everything else NIfTI.
PLANAR_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class BatchInput:
    """One input: an image file, DICOM series folder or catalog record, with the prompts its manifest row gave
    (``points`` as ``x,y[,z][:pos|neg]``, ``boxes`` as ``x0,y0,x1,y1[,z]``; see :mod:`medfm.tasks.prompt_text`)."""

    path: Path
    points: tuple[str, ...] = ()
    boxes: tuple[str, ...] = ()
    #: the catalog record an input came from (read from exactly its own files, not its folder), and its id,
    #: which tells apart records that share a folder
    record: Any = field(default=None, compare=False)
    record_id: int | None = None


@dataclass
class BatchReport:
    """``results``: one dict per input that succeeded, in input order; ``failures``: ``{"input", "reason"}``
    per input that did not."""

    inputs: int
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON summary: counts, results and failures."""
        return {"inputs": self.inputs, "succeeded": len(self.results), "failed": len(self.failures),
                "results": self.results, "failures": self.failures}

    def write_summary(self, path: str | os.PathLike) -> Path:
        """The summary as a JSON file, written atomically."""
        from medfm.io.formats import atomic_path
        from medfm.serialize import json_ready

        path = Path(os.fsdecode(path))
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(json_ready(self.summary()), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        return path


def failure(path: Path, exc: MedfmError) -> dict[str, str]:
    """``{"input", "reason"}`` for an input that raised ``exc``; the reason alone when ``exc`` names that input."""
    same_file = isinstance(exc, FileError) and Path(exc.path) == path
    return {"input": display_path(path), "reason": exc.reason if same_file else str(exc)}


def _dicom_suffixes() -> tuple[str, ...]:
    return registered_formats()["dicom"].suffixes if "dicom" in registered_formats() else ()


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` whose suffix names a format other than DICOM (DICOM
    files are grouped into series by :func:`_folder_inputs`)."""
    dicom = _dicom_suffixes()
    return [entry for entry in sorted(folder.iterdir())
            if entry.is_file() and not entry.name.startswith(".")
            and (suffix := image_suffix(entry)) is not None and suffix not in dicom]


def _folder_inputs(folder: Path) -> list[Path]:
    """The inputs a folder gives: its pictures, and its DICOM series, each as a path that reads exactly that
    series (its one file, its own folder, or ``folder`` when it is the folder's only series); empty when
    the folder holds neither, so the folder itself is the input and fails when read.

    With pictures beside them, only the files directly in ``folder`` are looked at, as for the pictures;
    a DICOM-only folder is scanned whole, as reading it does."""
    from medfm.io.dicom import scan_dicom, series_folder, series_name

    pictures = _image_files(folder)
    others = [entry for entry in sorted(folder.iterdir()) if entry.is_file() and not entry.name.startswith(".")
              and entry not in pictures] if pictures else sorted(p for p in folder.rglob("*") if p.is_file())
    series, bad = scan_dicom(others)
    # a DICOM-named file that is no DICOM image stays an input so that its reason is reported, not lost;
    # a DICOM-only folder skips the ones its reader skips
    broken = [path for path, reason in bad if image_suffix(path) in _dicom_suffixes()
              and (pictures or not reason.startswith(("not a DICOM file", "DICOM object without pixel data")))]
    if len(series) == 1 and not pictures and not broken:
        return [folder]  # one series folder: read whole, exactly as a single-image command reads it
    found = []
    for one in series:
        own = Path(series_folder(one))
        if len(one.files) == 1:
            found.append(Path(one.files[0]))
        elif own != folder and not any(Path(f).is_relative_to(own) for s in series if s is not one for f in s.files):
            found.append(own)
        elif len(series) == 1 and not broken:  # beside pictures, the folder reads as its one series
            found.append(folder)
        else:
            raise MedfmError(f"{display_path(folder)}: {series_name(one)} shares the folder with other DICOM series; move "
                             f"each into its own folder, or write one file each (medfm convert {display_path(folder)} FOLDER/)")
    return sorted([*pictures, *found, *map(Path, broken)])


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[BatchInput]:
    """One input per file; a folder gives each of its pictures (not recursively) and each of its DICOM
    series (a DICOM series folder stays one input; see :func:`_folder_inputs`). A missing path is
    an input too: it fails when read, with the others going on."""
    inputs = []
    for given in paths:
        path = Path(os.fsdecode(given))
        found = _folder_inputs(path) if path.is_dir() else []
        inputs.extend(BatchInput(p) for p in found or [path])
    return inputs


def _prompt_texts(value: Any, column: str, where: str) -> tuple[str, ...]:
    """A manifest cell as prompt texts: a string (several separated by ``;``), a list of strings, a
    box as a list of numbers, or a list of such lists."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(";") if part.strip())
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return (",".join(str(v) for v in value),)
    if isinstance(value, list):
        return tuple(text for item in value for text in _prompt_texts(item, column, where))
    raise MedfmError(f"{where}: {column!r} must be text like '10,20,30,40', a list of numbers or a list of texts; got {value!r}")


def read_batch_manifest(path: str | os.PathLike) -> list[BatchInput]:
    """The inputs a manifest lists: CSV with a header, or JSON lines (``.jsonl``/``.ndjson``, one object
    per line). Each row names its image in ``image`` (or ``path``), relative to the manifest's folder,
    and may give prompts in ``box`` and ``points``, written as ``medfm segment``'s ``--box`` and
    ``--point`` values (several separated by ``;``; in JSON also lists). Other columns are ignored."""
    path = Path(os.fsdecode(path))
    name = display_path(path)
    if path.name.lower().endswith((".jsonl", ".ndjson")):
        rows = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise MedfmError(f"{name}: cannot read the manifest ({getattr(exc, 'strerror', None) or exc})") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise MedfmError(f"{name}, line {number}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise MedfmError(f"{name}, line {number}: each line must be a JSON object")
            rows.append((number, row))
        if not rows:
            raise MedfmError(f"{name}: the manifest has no rows")
    else:
        rows = list(enumerate(read_rows(path), start=2))
    inputs = []
    for number, row in rows:
        where = f"{name}, line {number}"
        image = next((row[c] for c in IMAGE_COLUMNS if row.get(c)), None)
        if not isinstance(image, str):
            raise MedfmError(f"{where}: no image; give its path in an 'image' (or 'path') column")
        inputs.append(BatchInput(path.parent / image, points=_prompt_texts(row.get("points"), "points", where),
                                 boxes=_prompt_texts(row.get("box"), "box", where)))
    return inputs


def catalog_inputs(catalog: str | None, where: Mapping[str, str]) -> list[BatchInput]:
    """The catalog's images matching every ``where`` filter (keys among :data:`CATALOG_FILTERS`), oldest first."""
    from medfm.catalog import open_catalog

    unknown = sorted(set(where) - set(CATALOG_FILTERS))
    if unknown:
        raise MedfmError(f"a catalog query filters on {', '.join(CATALOG_FILTERS)}; got {unknown[0]!r}")
    with open_catalog(catalog, existing=True) as store:
        records = store.query(**where, with_files=True)
    if not records:
        shown = ", ".join(f"{k}={v}" for k, v in where.items()) or "(no filter)"
        raise MedfmError(f"the catalog has no image matching {shown}")
    return [BatchInput(Path(record.source_path), record=record, record_id=record.id) for record in records]


def output_paths(inputs: Sequence[BatchInput], folder: str | os.PathLike, suffix: str | None = None) -> list[Path]:
    """One output in ``folder`` per input, named after the input's file name with ``suffix`` (default:
    ``.png`` for photo-like inputs, else ``.nii.gz``) instead of its image suffix; a catalog
    record's name also carries its id (``series_folder-12.nii.gz``), since several series can
    share one folder. Two inputs that would share an output name are refused before anything
    is written."""
    folder = Path(os.fsdecode(folder))
    outputs: dict[Path, Path] = {}
    for item in inputs:
        known = image_suffix(item.path) if not item.path.is_dir() else None
        stem = item.path.name[: -len(known)] if known else item.path.name
        stem = stem if item.record_id is None else f"{stem}-{item.record_id}"
        target = folder / (stem + (suffix or (".png" if known in PLANAR_SUFFIXES else ".nii.gz")))
        if target in outputs:
            raise MedfmError(f"{display_path(outputs[target])} and {display_path(item.path)} would both be written to "
                             f"{display_path(target)}; rename one, or run them separately")
        outputs[target] = item.path
    return list(outputs)


def run_batch(
    inputs: Sequence[BatchInput],
    work: Callable[[BatchInput], dict[str, Any]],
    *,
    progress: bool = False,
    description: str = "Processing",
) -> BatchReport:
    """``work(input)`` for every input in order; one that raises :class:`MedfmError` becomes a failure."""
    report = BatchReport(len(inputs))
    with progress_bar(progress) as bar:
        task = bar.add_task(description, total=len(inputs))
        for item in inputs:
            try:
                report.results.append(work(item))
            except MedfmError as exc:
                report.failures.append(failure(item.path, exc))
            bar.advance(task)
    return report


def describe_files(inputs: Sequence[BatchInput], show_phi: bool = False, progress: bool = False) -> BatchReport:
    """``medfm info`` over many inputs: per input ``{"input", "images": [describe(...)]}``."""
    from medfm.io.info import describe_path

    return run_batch(inputs, lambda item: {"input": display_path(item.path), "images": describe_path(item.path, show_phi)},
                     progress=progress, description="Reading")
