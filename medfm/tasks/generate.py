"""Generation, translation and editing with a conditional generator, written as marked synthetic files.

Every output carries a ``generation`` :class:`~medfm.provenance.Provenance` (generator, weights
sha256, condition, seed, steps, guidance; ``synthetic=True``) and the marks other tools see:
PNG ``Description`` text, NIfTI ``descrip``, DICOM Secondary Capture with Image Type
``DERIVED\\SECONDARY`` and a Derivation Description. Every request is checked before anything
is computed or written; each file is written to a temporary name and renamed.

An image–mask pair generator's samples go to ``OUTDIR/images/`` and their label maps, under the same
names, to ``OUTDIR/masks/`` (PNG, or NIfTI beside NIfTI images), listed in ``OUTDIR/manifest.csv``
(``image,mask,condition,seed``), which ``medfm train seg`` reads as it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.io.formats import check_output_folder, load, save
from medfm.io.label_maps import read_mask
from medfm.models.generators import Generator
from medfm.models.generators.pixels import plane_pixels, to_image
from medfm.provenance import Provenance, pixels_id

#: Suffixes generated images can be written as (each carries the synthetic marks).
OUTPUT_SUFFIXES = (".png", ".nii.gz", ".nii", ".dcm")
#: Images sampled together (memory stays small at 128²).
BATCH = 16
#: Where a pair generator's images and masks go under OUTDIR, and the manifest that lists them.
IMAGES_FOLDER, MASKS_FOLDER, PAIRS_MANIFEST = "images", "masks", "manifest.csv"


def open_generator(name_or_dir: str | os.PathLike | Generator) -> Generator:
    """A generator from its name or GEN_DIR (an open one passes through)."""
    if isinstance(name_or_dir, Generator):
        return name_or_dir
    from medfm.models.registry import create_generator

    return create_generator(name_or_dir)


def _suffix(path: Path) -> str:
    suffix = next((s for s in OUTPUT_SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None:
        raise MedfmError(f"{display_path(path)}: synthetic images are written as {', '.join(OUTPUT_SUFFIXES)} "
                         "(formats that carry the synthetic mark)")
    return suffix


def write_synthetic(pixels: np.ndarray, provenance: Provenance, path: str | os.PathLike) -> Path:
    """``(C, S, S)`` pixels in [0, 1] as an 8-bit image at ``path`` (its suffix names the format), marked synthetic."""
    path = Path(path)
    image = to_image(pixels)
    image.provenance = provenance
    if _suffix(path) == ".dcm":
        from medfm.io.dicom.secondary import write_synthetic_dicom

        return write_synthetic_dicom(image, path)
    return save(image, path)


def samples_folder(out_dir: str | os.PathLike, generator: Generator) -> Path:
    """Where :func:`generate` writes ``generator``'s images under ``out_dir``."""
    return Path(out_dir) / IMAGES_FOLDER if generator.mask_labels else Path(out_dir)


def write_synthetic_mask(labels: np.ndarray, provenance: Provenance, path: Path) -> Path:
    """An ``(S, S)`` label map (rows, columns) as a label file with the generation's provenance."""
    from medfm.io.image import Image
    from medfm.io.label_maps import save_segmentation

    array = labels.T[:, :, None, None, None].astype(np.uint8 if labels.max() < 256 else np.uint16)
    image = Image(np.ascontiguousarray(array), np.eye(4))
    image.metadata["spacing_known"] = False
    image.provenance = provenance
    return save_segmentation(image, path)


def _write_pairs_manifest(folder: Path, rows: list[tuple[Path, Path, str | None, int]]) -> None:
    """``rows`` of (image, mask, condition, seed) as OUTDIR's manifest, paths relative to it."""
    import csv

    from medfm.io.formats import atomic_path

    with atomic_path(folder / PAIRS_MANIFEST) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "condition", "seed"])
        for image, mask, condition, seed in rows:
            writer.writerow([image.relative_to(folder).as_posix(), mask.relative_to(folder).as_posix(), condition or "", seed])


def _record(generator: Generator, inputs: tuple[str, ...] = (), **parameters: Any) -> Provenance:
    return Provenance(kind="generation", model=generator.name, weights_sha256=generator.weights_sha256, inputs=inputs,
                      parameters={"method": generator.method, **{k: v for k, v in parameters.items() if v is not None}},
                      synthetic=True)


def _settings(generator: Generator, steps: int | None, guidance: float | None) -> tuple[int, float]:
    defaults = generator.config.get("sampling", {})
    steps = int(defaults.get("steps", 30)) if steps is None else steps
    guidance = float(defaults.get("guidance", 1.0)) if guidance is None else guidance
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MedfmError(f"--steps must be a positive whole number; got {steps!r}")
    if not guidance >= 0:
        raise MedfmError(f"--guidance must be 0 or more; got {guidance}")
    return steps, guidance


def _slug(text: str | None) -> str:
    return "uncond" if text is None else (re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "cond")


def generate(generator: str | os.PathLike | Generator, out_dir: str | os.PathLike, n: int, *,
             condition: str | None = None, class_: str | int | None = None, guidance: float | None = None,
             steps: int | None = None, seed: int = 0, suffix: str = ".png",
             progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """``n`` images into ``out_dir`` under one condition (a text, or a class by name or index), or spread
    evenly over the generator's classes when none is given; image i is sampled from seed ``seed + i``.
    A pair generator's images and masks go where the module docstring says.
    Returns the files written (and masks) with their conditions and seeds, and the settings."""
    model = open_generator(generator)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise MedfmError(f"-n must be a positive number of images; got {n!r}")
    steps, guidance = _settings(model, steps, guidance)
    label = model.resolve(condition, class_)
    folder = check_output_folder(out_dir)
    if suffix not in OUTPUT_SUFFIXES:
        raise MedfmError(f"--suffix {suffix!r}: synthetic images are written as {', '.join(OUTPUT_SUFFIXES)} "
                         "(formats that carry the synthetic mark)")
    labels = [label] * n if label is not None or not model.classes else [model.classes[i % len(model.classes)] for i in range(n)]
    from medfm.models.generators.pixels import split_mask
    from medfm.models.generators.sampling import sample

    images_folder, masks_folder = samples_folder(folder, model), folder / MASKS_FOLDER
    if model.mask_labels:
        images_folder.mkdir(exist_ok=True)
        masks_folder.mkdir(exist_ok=True)
    files, pairs = [], []
    for start in range(0, n, BATCH):
        chosen = labels[start:start + BATCH]
        seeds = [seed + i for i in range(start, start + len(chosen))]
        pixels = sample(model, chosen, steps, guidance, seeds).numpy()
        for offset, (plane, text, own_seed) in enumerate(zip(pixels, chosen, seeds)):
            record = _record(model, condition=text if model.condition == "text" else None,
                             **{"class": text if model.condition == "class" else None},
                             seed=own_seed, steps=steps, guidance=guidance)
            stem = f"{model.name}_{start + offset:04d}_{_slug(text)}"
            path = images_folder / f"{stem}{suffix}"
            if model.mask_labels:
                plane, mask = split_mask(plane, model.mask_labels)
                mask_path = masks_folder / f"{stem}{suffix if suffix in ('.nii.gz', '.nii') else '.png'}"
                write_synthetic_mask(mask, record, mask_path)
                pairs.append((path, mask_path, text, own_seed))
            write_synthetic(plane, record, path)
            files.append({"file": display_path(path), "condition": text, "seed": own_seed,
                          **({"mask": display_path(mask_path)} if model.mask_labels else {})})
        if progress is not None:
            progress(min(start + BATCH, n), n)
    if model.mask_labels:
        _write_pairs_manifest(folder, pairs)
    return {"generator": model.name, "weights_sha256": model.weights_sha256, "steps": steps, "guidance": guidance,
            "images": files}


def read_source(generator: Generator, path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as ``(C, S, S)`` pixels in [0, 1]; MedfmError unless it has the generator's size and channels."""
    pixels = plane_pixels(load(path), path)
    expected = (generator.channels, generator.size, generator.size)
    if pixels.shape != expected:
        raise MedfmError(f"{display_path(path)}: is {pixels.shape[1]}x{pixels.shape[2]} with {pixels.shape[0]} channel(s); "
                         f"generator {generator.name!r} takes {generator.size}x{generator.size} with {generator.channels}")
    return pixels


def translate_file(generator: str | os.PathLike | Generator, image: str | os.PathLike, out: str | os.PathLike, *,
                   source: str, target: str, strength: float = 0.5, steps: int | None = None,
                   guidance: float | None = None) -> dict[str, Any]:
    """MedShift translation of ``image`` from condition ``source`` to ``target`` at strength τ, written to ``out``;
    returns the settings and the SSIM of the result to the source (structure kept)."""
    from medfm.models.generators.sampling import require_flow, translate

    model = open_generator(generator)
    require_flow(model, "translation")
    steps, guidance = _settings(model, steps, guidance)
    if not 0.0 <= strength <= 1.0:
        raise MedfmError(f"--strength (τ) must lie in [0, 1]; got {strength}")
    source_label, target_label = model.resolve(source), model.resolve(target)
    if source_label is None or target_label is None:
        raise MedfmError("translation needs both --from and --to")
    _suffix(Path(out))
    check_output_folder(Path(out).parent)
    pixels = read_source(model, image)
    result = translate(model, torch.from_numpy(pixels)[None], source_label, target_label, strength, steps, guidance)[0]
    record = _record(model, (pixels_id(pixels),), **{"from": source_label, "to": target_label}, strength=strength,
                     steps=steps, guidance=guidance)
    write_synthetic(result.numpy(), record, out)
    return {"output": display_path(out), "generator": model.name, "from": source_label, "to": target_label,
            "strength": strength, "steps": steps, "guidance": guidance,
            "ssim_to_source": structural_similarity(result.numpy(), pixels)}


def structural_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """MONAI's SSIM (7-pixel window, data range 1) of two ``(C, S, S)`` images in [0, 1]."""
    from monai.metrics import SSIMMetric

    metric = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=7)
    return float(metric(torch.as_tensor(a)[None].float(), torch.as_tensor(b)[None].float()).mean())


def edit_file(generator: str | os.PathLike | Generator, image: str | os.PathLike, mask: str | os.PathLike,
              out: str | os.PathLike, *, condition: str | None = None, class_: str | int | None = None,
              steps: int | None = None, guidance: float | None = None, seed: int = 0,
              refuse_flagged: bool = False) -> dict[str, Any]:
    """Regenerate the region of ``image`` where ``mask`` is non-zero under a condition (flow inpainting) and
    write it to ``out``, with the quality gate's verdict (:mod:`medfm.models.generators.quality`):
    a flagged edit is written and reported, or refused (nothing written) with ``refuse_flagged``."""
    from medfm.models.generators.quality import assess
    from medfm.models.generators.sampling import inpaint, require_flow

    model = open_generator(generator)
    require_flow(model, "editing")
    steps, guidance = _settings(model, steps, guidance)
    label = model.resolve(condition, class_)
    _suffix(Path(out))
    check_output_folder(Path(out).parent)
    pixels = read_source(model, image)
    region = read_mask(mask)
    if region.shape != (model.size, model.size, 1):
        raise MedfmError(f"{display_path(mask)}: the mask is {region.shape[1]}x{region.shape[0]}; it must match the "
                         f"image, {model.size}x{model.size}")
    region = region[:, :, 0].T  # (rows, columns)
    if not region.any():
        raise MedfmError(f"{display_path(mask)}: the mask is empty; nothing to edit")
    if "quality" not in model.config:
        raise MedfmError(f"generator {model.name!r} has no quality reference (config 'quality'); it cannot gate edits")
    edited = inpaint(model, torch.from_numpy(pixels)[None], torch.from_numpy(region.astype(np.float32))[None, None],
                     [label], steps, guidance, seed)[0].numpy()
    gate = assess(model.config["quality"], edited, region)
    if gate["flagged"] and refuse_flagged:
        raise MedfmError(f"{display_path(image)}: the edit is out of distribution (image OOD score "
                         f"{_shown(gate['image'])}, region {_shown(gate['region'])}); nothing written")
    record = _record(model, (pixels_id(pixels), pixels_id(region)), condition=label, seed=seed, steps=steps,
                     guidance=guidance, quality_gate=gate)
    write_synthetic(edited, record, out)
    return {"output": display_path(out), "generator": model.name, "condition": label, "seed": seed, "steps": steps,
            "guidance": guidance, "quality_gate": gate}


def _shown(part: dict[str, Any]) -> str:
    score = "undefined" if part["ood_score"] is None else f"{part['ood_score']:.1f}"
    return f"{score} > threshold {part['threshold']:.1f}" if part["above_threshold"] else score
