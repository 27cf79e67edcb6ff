"""Forecasting the next images of an ordered sequence: a neural ODE forecaster, or a baseline.

A sequence is a video or multi-frame image (its frames), or several 2D images in the order given, or,
for a patient's longitudinal studies, in the order of their acquisition dates (``order="date"``: the
DICOM acquisition, series or study date and time of each image). Its steps are taken as equally
spaced, and the forecast continues with that spacing; dated images report their gaps in days (never
the dates themselves) so that uneven spacing is seen.

Methods: ``ode`` (:class:`~medfm.models.forecaster.Forecaster`: the change it predicts at its working
size is upsampled and added to the full-resolution last image), ``last`` (repeat the last image)
and ``linear`` (continue the change between the last two images). Values are windowed as
:func:`medfm.tasks.upscale.value_window` does; colour sequences are forecast as grey (luminance).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medfm.errors import MedfmError, display_path
from medfm.io import load
from medfm.io.formats import writer_for
from medfm.io.image import Image
from medfm.io.sidecar import save_with_provenance
from medfm.provenance import Provenance, pixels_id
from medfm.tasks.upscale import RGB_TO_YCBCR, to_dtype, value_window

METHODS = ("ode", "last", "linear")
#: How several images are put in sequence: as given, or by acquisition date.
ORDERS = ("given", "date")
#: Date and time keys of :attr:`Image.phi`, most specific first: the first date found, with its time.
_DATE_KEYS = (("acquisition_date", "acquisition_time"), ("series_date", "series_time"), ("study_date", "study_time"))


def acquired_at(image: Image, path: str | os.PathLike) -> datetime:
    """When ``image`` was acquired: its DICOM acquisition, else series, else study date (and that one's time);
    a one-line error naming ``path`` when it has none."""
    for date_key, time_key in _DATE_KEYS:
        if date := image.phi.get(date_key):
            clock = (image.phi.get(time_key) or "000000").split(".")[0].ljust(6, "0")
            try:
                return datetime.strptime(f"{date}{clock}", "%Y%m%d%H%M%S")
            except ValueError:
                raise MedfmError(f"{display_path(path)}: its DICOM {date_key.replace('_', ' ')} is not a date") from None
    raise MedfmError(f"{display_path(path)}: has no acquisition, series or study date (only DICOM images carry one); "
                     "give the images in time order without --order date")


def in_date_order(paths: Sequence[str | os.PathLike]) -> tuple[list[str | os.PathLike], list[Image], list[float]]:
    """``paths`` sorted by :func:`acquired_at`, their images in that order, and the gaps between neighbours in days."""
    loaded = [load(path) for path in paths]
    times = [acquired_at(image, path) for image, path in zip(loaded, paths, strict=True)]
    order = sorted(range(len(paths)), key=lambda i: times[i])
    for earlier, later in zip(order, order[1:]):
        if times[earlier] == times[later]:
            raise MedfmError(f"{display_path(paths[later])}: was acquired at the same time as {display_path(paths[earlier])}; "
                             "a sequence needs one image per time point")
    gaps = [(times[later] - times[earlier]).total_seconds() / 86400 for earlier, later in zip(order, order[1:])]
    return [paths[i] for i in order], [loaded[i] for i in order], gaps


def read_sequence(paths: Sequence[str | os.PathLike], images: Sequence[Image] | None = None) -> tuple[np.ndarray, Image]:
    """``(N, rows, columns)`` grey frames as read (luminance for RGB), and the first image (its geometry).

    One path gives its frames (a video, a multi-frame image); several give one 2D image each. ``images``: the
    paths already loaded, in the same order (not loaded again).
    """
    images = [load(path) for path in paths] if images is None else list(images)
    for path, image in zip(paths, images):
        if not image.is_2d:
            raise MedfmError(f"{display_path(path)}: is a volume ({image.spatial_shape[2]} slices); forecasting takes 2D images or videos")
        if image.num_channels not in (1, 3):
            raise MedfmError(f"{display_path(path)}: has {image.num_channels} channels; forecasting takes grey or RGB images")
        if len(paths) > 1 and image.num_frames > 1:
            raise MedfmError(f"{display_path(path)}: has {image.num_frames} frames; give one video, or several single images")
        if image.spatial_shape[:2] != images[0].spatial_shape[:2]:
            raise MedfmError(f"{display_path(path)}: is {image.spatial_shape[0]}x{image.spatial_shape[1]} pixels, "
                             f"unlike {display_path(paths[0])} ({images[0].spatial_shape[0]}x{images[0].spatial_shape[1]})")
    frames = np.concatenate([np.moveaxis(np.asarray(image.array[:, :, 0]), 2, 0) for image in images])  # (N, I, J, C)
    if len(frames) < 2:
        raise MedfmError(f"{display_path(paths[0])}: a sequence of one image; forecasting needs at least 2")
    grey = frames[..., 0] if frames.shape[-1] == 1 else frames.astype(np.float32) @ RGB_TO_YCBCR[0].astype(np.float32)
    return grey.transpose(0, 2, 1), images[0]


def resize(planes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, H, W)`` float planes to ``size`` (antialiased bilinear)."""
    tensor = torch.from_numpy(np.ascontiguousarray(planes, np.float32))[:, None]
    return F.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)[:, 0].numpy()


def forecast_frames(frames: np.ndarray, steps: int, method: str = "ode", forecaster: Any = None) -> np.ndarray:
    """``(N, H, W)`` frames in [0, 1] (N ≥ 2) → ``(steps, H, W)`` forecasts in [0, 1]."""
    if method not in METHODS:
        raise MedfmError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    if steps < 1:
        raise MedfmError(f"--steps must be at least 1; got {steps}")
    last, previous = frames[-1].astype(np.float32), frames[-2].astype(np.float32)
    ahead = np.arange(1, steps + 1, dtype=np.float32)[:, None, None]
    if method == "last":
        return np.repeat(last[None], steps, axis=0)
    if method == "linear":
        return np.clip(last + ahead * (last - previous), 0, 1)
    size = (forecaster.size, forecaster.size)
    small = resize(np.stack([previous, last]), size)
    change = forecaster.forecast(small[None], steps)[0] - small[1]
    return np.clip(last + resize(change, last.shape), 0, 1)


def forecast_files(paths: Sequence[str | os.PathLike], output: str | os.PathLike, steps: int, method: str = "ode",
                   model: str | os.PathLike | None = None, order: str = "given") -> dict[str, Any]:
    """Forecast ``steps`` images after the sequence ``paths`` and write them as one multi-frame ``output``
    (video, NIfTI, NPZ: frames on the T axis), with provenance; returns what was written. ``method``
    ``ode`` needs ``model`` (a forecaster name or model folder). ``order`` ``date`` sorts several images by
    :func:`acquired_at` first (the result then holds ``gaps_days``)."""
    from medfm.models.registry import create_forecaster

    if not paths:
        raise MedfmError("give a sequence: a video, or two or more images in order")
    if order not in ORDERS:
        raise MedfmError(f"--order must be one of {', '.join(ORDERS)}; got {order!r}")
    gaps, images = None, None
    if order == "date":
        if len(paths) < 2:
            raise MedfmError(f"{display_path(paths[0])}: --order date sorts several images; give two or more")
        paths, images, gaps = in_date_order(paths)
    if method == "ode" and model is None:
        raise MedfmError("--method ode needs --model: a forecaster folder from `medfm train forecast` (medfm ships none: "
                         "on its held-out clips none beat repeating the last image; see README)")
    writer_for(output)
    forecaster = create_forecaster(model) if method == "ode" else None
    frames, first = read_sequence(paths, images)
    low, high = value_window(frames)
    future = forecast_frames((frames.astype(np.float32) - low) / (high - low), steps, method, forecaster)
    array = to_dtype(future * (high - low) + low, frames.dtype).transpose(2, 1, 0)[:, :, None, :, None]
    provenance = Provenance(
        kind="generation", model=forecaster.name if forecaster else f"baseline-{method}",
        weights_sha256=forecaster.weights_sha256 if forecaster else None,
        inputs=tuple(pixels_id(frame) for frame in frames[-2:]),
        parameters={"method": f"forecast-{method}", "steps": steps, "observed": len(frames)}, synthetic=True)
    image = Image(array, first.affine, first.modality, {k: v for k, v in first.metadata.items() if k in ("fps", "spacing_known")},
                  dict(first.phi), provenance)
    written = save_with_provenance(image, output)
    return {"inputs": [str(p) for p in paths], "observed_frames": len(frames), "steps": steps, "method": method,
            "model": provenance.model, "weights_sha256": provenance.weights_sha256, "output": [str(p) for p in written],
            **({"gaps_days": [round(gap, 4) for gap in gaps]} if gaps is not None else {})}
