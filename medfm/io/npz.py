"""NumPy ``.npz`` archives.

medfm writes ``array`` in its own ``(I, J, K, T, C)`` order with ``affine`` (RAS+) and
``modality``. Archives from elsewhere (MedMNIST, say) hold numpy-ordered stacks, read as
``([T,] [K,] rows, columns[, C])``; the array named ``array``, ``image`` or ``images``
is taken, else the first one, and the others are listed in the metadata.

Every member's shape and dtype come from its ``.npy`` header first: the image member's
decoded size is checked against the decompression limits (:mod:`medfm.io.limits`) before
it is read, and :func:`probe_npz` describes an archive from those headers alone.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfm.io.formats import Format, register_format
from medfm.io.image import Image
from medfm.io.limits import check_decoded_size

_PREFERRED_KEYS = ("array", "image", "images")


@dataclass(frozen=True)
class Member:
    """One array of an archive, from its ``.npy`` header: name, shape, dtype and compressed size."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    stored_bytes: int

    @property
    def decoded_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize


def read_members(archive: zipfile.ZipFile) -> dict[str, Member]:
    """Every ``.npy`` member's header, by array name, without reading any array data."""
    members = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            continue
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise ValueError(f"member {info.filename!r} has .npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds Python objects, which medfm does not unpickle")
        members[info.filename[:-4]] = Member(info.filename[:-4], tuple(int(n) for n in shape), dtype, info.compress_size)
    return members


def _read(archive: zipfile.ZipFile, path: Path, member: Member) -> np.ndarray:
    check_decoded_size(path, member.decoded_bytes, member.stored_bytes, f"array {member.name!r}")
    with archive.open(member.name + ".npy") as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _image_member(members: dict[str, Member]) -> tuple[Member, dict[str, list[int]]]:
    candidates = [k for k in members if k != "affine"]
    if not candidates:
        raise ValueError("archive holds no arrays")
    key = next((k for k in _PREFERRED_KEYS if k in candidates), candidates[0])
    member = members[key]
    if len(member.shape) < 2 or 0 in member.shape:
        raise ValueError(f"array {key!r} of shape {member.shape} is not an image")
    return member, {k: list(members[k].shape) for k in candidates if k != key}


def _open(path: Path) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):  # np.load would try to unpickle it and say so
        raise ValueError("not a complete NPZ (zip) archive")
    return zipfile.ZipFile(path)


def _from_numpy_order(pixels: np.ndarray) -> np.ndarray:
    channels_last = pixels.ndim >= 3 and pixels.shape[-1] in (3, 4) and pixels.shape[-2] > 4
    if not channels_last:
        pixels = pixels[..., None]
    leading = pixels.ndim - 3  # axes before rows, columns, channels
    if leading > 2:
        raise ValueError(f"array of shape {pixels.shape} has more axes than frames, slices, rows, columns and channels")
    pixels = pixels.reshape((1,) * (2 - leading) + pixels.shape)  # (T, K, rows, columns, C)
    return pixels.transpose(3, 2, 1, 0, 4)


def _modality(archive: zipfile.ZipFile, path: Path, members: dict[str, Member]) -> str:
    if "modality" not in members or members["modality"].decoded_bytes > 1024:
        return "OT"
    return str(_read(archive, path, members["modality"]))


def read_npz(path: Path) -> list[Image]:
    with _open(path) as archive:
        members = read_members(archive)
        if "array" in members and "affine" in members:
            affine = _read(archive, path, members["affine"])
            return [Image(_read(archive, path, members["array"]), affine, modality=_modality(archive, path, members))]
        member, others = _image_member(members)
        pixels = _read(archive, path, member)
    metadata = {"npz_key": member.name, "spacing_known": False}
    if others:
        metadata["npz_other_arrays"] = others
    return [Image(_from_numpy_order(pixels), metadata=metadata)]


def probe_npz(path: Path) -> list[Image]:
    """The image's shape and dtype from the ``.npy`` headers alone; the array is a zero-strided stand-in."""
    with _open(path) as archive:
        members = read_members(archive)
        if "array" in members and "affine" in members:
            member = members["array"]
            stand_in = np.broadcast_to(np.zeros((), member.dtype), member.shape)
            return [Image(stand_in, _read(archive, path, members["affine"]), modality=_modality(archive, path, members))]
        member, others = _image_member(members)
    metadata = {"npz_key": member.name, "spacing_known": False}
    if others:
        metadata["npz_other_arrays"] = others
    return [Image(_from_numpy_order(np.broadcast_to(np.zeros((), member.dtype), member.shape)), metadata=metadata)]


def write_npz(image: Image, path: Path) -> None:
    with open(path, "wb") as handle:
        np.savez_compressed(handle, array=image.array, affine=image.affine, modality=np.array(image.modality))


NPZ = register_format(Format("npz", (".npz",), read_npz, write_npz, probe=probe_npz))
