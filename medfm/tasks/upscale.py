"""Super-resolution of stills, volumes and videos with a :class:`~medfm.models.upscaler.Upscaler`.

Values: an 8-bit image is read as ``value / 255``, any other as ``(value - min) / (max - min)`` of the
whole image, and mapped back afterwards (rounded and clipped to the input's dtype), so CT keeps
its Hounsfield units. Colour goes through YCbCr (ITU-R BT.601, as JPEG): the network upscales
the luminance, and the two chroma planes are upscaled bicubically, as super-resolution
usually does (the eye resolves detail in luminance).

Planes: a still is one plane (repeated as its own neighbours); a video's frames are upscaled
with their neighbours ``t-1, t, t+1`` as the network's input (the first and last frames repeat
themselves); a volume's slices are upscaled in-plane one by one, or with ``through_plane`` the
volume is upscaled along the slice axis only: each ``(j, k)`` plane is upscaled and then averaged
back over ``j`` in blocks of ``scale``. A model of scale 2 gives ×4 in two passes.

Geometry: the upscaled axes' columns of the affine are divided by the scale, and the origin moves
to the centre of the first new voxel (``-(s - 1) / 2s`` of an old voxel), so the image covers the
same extent of the patient; spacing follows from the affine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.io import load
from medfm.io.formats import image_suffix, writer_for
from medfm.io.image import Image
from medfm.io.sidecar import save_with_provenance
from medfm.provenance import Provenance, pixels_id

SCALES = (2, 4)
#: Video containers medfm reads but does not write: their upscaled clips are written as MP4.
WRITTEN_AS_MP4 = (".mov", ".avi", ".mkv", ".mpeg", ".mpg")
#: BT.601 full-range RGB → YCbCr (rows: Y, Cb, Cr), applied to values in [0, 1]; chroma offset by 0.5.
RGB_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def check_scale(scale: int, upscaler: Any) -> int:
    """How many passes of the model give ``scale``; MedfmError naming the valid choices."""
    if scale not in SCALES:
        raise MedfmError(f"--scale must be one of {', '.join(map(str, SCALES))}; got {scale}")
    passes, reached = 0, 1
    while reached < scale:
        reached *= upscaler.scale
        passes += 1
    if reached != scale:
        raise MedfmError(f"model {upscaler.name!r} upscales by {upscaler.scale}, which cannot make ×{scale}")
    return passes


def value_window(array: np.ndarray) -> tuple[float, float]:
    """The values that map to 0 and 1: the dtype's range for 8-bit images, else the image's own range."""
    if array.dtype == np.uint8:
        return 0.0, 255.0
    low, high = float(np.min(array)), float(np.max(array))
    return low, (high if high > low else low + 1.0)


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float ``values`` as ``dtype``: rounded and clipped to its range when it is an integer type."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def bicubic(planes: np.ndarray, scale: int, axes: str = "both") -> np.ndarray:
    """``(N, H, W)`` float planes upscaled bicubically (``axes``: ``"both"``, or ``"rows"`` for H alone)."""
    tensor = torch.from_numpy(np.ascontiguousarray(planes, np.float32))[:, None]
    factor = (scale, scale) if axes == "both" else (scale, 1)
    return F.interpolate(tensor, scale_factor=factor, mode="bicubic", align_corners=False)[:, 0].numpy()


def upscale_sequence(upscaler: Any, planes: np.ndarray, passes: int, neighbours: bool) -> np.ndarray:
    """``(N, H, W)`` luminance in [0, 1] → ``(N, s·H, s·W)``: each plane with its neighbours along N as
    the network's side frames when ``neighbours`` (a video), else with itself (stills, slices)."""
    half = upscaler.frames // 2
    for _ in range(passes):
        index = np.arange(len(planes))
        if neighbours:
            stacks = [np.clip(index + offset, 0, len(planes) - 1) for offset in range(-half, half + 1)]
        else:
            stacks = [index] * upscaler.frames
        planes = upscaler.upscale_planes(np.stack([planes[s] for s in stacks], axis=1))
    return planes


def upscale_planes_in_colour(upscaler: Any, planes: np.ndarray, passes: int, neighbours: bool) -> np.ndarray:
    """``(N, H, W, C)`` values in [0, 1], C = 1 or 3 → ``(N, s·H, s·W, C)``; colour through YCbCr."""
    if planes.shape[-1] == 1:
        return upscale_sequence(upscaler, planes[..., 0], passes, neighbours)[..., None]
    ycbcr = planes @ RGB_TO_YCBCR.T
    luma = upscale_sequence(upscaler, ycbcr[..., 0], passes, neighbours)
    scale = upscaler.scale ** passes
    chroma = [bicubic(ycbcr[..., c], scale) for c in (1, 2)]
    rgb = np.stack([luma, *chroma], axis=-1) @ np.linalg.inv(RGB_TO_YCBCR).T
    return np.clip(rgb, 0.0, 1.0)


def upscaled_affine(affine: np.ndarray, scale: int, axes: tuple[int, ...]) -> np.ndarray:
    """``affine`` of a grid whose voxel ``axes`` are ``scale`` times finer over the same extent."""
    new = np.array(affine, dtype=np.float64)
    for axis in axes:
        new[:3, 3] -= affine[:3, axis] * (scale - 1) / (2 * scale)
        new[:3, axis] = affine[:3, axis] / scale
    return new


def upscale_image(image: Image, upscaler: Any, scale: int, through_plane: bool = False,
                  source: str | os.PathLike = "the image") -> Image:
    """``image`` upscaled ``scale`` times (see the module docstring), with geometry and provenance.

    ``source`` names the input in errors. Grey and RGB images only; ``through_plane`` needs a volume.
    """
    passes = check_scale(scale, upscaler)
    if image.num_channels not in (1, 3):
        raise MedfmError(f"{display_path(source)}: has {image.num_channels} channels; {upscaler.name} upscales "
                         "grey (1 channel) or RGB (3 channels) images")
    if through_plane and image.is_2d:
        raise MedfmError(f"{display_path(source)}: --through-plane needs a volume (more than one slice); this image has one")
    if min(image.spatial_shape[:2]) < 2:
        raise MedfmError(f"{display_path(source)}: is {image.spatial_shape[0]}x{image.spatial_shape[1]} pixels; too small to upscale")
    low, high = value_window(image.array)
    values = (np.asarray(image.array, np.float32) - low) / (high - low)
    columns, rows, slices, frames, channels = image.shape
    if through_plane:
        out = np.empty((columns, rows, slices * scale, frames, channels), np.float32)
        for t in range(frames):
            for i in range(columns):
                planes = values[i, :, :, t, :][None]  # (1, J, K, C): rows j, columns k
                finer = upscale_planes_in_colour(upscaler, planes, passes, neighbours=False)[0]
                out[i, :, :, t, :] = finer.reshape(rows, scale, slices * scale, channels).mean(axis=1)
        axes: tuple[int, ...] = (2,)
    else:
        out = np.empty((columns * scale, rows * scale, slices, frames, channels), np.float32)
        video = slices == 1 and frames > 1
        for k in range(slices):
            for t in range(1 if video else frames):
                chosen = slice(None) if video else slice(t, t + 1)
                planes = values[:, :, k, chosen, :].transpose(2, 1, 0, 3)  # (N, rows, columns, C)
                finer = upscale_planes_in_colour(upscaler, planes, passes, neighbours=video)
                out[:, :, k, chosen, :] = finer.transpose(2, 1, 0, 3)
        axes = (0, 1)
    array = to_dtype(out * (high - low) + low, image.array.dtype)
    provenance = Provenance(
        kind="generation", model=upscaler.name, weights_sha256=upscaler.weights_sha256, inputs=(pixels_id(image.array),),
        parameters={"method": "super-resolution", "scale": scale, "passes": passes, "through_plane": through_plane,
                    "frames_fused": upscaler.frames if (not through_plane and image.is_2d and image.num_frames > 1) else 1},
        synthetic=True,
    )
    return Image(array, upscaled_affine(image.affine, scale, axes), image.modality, dict(image.metadata),
                 dict(image.phi), provenance)


def default_output(source: Path, folder: Path, scale: int) -> Path:
    """``folder/<name>_x<scale><suffix>``: the input's format where medfm writes it, else MP4 for a video
    and NIfTI for the rest (a DICOM series, formats medfm only reads)."""
    suffix = image_suffix(source) if source.is_file() else None
    stem = source.name[: -len(suffix)] if suffix else source.name
    if suffix in WRITTEN_AS_MP4:
        return folder / f"{stem}_x{scale}.mp4"
    try:
        writable = suffix is not None and writer_for(source).write is not None
    except MedfmError:
        writable = False
    return folder / f"{stem}_x{scale}{suffix if writable else '.nii.gz'}"


def upscale_file(source: str | os.PathLike, output: str | os.PathLike, scale: int = 2,
                 model: str | os.PathLike | None = None, through_plane: bool = False) -> dict[str, Any]:
    """Read ``source``, upscale it (:func:`upscale_image`) and write ``output`` (a file, or an existing folder
    to write ``<name>_x<scale><suffix>`` into); returns what was written, the new shape and spacing."""
    from medfm.models.registry import DEFAULT_UPSCALER, create_upscaler

    source, output = Path(os.fsdecode(source)), Path(os.fsdecode(output))
    upscaler = create_upscaler(model or DEFAULT_UPSCALER)
    check_scale(scale, upscaler)  # before reading a large file
    target = default_output(source, output, scale) if output.is_dir() else output
    writer_for(target)  # refuse an unwritable output name before the work
    image = upscale_image(load(source), upscaler, scale, through_plane, source)
    written = save_with_provenance(image, target)
    return {"input": str(source), "output": [str(path) for path in written], "scale": scale,
            "shape": list(image.shape), "spacing": list(image.spacing), "model": upscaler.name,
            "weights_sha256": upscaler.weights_sha256, "through_plane": through_plane}
