"""Bring studies from a PACS into the catalog, and send segmentations back.

:func:`pull` retrieves a study (or one series) over DICOMweb into medfm's data folder and
ingests it as dataset ``"pacs"``; pulling again re-downloads but adds nothing, because
instances already on disk are kept and the catalog sees them unchanged.
:func:`push_segmentation` stores a DICOM SEG written by medfm on the PACS.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medfm.catalog.ingestion import IngestReport, ingest
from medfm.catalog.store import Catalog, open_catalog
from medfm.errors import MedfmError, display_path
from medfm.io.dicomweb import DicomWeb

#: The catalog dataset name of pulled images.
DATASET = "pacs"


@dataclass
class PullReport(IngestReport):
    """An :class:`IngestReport` plus what was pulled: the series and their catalog image ids."""

    series_uids: list[str] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)


def pull(
    pacs: DicomWeb,
    study_uid: str,
    *,
    series_uid: str | None = None,
    catalog: str | Catalog | None = None,
    folder: str | os.PathLike | None = None,
    progress: bool | Callable[[int, int], None] = False,
) -> PullReport:
    """Retrieve ``study_uid`` (only ``series_uid`` when given) and ingest it into ``catalog``.

    Files go to ``folder`` (default ``data_dir()/pacs``) as ``<series_uid>/<sop_uid>.dcm``;
    ``catalog`` is an open :class:`Catalog` or a URL (``None``: the default catalog).
    ``progress`` reports the cataloguing as :func:`~medfm.catalog.ingest` does.
    """
    if folder is None:
        from medfm.paths import data_dir

        folder = data_dir() / "pacs"
    paths = pacs.retrieve(study_uid, folder, series_uid)
    series_uids = sorted({path.parent.name for path in paths})
    owned = not isinstance(catalog, Catalog)
    store = open_catalog(catalog) if owned else catalog
    try:
        ingested = ingest(paths, store, dataset=DATASET, progress=progress)
        report = PullReport(**vars(ingested), series_uids=series_uids)
        report.image_ids = _image_ids(store, series_uids)
    finally:
        if owned:
            store.close()
    return report


def push_segmentation(pacs: DicomWeb, seg_path: str | os.PathLike) -> str:
    """Store the DICOM SEG at ``seg_path`` on ``pacs``; returns its SOP Instance UID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(seg_path)
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise MedfmError(f"{display_path(path)}: not a readable DICOM file ({exc})") from None
    if header.get("Modality") != "SEG":
        raise MedfmError(f"{display_path(path)}: not a DICOM SEG (modality {header.get('Modality') or 'missing'}); "
                         "write one with `medfm segment ... -o seg.dcm`")
    sop_uid = str(header.SOPInstanceUID)
    if sop_uid not in pacs.store([path]):
        raise MedfmError(f"{pacs.address}: the server did not confirm storing {display_path(path)}")
    return sop_uid


def _image_ids(store: Catalog, series_uids: list[str]) -> list[int]:
    """Catalog ids of the images of ``series_uids``: one per series that ingested."""
    wanted = set(series_uids)
    # Pulled series live in folders named by their UID, so the path filter narrows the scan.
    found = {record.series_uid: record.id for uid in series_uids
             for record in store.query(text=uid) if record.series_uid in wanted}
    return [found[uid] for uid in series_uids if uid in found]
