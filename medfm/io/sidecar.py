"""Saving a model's output with its provenance in every format: inside the file, or beside it.

PNG and NIfTI carry :attr:`Image.provenance` inside the file; other formats (JPEG, TIFF, NRRD,
video) get the record as ``<output>.provenance.json`` beside the file, so that no output of a
model loses what made it (and whether it is synthetic).
"""

from __future__ import annotations

import os
from pathlib import Path

from medfm.io.formats import atomic_path, save, writer_for
from medfm.io.image import Image

SIDECAR_SUFFIX = ".provenance.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the provenance of ``path`` goes when its format cannot hold it."""
    path = Path(os.fsdecode(path))
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_with_provenance(image: Image, path: str | os.PathLike) -> list[Path]:
    """Write ``image`` (which has provenance) to ``path``, with the record inside or in a sidecar; the files written.

    Both files are written through temporary files: if the image cannot be written, neither appears.
    """
    path = Path(os.fsdecode(path))
    if image.provenance is None or writer_for(path).keeps_provenance:
        return [save(image, path)]
    bare = Image(image.array, image.affine, image.modality, image.metadata, image.phi)
    with atomic_path(sidecar_path(path)) as tmp:
        tmp.write_text(image.provenance.to_json() + "\n")
        save(bare, path)
    return [path, sidecar_path(path)]
