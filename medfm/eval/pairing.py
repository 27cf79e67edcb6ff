"""Pairing prediction and reference files by case name.

A case's name is its file name without the image suffix the format registry knows
(``case1.nii.gz``, ``case1.png`` and ``case1.nrrd`` are all ``case1``); a folder (a DICOM
series) keeps its name. Nothing is dropped quietly: every entry that does not end up in
exactly one pair is returned with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medfm.errors import MedfmError, display_path
from medfm.io.formats import image_suffix


@dataclass(frozen=True)
class Pair:
    name: str
    pred: Path
    ref: Path


@dataclass(frozen=True)
class Skipped:
    """A case left out of an evaluation and why, for the report and the JSON's ``skipped``."""

    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def case_name(path: Path) -> str:
    """``path``'s name without the longest registered image suffix."""
    if path.is_dir():
        return path.name
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def files_by_case(folder: Path, role: str) -> tuple[dict[str, Path], list[Skipped]]:
    """The entries of ``folder`` by case name, and the names that several entries share (skipped).

    ``role`` names the folder's files in messages ("prediction", "A mask").
    """
    if not folder.is_dir():
        raise MedfmError(f"{display_path(folder)}: {role} folder does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        found.setdefault(case_name(entry), []).append(entry)
    unique = {name: paths[0] for name, paths in found.items() if len(paths) == 1}
    ambiguous = [
        Skipped(name, f"several {role} files have this name: {', '.join(p.name for p in paths)}")
        for name, paths in found.items()
        if len(paths) > 1
    ]
    return unique, ambiguous


def pair_folders(
    first_dir: str | os.PathLike, second_dir: str | os.PathLike, first_role: str, second_role: str
) -> tuple[list[tuple[str, Path, Path]], list[Skipped]]:
    """``(name, first path, second path)`` for the cases found in both folders, sorted by name, and
    everything that could not be paired (sorted by name), with the reason."""
    firsts, skipped = files_by_case(Path(first_dir), first_role)
    seconds, second_skipped = files_by_case(Path(second_dir), second_role)
    skipped += second_skipped
    ambiguous = {s.name for s in skipped}
    pairs = [(name, firsts[name], seconds[name]) for name in sorted(firsts.keys() & seconds.keys())]
    skipped += [
        Skipped(name, f"{firsts[name].name}: no {second_role} with this name in {display_path(second_dir)}")
        for name in sorted(firsts.keys() - seconds.keys() - ambiguous)
    ]
    skipped += [
        Skipped(name, f"{seconds[name].name}: no {first_role} with this name in {display_path(first_dir)}")
        for name in sorted(seconds.keys() - firsts.keys() - ambiguous)
    ]
    return pairs, sorted(skipped, key=lambda s: s.name)


def pair_files(pred_dir: str | os.PathLike, ref_dir: str | os.PathLike) -> tuple[list[Pair], list[Skipped]]:
    """Prediction and reference files of the same case, sorted by name, and everything that could not be paired."""
    pairs, skipped = pair_folders(pred_dir, ref_dir, "prediction", "reference")
    return [Pair(*pair) for pair in pairs], skipped
