"""DICOM reading: header-only series scanning, and volumes laid out exactly as dcm2niix does.

:func:`scan_dicom` groups files into :class:`DicomSeries` from their headers alone (fast,
and one bad file never stops it); :func:`read_series` decodes a series into images whose
array and affine match ``dcm2niix`` (row axis flipped, slices along the normal, 3D MR
acquisitions reoriented to RAS+; see :mod:`medfm.io.dicom.geometry`). Single-frame files,
enhanced multi-frame files and Siemens mosaics are read; repeated positions make a 4D
series; Rescale Slope/Intercept is applied. A series with a missing slice, uneven spacing,
mixed orientations or sizes, or gantry tilt is refused with a one-line reason, not split
or resampled.

Importing this package registers the ``dicom`` format; pydicom is imported only when a
DICOM file is actually read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfm.errors import MedfmError, UnreadableFileError
from medfm.io.dicom.frames import looks_like_dicom
from medfm.io.formats import Format, register_format
from medfm.io.image import Image, affine_from_lps
from medfm.io.limits import check_decoded_size
from medfm.provenance import Provenance

if TYPE_CHECKING:
    from medfm.io.dicom.frames import Frame
    from medfm.io.dicom.scan import ChunkScanner


@dataclass
class DicomSeries:
    """One series found by :func:`scan_dicom`, described from headers alone.

    ``shape`` is ``(I, J, K, T, C)``, ``spacing`` (i, j, k) in mm and ``affine`` (RAS+) as
    :func:`read_series` will return them; for a series it will refuse, ``problem`` says why
    (a missing slice, say) and the geometry is a best guess from the first frame.
    ``metadata`` is non-identifying; ``phi`` holds patient identifiers as strings.
    ``frames`` (filled by the scan) lets :func:`read_series` skip re-reading headers; when
    empty, the files are scanned again. ``duplicates`` are files left out because their
    SOP Instance UID repeats one of ``files`` (one image saved twice under two names).
    ``provenance_record`` is the JSON provenance a medfm output (a SEG) carries
    (:mod:`medfm.io.dicom.provenance`), parsed by :func:`read_series`. ``sha256`` maps each
    of ``files`` to its SHA-256 when the scan was asked for checksums, else is empty.
    """

    series_uid: str
    study_uid: str
    files: list[Path]
    metadata: dict
    phi: dict
    shape: tuple[int, int, int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray = field(repr=False)
    problem: str | None = None
    frames: list[Frame] = field(default_factory=list, repr=False)
    duplicates: list[Path] = field(default_factory=list)
    provenance_record: str | None = field(default=None, repr=False)
    sha256: dict[Path, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_frames(
        cls, series_uid: str, metadata: dict, phi: dict, provenance: str | None, files: list[Path],
        frames: list[Frame], duplicates: list[Path] | None = None, sha256: dict[Path, str] | None = None,
    ) -> DicomSeries:
        from medfm.io.dicom.geometry import plan_volume

        metadata = dict(metadata)
        metadata["num_files"] = len(files)
        problem = None
        try:
            plan = plan_volume(frames)
            shape, affine = plan.output_shape, plan.output_affine
        except MedfmError as exc:
            problem = str(exc)
            first = frames[0]
            n_slices = len({tuple(round(v, 2) for v in f.position) for f in frames})
            shape = (first.columns, first.rows, n_slices, max(1, len(frames) // n_slices), first.layout.samples)
            row, column = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
            # read_series flips the row axis, as dcm2niix does: j runs against the column direction.
            affine = affine_from_lps(
                row, -column, np.cross(row, column),
                (first.pixel_spacing[1], first.pixel_spacing[0], first.slice_spacing or 1.0),
                np.asarray(first.position, dtype=float),
            )
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        return cls(series_uid, str(metadata.get("study_uid", "")), list(files), metadata, dict(phi), shape, spacing, affine,
                   problem, frames, list(duplicates or []), provenance, dict(sha256 or {}))


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value warnings: they quote element values, which can identify the patient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def scan_dicom(paths: Iterable[Path], checksums: bool = False,
               scan_chunks: ChunkScanner | None = None) -> tuple[list[DicomSeries], list[tuple[Path, str]]]:
    """Header-only scan (pydicom ``stop_before_pixels``): group DICOM files into series.

    Returns ``(series, bad)``: series sorted by study, series number and UID, and every file
    that is not a readable DICOM image (not DICOM, truncated, no pixel data, zero rows…)
    with a one-line reason. Never raises for one file. ``checksums`` fills each series'
    ``sha256``, hashed by the same worker processes that parse the headers. ``scan_chunks``
    parses the headers elsewhere (chunks of the files through
    :func:`medfm.io.dicom.scan.scan_files` on a Ray cluster, say) instead of in this machine's processes;
    the grouping into series is the same.
    """
    from medfm.io.dicom.scan import scan

    with quiet_pydicom():
        return scan(paths, checksums, scan_chunks)


def series_folder(series: DicomSeries) -> str:
    """The folder that holds every file of the series."""
    return os.path.commonpath([Path(p).parent for p in series.files])


def series_name(series: DicomSeries) -> str:
    """How messages name a series within its folder: number and description (no identifiers)."""
    number = series.metadata.get("series_number", "?")
    description = series.metadata.get("series_description")
    return f"series {number}" + (f" ({description})" if description else "")


def read_series(series: DicomSeries) -> list[Image]:
    """Decode pixels and assemble the series: one image ``(I, J, K, T, C)``, dcm2niix's layout.

    Raises :class:`~medfm.errors.UnreadableFileError` naming the series' folder (or file) for anything it
    cannot place on a regular grid or decode.
    """
    from medfm.io.dicom.geometry import plan_volume
    from medfm.io.dicom.scan import BadFile, file_frames
    from medfm.io.dicom.series import assemble

    frames = series.frames
    if not frames:
        for path in series.files:
            try:
                frames.extend(file_frames(Path(path))[1])
            except BadFile as exc:
                raise UnreadableFileError(path, str(exc)) from None
    try:
        plan = plan_volume(frames)
    except MedfmError as exc:
        raise UnreadableFileError(series_folder(series), f"{series_name(series)}: {exc}") from None
    try:
        provenance = Provenance.from_json(series.provenance_record) if series.provenance_record else None
    except MedfmError as exc:
        raise UnreadableFileError(series_folder(series), f"{series_name(series)}: {exc}") from None
    _check_series_size(series, plan)
    modality = series.metadata.get("modality") or "OT"
    with quiet_pydicom():
        image = assemble(plan, modality, series.metadata, series.phi)
    image.provenance = provenance
    return [image]


def _check_series_size(series: DicomSeries, plan) -> None:
    """The decompression limits, for the whole volume, before its buffer is allocated."""
    from medfm.io.dicom.pixels import output_dtype

    frames = [frame for stack in plan.grid for frame in stack]
    decoded = int(np.prod(plan.shape, dtype=object)) * output_dtype(frames).itemsize
    stored = sum(os.stat(path).st_size for path in series.files)
    folder = os.path.commonpath([Path(p).parent for p in series.files])
    check_decoded_size(Path(folder) if len(series.files) > 1 else Path(series.files[0]), decoded, stored, "series")


def read_dicom(path: Path) -> list[Image]:
    """A DICOM file, or every series under a folder (recursively), one image per series.

    In a folder, files that are not DICOM images (a README, a DICOMDIR, a structured
    report) are skipped; a DICOM image file that cannot be read is an error.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    series, bad = scan_dicom(files)
    for bad_path, reason in bad:
        if not path.is_dir() or not reason.startswith(("not a DICOM file", "DICOM object without pixel data")):
            raise UnreadableFileError(bad_path, reason)
    if not series:
        raise UnreadableFileError(path, "no DICOM image found")
    return [image for s in series for image in read_series(s)]


DICOM = register_format(Format("dicom", (".dcm", ".dicom", ".ima"), read_dicom, None, looks_like_dicom, reads_folders=True))
