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
