"""Reading a catalogued image back from exactly the files its record names.

A record's folder may hold other series, other copies and other files: nothing but the
record's own files is ever opened, so one series of a folder loads the same whether it
shares the folder or not. Errors name the catalog image, never a path (paths can name
patients).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medfm.catalog.store import ImageRecord
from medfm.errors import FileError, MedfmError
from medfm.io.dicom import DICOM

if TYPE_CHECKING:
    from medfm.io import Image
    from medfm.io.dicom import DicomSeries

#: The registered format whose records are DICOM series (one record, many files).
DICOM_FORMAT = DICOM.name


def record_paths(record: ImageRecord) -> list[Path]:
    """The files of ``record`` (fetched with :meth:`Catalog.get` or ``query(with_files=True)``)."""
    if record.files is None:
        raise MedfmError(f"image {record.id}: the record was fetched without its files")
    if not record.files:
        raise MedfmError(f"image {record.id} has no files")
    return [Path(f.path) for f in record.files]


def _check_present(record: ImageRecord, paths: list[Path]) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise MedfmError(f"image {record.id} cannot be read: {len(missing)} of its {len(paths)} "
                         "files are missing; ingest the folder again")


def record_series(record: ImageRecord) -> DicomSeries:
    """The DICOM series of ``record``, scanned from its own files only."""
    from medfm.io.dicom import scan_dicom

    if record.format != DICOM_FORMAT:
        raise MedfmError(f"image {record.id} is a {record.format} file, not a DICOM series")
    paths = record_paths(record)
    _check_present(record, paths)
    series_list, bad = scan_dicom(paths)
    if bad:  # a series missing a file would show with a slice silently gone
        raise MedfmError(f"image {record.id} cannot be read: {len(bad)} of its {len(paths)} DICOM "
                         f"files cannot be read ({bad[0][1]})")
    series = next((s for s in series_list if s.series_uid == record.series_uid), None)
    if series is None or len(series_list) > 1:
        raise MedfmError(f"image {record.id} cannot be read: its DICOM files changed since they "
                         "were catalogued; ingest them again")
    return series


def load_record(record: ImageRecord, series: DicomSeries | None = None) -> Image:
    """The image of ``record``: its DICOM series (``series`` if already scanned), or its one file."""
    from medfm.io import load
    from medfm.io.dicom import read_series

    try:
        if record.format == DICOM_FORMAT:
            return read_series(series or record_series(record))[0]
        paths = record_paths(record)
        _check_present(record, paths)
        return load(paths[0])
    except FileError as exc:  # its path may name the patient: say which image by id
        raise MedfmError(f"image {record.id} cannot be read: {exc.reason}") from None
    except OSError as exc:
        raise MedfmError(f"image {record.id} cannot be read: {exc.strerror or type(exc).__name__}") from None
