"""NumPy ``.npz`` archives.

medfm writes ``array`` in its own ``(I, J, K, T, C)`` order with ``affine`` (RAS+) and
``modality``. Archives from elsewhere (MedMNIST, say) hold numpy-ordered stacks, read as
``([T,] [K,] rows, columns[, C])``; the array named ``array``, ``image`` or ``images``
is taken, else the first one, and the others are listed in the metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.io.formats import Format, register_format
from medfm.io.image import Image

_PREFERRED_KEYS = ("array", "image", "images")


def _from_numpy_order(pixels: np.ndarray) -> np.ndarray:
    channels_last = pixels.ndim >= 3 and pixels.shape[-1] in (3, 4) and pixels.shape[-2] > 4
    if not channels_last:
        pixels = pixels[..., None]
    leading = pixels.ndim - 3  # axes before rows, columns, channels
    if leading > 2:
        raise ValueError(f"array of shape {pixels.shape} has more axes than frames, slices, rows, columns and channels")
    pixels = pixels.reshape((1,) * (2 - leading) + pixels.shape)  # (T, K, rows, columns, C)
    return pixels.transpose(3, 2, 1, 0, 4)


def read_npz(path: Path) -> list[Image]:
    import zipfile

    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it and say so
        raise ValueError("not a complete NPZ (zip) archive")
    with np.load(path, allow_pickle=False) as archive:
        keys = list(archive.files)
        if "array" in keys and "affine" in keys:
            modality = str(archive["modality"]) if "modality" in keys else "OT"
            return [Image(archive["array"], archive["affine"], modality=modality)]
        candidates = [k for k in keys if k != "affine"]
        if not candidates:
            raise ValueError("archive holds no arrays")
        key = next((k for k in _PREFERRED_KEYS if k in candidates), candidates[0])
        pixels = archive[key]
        others = {k: list(archive[k].shape) for k in candidates if k != key}
    if pixels.size == 0 or pixels.ndim < 2:
        raise ValueError(f"array {key!r} of shape {pixels.shape} is not an image")
    metadata = {"npz_key": key, "spacing_known": False}
    if others:
        metadata["npz_other_arrays"] = others
    return [Image(_from_numpy_order(pixels), metadata=metadata)]


def write_npz(image: Image, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, array=image.array, affine=image.affine, modality=np.array(image.modality))


NPZ = register_format(Format("npz", (".npz",), read_npz, write_npz))
