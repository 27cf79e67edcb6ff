"""De-identify a DICOM file or folder tree into another, with a report of what was done."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from medfm.errors import FileError, MedfmError, UnreadableFileError, display_path
from medfm.io.deid.dataset import METHOD, Change, UIDMap, burned_in_reason, deidentify_dataset
from medfm.io.deid.profile import profile_name
from medfm.io.dicom.frames import looks_like_dicom
from medfm.io.formats import SNIFF_BYTES, atomic_path, first_line, output_folder
from medfm.io.dicom import quiet_pydicom

_UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class DeidentifiedFile:
    """One file written: ``path`` relative to the destination, its changes, a burned-in warning."""

    path: str
    changes: tuple[Change, ...]
    uids_remapped: int
    burned_in: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "uids_remapped": self.uids_remapped,
            "burned_in_warning": self.burned_in,
            "changes": [change.to_dict() for change in self.changes],
        }


@dataclass(frozen=True)
class FileProblem:
    """A file not written: ``path`` relative to the source, a one-line reason, and the ``source``
    file as given (for messages; the report keeps only the relative path)."""

    path: str
    reason: str
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


@dataclass
class DeidReport:
    """What a run did, per file, without any original value.

    ``uids_remapped`` counts distinct original UIDs replaced; ``skipped`` are files that
    are not DICOM (no ``DICM`` marker), ``failed`` are DICOM files that could not be
    de-identified (nothing was written for them).
    """

    profile: str = field(default_factory=profile_name)
    method: str = ", ".join(METHOD)
    files: list[DeidentifiedFile] = field(default_factory=list)
    skipped: list[FileProblem] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)
    uids_remapped: int = 0

    @property
    def burned_in(self) -> list[DeidentifiedFile]:
        """Files whose pixels may still show identifying text."""
        return [f for f in self.files if f.burned_in]

    def summary(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "written": len(self.files),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "uids_remapped": self.uids_remapped,
            "burned_in_warnings": len(self.burned_in),
            "private_tags": "removed (Retain Safe Private Option not implemented)",
            "dates": "emptied or replaced by dummies (no date shifting)",
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "method": self.method,
            "files": [f.to_dict() for f in self.files],
            "skipped_files": [p.to_dict() for p in self.skipped],
            "failed_files": [p.to_dict() for p in self.failed],
        }


def _inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    found = []
    for root, folders, names in os.walk(source):
        folders.sort()
        found.extend(Path(root) / name for name in sorted(names))
    return found


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def _targets(source: Path, destination: Path) -> list[tuple[Path, Path, str]]:
    """``(input, output, name)`` for every file, refusing to write into ``source``.

    ``name`` is the path relative to both folders (the output's name for one file).
    """
    if not source.exists():
        raise UnreadableFileError(source, "no such file or folder")
    if source.is_file():
        target = destination / source.name if destination.is_dir() else destination
        if _is_inside(target, source):
            raise MedfmError(f"{display_path(destination)}: output would overwrite the input file")
        return [(source, target, target.name)]
    if destination.exists() and not destination.is_dir():
        raise MedfmError(f"{display_path(destination)}: input is a folder, so the output must be a folder, not a file")
    if _is_inside(destination, source):
        raise MedfmError(f"{display_path(destination)}: output folder must not be inside the input folder {display_path(source)}")
    return [
        (path, destination / path.relative_to(source), path.relative_to(source).as_posix())
        for path in _inputs(source)
    ]


def _read(path: Path) -> Dataset:
    ds = pydicom.dcmread(path, force=True)  # files without a preamble are DICOM too
    if not len(ds):
        raise ValueError("no data set after the file meta (truncated?)")
    last = ds.get_item(list(ds.keys())[-1])
    # pydicom stops quietly at end of file; a value shorter than its length means truncation.
    if isinstance(last.value, bytes) and last.length != _UNDEFINED_LENGTH and len(last.value) < last.length:
        raise ValueError(f"file is truncated inside {last.tag}")
    return ds


def _process(path: Path, target: Path, name: str, uid_map: UIDMap, result: DeidReport, mirrored: bool) -> None:
    """De-identify one file into ``target``, recording the outcome in ``result``; ``mirrored``: ``target``
    is inside an output folder that mirrors the input's, whose subfolders are created as needed."""
    shown = display_path(path)
    try:
        with open(path, "rb") as handle:
            if not looks_like_dicom(handle.read(SNIFF_BYTES)):
                result.skipped.append(FileProblem(name, "not a DICOM file", shown))
                return
        ds = _read(path)
    except OSError as exc:
        result.failed.append(FileProblem(name, f"cannot open ({exc.strerror or exc})", shown))
        return
    except Exception as exc:  # pydicom's parse errors name offsets and tags, not values
        result.failed.append(FileProblem(name, f"cannot read as DICOM: {first_line(exc)}", shown))
        return
    try:
        changes = deidentify_dataset(ds, uid_map)
        with atomic_path(target, create_folders=True if mirrored else None) as tmp:
            ds.save_as(tmp)  # as conformant as the input: some files have empty meta UIDs
    except MedfmError as exc:  # medfm's own refusal (a missing output folder) names no original value
        result.failed.append(FileProblem(name, str(exc), shown))
        return
    except OSError as exc:  # the OS's reason alone: the file name it carries may name the patient
        result.failed.append(FileProblem(name, f"cannot write: {exc.strerror or type(exc).__name__}", shown))
        return
    except Exception as exc:  # only the type: a message could quote an original value
        result.failed.append(FileProblem(name, f"cannot de-identify or write: {type(exc).__name__}", shown))
        return
    uids = sum(change.action == "U" for change in changes)
    result.files.append(DeidentifiedFile(name, tuple(changes), uids, burned_in_reason(ds)))


def deidentify(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    *,
    uid_secret: bytes | None = None,
    report: str | os.PathLike | None = None,
) -> DeidReport:
    """De-identify a DICOM file or folder (recursively) into ``destination``.

    A folder's relative layout and file names are mirrored (rename files whose names
    identify patients before sharing the output). Each output file is written whole or
    not at all; non-DICOM files are skipped and unreadable DICOM files listed as failed,
    and the run goes on. UIDs map consistently across all files of the run; pass the
    same ``uid_secret`` to get the same UIDs in another run. ``report``, if given, is a
    JSON file written atomically with :meth:`DeidReport.to_dict`. A single input file that
    cannot be de-identified raises :class:`~medfm.errors.FileError` naming it.
    """
    source, destination = Path(source), Path(destination)
    targets = _targets(source, destination)
    mirrored = source.is_dir()
    if report is not None and _is_inside(Path(report), source):
        raise MedfmError(f"{display_path(report)}: the report must not be written into the input")
    uid_map = UIDMap(uid_secret)
    result = DeidReport()
    with output_folder(destination) if mirrored else nullcontext(), quiet_pydicom():
        for path, target, name in targets:
            _process(path, target, name, uid_map, result, mirrored)
    result.uids_remapped = len(uid_map)
    if not mirrored and result.failed:
        raise FileError(source, result.failed[0].reason)
    if not result.files and not result.failed:
        raise UnreadableFileError(source, f"no DICOM file found ({len(result.skipped)} skipped)")
    if report is not None:
        with atomic_path(report) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return result
