"""Browsing a catalog of any size: filter, sort and group by patient → study → series, one page at a time.

Only the page asked for is read in full. Sorting by date added, modality or patient runs in
the database (:meth:`~medfm.catalog.store.Catalog.page`), so a page of a million images costs
what a page of a small catalog does; sorting by name and filtering by text run here over
:meth:`~medfm.catalog.store.Catalog.overview`'s few columns of every match (about 0.2 s for 10,000). Names and text filters use what a
person is shown of an image (:func:`display_name`), never its hidden source path, which
may name the patient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from medfm.catalog.store import PAGE_ORDERS, Catalog, ImageOverview, ImageRecord
from medfm.errors import MedfmError

#: Hex digits of the patient key shown as a patient's pseudonym (12: no two of a million patients share one, in practice).
PSEUDONYM_CHARS = 12


class Nameable(Protocol):
    description: str | None
    format: str
    source_path: str
    modality: str


def display_name(image: Nameable) -> str:
    """A title for lists: the description (a DICOM series' own, or the name a user gave it), else the
    file's name for files the user named (DICOM file names are machine-made and their folders may
    name the patient), else the modality."""
    if image.description:
        return image.description
    if image.format != "dicom":
        return PurePath(image.source_path).name
    return f"{image.modality} image"


def pseudonym(patient_key: str | None) -> str | None:
    """How lists name a patient without identifying them: the start of the catalog's keyed hash of the patient ID."""
    return patient_key[:PSEUDONYM_CHARS] if patient_key else None


#: Sorts that need an image's name (:func:`display_name`, worked out here, not stored): by key on its overview.
NAME_SORTS: dict[str, Callable[[ImageOverview], tuple[Any, ...]]] = {
    "name": lambda image: (display_name(image).casefold(), image.id),
}
#: Every sort :func:`browse` takes: the database's (:data:`~medfm.catalog.store.PAGE_ORDERS`: ``added``,
#: ``modality``, ``patient``, which keeps each patient's studies and each study's series together) and ``name``.
SORTS = (*PAGE_ORDERS, *NAME_SORTS)


def _overview_key(image: ImageOverview, sort: str) -> tuple[Any, ...]:
    """The database's order (:data:`~medfm.catalog.store.PAGE_ORDERS`) for overviews a text filter kept."""
    if sort == "modality":
        return (image.modality, image.id)
    if sort == "patient":
        return (image.patient_key is None, image.patient_key or "", image.study_id or 0, image.id)
    return (image.id,)


@dataclass(frozen=True)
class CatalogPage:
    """One page of a sorted, filtered catalog: ``records`` from position ``offset`` of ``total`` matches."""

    records: list[ImageRecord]
    total: int
    offset: int


def browse(catalog: Catalog, *, modality: str | None = None, body_part: str | None = None, dataset: str | None = None,
           text: str | None = None, sort: str = "added", descending: bool = False, offset: int = 0,
           limit: int | None = None) -> CatalogPage:
    """The images matching every filter, sorted by ``sort`` (one of :data:`SORTS`), from ``offset``, at most ``limit``.

    ``text`` is a case-insensitive substring of an image's name (:func:`display_name`),
    description or dataset name.
    """
    if sort not in SORTS:
        raise MedfmError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    if offset < 0:
        raise MedfmError(f"offset must be 0 or more; got {offset}")
    if limit is not None and limit < 1:
        raise MedfmError(f"limit must be a positive number of images; got {limit}")
    if not text and sort in PAGE_ORDERS:  # the database sorts and pages: only the page is read
        records, total = catalog.page(sort, descending, offset, limit, modality=modality, body_part=body_part, dataset=dataset)
        return CatalogPage(records, total, offset)
    # names and the text filter are worked out here, over a few columns of every match
    images = catalog.overview(modality=modality, body_part=body_part, dataset=dataset)
    if text:
        needle = text.casefold()
        images = [image for image in images
                  if any(needle in value.casefold() for value in (display_name(image), image.description or "", image.dataset or ""))]
    key = NAME_SORTS.get(sort) or (lambda image: _overview_key(image, sort))
    images.sort(key=key, reverse=descending)
    chosen = images[offset:] if limit is None else images[offset:offset + limit]
    return CatalogPage(catalog.get_many([image.id for image in chosen]), len(images), offset)
