"""Unlabelled planes for ``medfm pretrain``: 2D images, slices of volumes and frames of videos, sampled together.

Every input image gives up to ``planes_per_image`` evenly spaced planes
(:func:`~medfm.models.encoders.planes.sample_planes`: one for a 2D image, slices of a volume,
frames of a video), each decoded once and downsampled with the models' own
:func:`~medfm.models.preprocess.prepare_plane` to a ``CACHE_SIZE`` uint8 tensor. Training draws
planes uniformly from that pool, so a volume or video weighs at most ``planes_per_image``
2D images. :func:`augmented_views` makes the random crops the methods learn from.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from medfm.errors import FileError, MedfmError, display_path
from medfm.models.encoders.planes import sample_planes
from medfm.models.preprocess import prepare_plane
from medfm.tasks.batch import BatchInput, catalog_inputs, expand_paths, read_batch_manifest

#: Cached planes are this size; views are cropped from them and resized to the model's input.
CACHE_SIZE = 128
#: Planes taken from one volume or video, at most.
PLANES_PER_IMAGE = 8


def pretraining_inputs(data: str | os.PathLike | None = None, *, catalog: str | None = None,
                       where: dict[str, str] | None = None) -> list[BatchInput]:
    """The images of ``data`` (a folder of images, a CSV/JSON-lines manifest, one file) or, with
    ``where``, of a catalog query."""
    if where is not None:
        return catalog_inputs(catalog, where)
    if data is None:
        raise MedfmError("pretraining needs data: a folder, a manifest or a catalog query")
    path = Path(os.fsdecode(data))
    if path.is_file() and path.name.lower().endswith((".csv", ".jsonl", ".ndjson")):
        return read_batch_manifest(path)
    if not path.exists():
        raise MedfmError(f"{display_path(path)}: no such file or folder")
    if path.is_dir() and not any(entry.is_file() for entry in path.iterdir()):
        raise MedfmError(f"{display_path(path)}: the folder holds no images")
    return expand_paths([path])


def collect_planes(inputs: Sequence[BatchInput], min_side: int, planes_per_image: int = PLANES_PER_IMAGE,
                   log=lambda _: None) -> tuple[torch.Tensor, dict]:
    """``(N, 3, CACHE_SIZE, CACHE_SIZE)`` uint8 planes of ``inputs`` and how they were sampled.

    Refuses fewer than 2 images, and any plane whose shorter side is under ``min_side`` pixels
    (the model's patch), naming the file.
    """
    if len(inputs) < 2:
        raise MedfmError(f"pretraining needs at least 2 images; the data has {len(inputs)}")
    from medfm.catalog.loading import load_record
    from medfm.io import load

    tensors, counts = [], {"2d images": 0, "volumes": 0, "videos": 0, "planes from volumes": 0, "planes from videos": 0}
    for number, item in enumerate(inputs, start=1):
        name = f"image {item.record_id}" if item.record is not None else display_path(item.path)
        try:
            image = load_record(item.record) if item.record is not None else load(item.path)
            planes = sample_planes(image, planes_per_image)
        except FileError as exc:
            raise MedfmError(f"{display_path(exc.path)}: {exc.reason}") from None
        except MedfmError as exc:
            raise MedfmError(f"{name}: {exc}") from None
        for plane in planes:
            if min(plane.shape[:2]) < min_side:
                raise MedfmError(f"{name}: a plane of {plane.shape[1]}x{plane.shape[0]} pixels is smaller than "
                                 f"the model's patch ({min_side} pixels)")
            tensors.append((prepare_plane(plane, CACHE_SIZE) * 255).round().to(torch.uint8))
        kind = "videos" if image.shape[3] > 1 else "volumes" if image.shape[2] > 1 else "2d images"
        counts[kind] += 1
        if kind != "2d images":
            counts[f"planes from {kind}"] += len(planes)
        if number % 200 == 0:
            log(f"decoded {number} of {len(inputs)} images")
    sampling = {"images": len(inputs), **counts, "planes": len(tensors), "planes_per_image_at_most": planes_per_image,
                "cache_size": CACHE_SIZE,
                "rule": "each image gives up to planes_per_image evenly spaced planes (slices x frames); "
                        "batches draw planes uniformly from the pool"}
    return torch.stack(tensors), sampling


def augmented_views(pixels: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Random views of ``(B, 3, H, W)`` pixels in [0, 1] → ``(B, 3, size, size)``: a crop of ``scale``
    of the area (aspect 3/4–4/3) resized to ``size``, a horizontal flip half the time, contrast
    ×[0.8, 1.2] and brightness ±0.1, clipped to [0, 1]."""
    batch, _, height, width = pixels.shape
    u = torch.rand(batch, 6, generator=generator)
    views = []
    for row in range(batch):
        area = height * width * (scale[0] + (scale[1] - scale[0]) * u[row, 0].item())
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[row, 1].item())
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        top, left = int(u[row, 2].item() * (height - h + 1)), int(u[row, 3].item() * (width - w + 1))
        crop = pixels[row:row + 1, :, top:top + h, left:left + w]
        views.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    out = torch.cat(views)
    flip = u[:, 4] < 0.5
    out[flip] = out[flip].flip(-1)
    contrast = 0.8 + 0.4 * torch.rand(batch, 1, 1, 1, generator=generator)
    brightness = 0.2 * torch.rand(batch, 1, 1, 1, generator=generator) - 0.1
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + brightness).clamp(0.0, 1.0)
