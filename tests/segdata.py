"""Generated labelled images for the automatic segmentation tests: bright discs (and squares) on noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage


def write_discs(folder: Path, count: int = 16, size: int = 32, seed: int = 0, squares: bool = False) -> Path:
    """``count`` grey PNGs with a disc (label 1; 255 in the mask unless ``squares``) and, with ``squares``, a
    square (label 2); masks beside them and ``manifest.csv`` (``image,mask,subject``) listing both. Returns the manifest."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rows = ["image,mask,subject"]
    yy, xx = np.mgrid[:size, :size]
    for n in range(count):
        radius = rng.uniform(size * 0.15, size * 0.3)
        cy, cx = rng.uniform(radius + 1, size - radius - 1, 2)
        mask = np.zeros((size, size), np.uint8)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 1
        if squares:
            side = int(size * 0.2)
            y0, x0 = rng.integers(0, size - side, 2)
            mask[y0:y0 + side, x0:x0 + side][mask[y0:y0 + side, x0:x0 + side] == 0] = 2
        pixels = rng.normal(60, 20, (size, size)) + 90 * (mask == 1) + 150 * (mask == 2)
        PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / "images" / f"case{n:02d}.png")
        PILImage.fromarray(mask if squares else mask * 255).save(folder / "masks" / f"case{n:02d}.png")
        rows.append(f"images/case{n:02d}.png,masks/case{n:02d}.png,s{n // 2}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def sphere_volume(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(CT-like volume in HU, its 0/1 mask)``: a bright sphere on noisy soft tissue, ``size`` voxels a side."""
    radius = rng.uniform(size * 0.18, size * 0.3)
    centre = rng.uniform(radius + 1, size - radius - 1, 3)
    grid = np.stack(np.mgrid[:size, :size, :size], axis=-1)
    mask = (((grid - centre) ** 2).sum(axis=-1) <= radius ** 2).astype(np.uint8)
    volume = rng.normal(40, 25, (size,) * 3) + 160 * mask
    return volume.astype(np.int16), mask


def write_spheres(folder: Path, count: int = 8, size: int = 32, spacing: tuple[float, float, float] = (1.5, 1.5, 1.5),
                  seed: int = 0, raters: int = 1) -> Path:
    """``count`` NIfTI volumes (a sphere each, CT-like values) with their masks, affine = ``spacing`` and an origin,
    and ``manifest.csv`` (``image,mask,subject``; with ``raters`` > 1, columns ``mask_r2``... holding the
    other raters' masks: rater 2 misses a slab of the sphere, rater 3 and later agree with rater 1). Returns it."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    for name in ("images", "masks"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-20.0, 10.0, 5.0)
    extra = [f"mask_r{r}" for r in range(2, raters + 1)]
    rows = [",".join(["image", "mask", *extra, "subject"])]
    for n in range(count):
        volume, mask = sphere_volume(rng, size)
        nib.save(nib.Nifti1Image(volume, affine), folder / "images" / f"case{n:02d}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), folder / "masks" / f"case{n:02d}.nii.gz")
        cells = [f"images/case{n:02d}.nii.gz", f"masks/case{n:02d}.nii.gz"]
        for r in range(2, raters + 1):
            other = mask.copy()
            if r == 2:
                other[:, :, : size // 2] = 0
            nib.save(nib.Nifti1Image(other, affine), folder / "masks" / f"case{n:02d}_r{r}.nii.gz")
            cells.append(f"masks/case{n:02d}_r{r}.nii.gz")
        rows.append(",".join([*cells, f"s{n}"]))
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def write_videos(folder: Path, count: int = 4, size: int = 32, frames: int = 5, seed: int = 0) -> Path:
    """``count`` grey videos as 4D NIfTI ``(I, J, 1, T)``: a disc moving across the frames, with masks the same
    shape, and ``manifest.csv`` (``image,mask``). Returns it."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    for name in ("images", "masks"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = ["image,mask"]
    for n in range(count):
        radius = rng.uniform(size * 0.15, size * 0.25)
        start, step = rng.uniform(radius + 1, size - radius - 1, 2), rng.uniform(-1.5, 1.5, 2)
        mask = np.zeros((size, size, 1, frames), np.uint8)
        for t in range(frames):
            cy, cx = np.clip(start + t * step, radius + 1, size - radius - 1)
            mask[:, :, 0, t] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        video = (rng.normal(60, 20, mask.shape) + 100 * mask).astype(np.float32)
        nib.save(nib.Nifti1Image(video, np.eye(4)), folder / "images" / f"video{n}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), folder / "masks" / f"video{n}.nii.gz")
        rows.append(f"images/video{n}.nii.gz,masks/video{n}.nii.gz")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest
