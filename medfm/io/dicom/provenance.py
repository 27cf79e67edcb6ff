"""An output's provenance in a DICOM object: the whole record in one private element.

The record (:meth:`medfm.provenance.Provenance.to_json`) goes in a UT element of the
private block :data:`PRIVATE_CREATOR` in group :data:`PRIVATE_GROUP`, so prompts and
per-plane scores come back whole; the standard attributes (a SEG's algorithm
identification, Content Description) say the same in the words viewers show, but are too
short to hold it. De-identification drops private elements, and with them the record.
"""

from __future__ import annotations

from typing import Any

from medfm.provenance import Provenance

#: The odd (private) group, and the creator that reserves a block of it for medfm.
PRIVATE_GROUP = 0x0071
PRIVATE_CREATOR = "medfm provenance"
#: The element of the block holding the JSON record: (0071,xx00).
RECORD_OFFSET = 0x00


def add_provenance(dataset: Any, provenance: Provenance) -> None:
    """Store ``provenance`` in the pydicom ``dataset``'s private block."""
    block = dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(RECORD_OFFSET, "UT", provenance.to_json())


def provenance_text(dataset: Any) -> str | None:
    """The JSON text :func:`add_provenance` stored in a pydicom ``dataset``, or None.

    Parsed by :meth:`Provenance.from_json` when the image is read, where a damaged record
    is an error naming the series (a header scan never fails on it).
    """
    try:
        value = dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[RECORD_OFFSET].value
    except KeyError:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
