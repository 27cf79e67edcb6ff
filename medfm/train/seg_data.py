"""The labelled images ``medfm train seg`` learns from: read, checked and fingerprinted.

DATA is one of three sources, each giving :class:`Case` s (an image, its masks, its group):

- a CSV manifest ``image,mask`` (paths relative to it); further columns whose names start
  with ``mask`` (``mask_rater2``...) or repeated rows of one image give several masks of it;
- a catalog query (:func:`catalog_cases`): the catalogued images with a ``mask`` label
  file (several ``mask*`` label files are several masks);
- a folder of annotation versions saved by the workbench (:func:`annotation_cases`): the
  newest version of each annotation name, its image found in the catalog by id.

Several masks of one image are fused (STAPLE or majority vote,
:func:`medfm.tasks.label_fusion.fuse_masks`) into the one target training sees. Every pair
is checked before training starts (the image is a 2D image, a volume or a video; each mask
exists, has the image's grid and only declared label values); a bad pair stops everything
with one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.annotation_versions import SavedVersion, latest_versions, version_labels
from medfm.io.dicom import DICOM
from medfm.io.formats import image_suffix, load
from medfm.io.image import Image
from medfm.io.manifest import read_rows
from medfm.models.automatic.segmenter import pixel_stack

#: Fraction of groups (subjects, or images) held out for validation; training never sees them.
VAL_FRACTION = 0.2
#: Pixels drawn per image for the intensity statistics.
_SAMPLES_PER_IMAGE = 10_000
#: Manifest columns and catalog label files whose names start with this are masks.
MASK_PREFIX = "mask"
#: How far (mm, and relative) a volume's mask affine may stray from its image's.
_AFFINE_TOLERANCE_MM = 1e-2


@dataclass(frozen=True)
class Case:
    """One labelled image: its path (a file or DICOM series folder), its masks' paths and its group (subject).

    ``record``: the catalog record the image comes from (read from exactly its files);
    ``versions``: the saved annotation versions that are its masks (then ``masks`` are their files).
    """

    image: str
    masks: tuple[str, ...]
    group: str
    record: Any = field(default=None, compare=False)
    versions: tuple[SavedVersion, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Pair:
    """A loaded case: ``pixels`` ``(C, I, J, N)`` and ``mask`` ``(I, J, N)`` of label values (:func:`pixel_stack`'s N)."""

    case: Case
    pixels: np.ndarray
    mask: np.ndarray
    kind: str
    spacing: tuple[float, float, float]
    modality: str
    #: False for pictures whose spacing is a nominal 1 (no physical scale): their distances are in pixels
    spacing_known: bool = True


def parse_labels(text: str | None) -> dict[int, str] | None:
    """``"1=liver,2=tumour"`` → ``{1: "liver", 2: "tumour"}``; None when not given."""
    if not text:
        return None
    labels = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not value.strip().isdigit() or not name.strip() or int(value) == 0:
            raise MedfmError(f"--labels takes VALUE=NAME pairs with values above 0 (e.g. 1=liver,2=tumour); got {part!r}")
        labels[int(value)] = name.strip()
    return labels


def read_cases(manifest: str | os.PathLike, group_column: str | None = None,
               only: Mapping[str, str] | None = None) -> list[Case]:
    """The manifest's rows as cases (the image itself is its group without ``group_column``).

    ``only``: keep the rows whose columns hold these values (``{"split": "dev"}``). The
    ``mask`` column and every ``mask*`` column whose filled cells all name image files
    (``mask_rater2``, not ``mask_area_px``), over every row of an image, give its masks.
    """
    manifest = Path(manifest)
    rows = read_rows(manifest, ("image", "mask", *([group_column] if group_column else []), *(only or {})))
    mask_columns = ["mask", *(c for c in rows[0] if c != "mask" and c.startswith(MASK_PREFIX)
                              and all(image_suffix(row[c]) for row in rows if row[c]))]
    by_image: dict[str, tuple[list[str], str]] = {}
    for line, row in enumerate(rows, start=2):
        if any(row[column] != value for column, value in (only or {}).items()):
            continue
        if not row["image"]:
            raise MedfmError(f"{display_path(manifest)}, line {line}: empty 'image'")
        if not row["mask"]:
            raise MedfmError(f"{display_path(manifest)}, line {line}: {row['image']} has no mask (empty 'mask')")
        image = str((manifest.parent / row["image"]).resolve())
        masks, _ = by_image.setdefault(image, ([], row[group_column] if group_column else image))
        masks.extend(str((manifest.parent / row[c]).resolve()) for c in mask_columns if row[c])
    cases = [Case(image, tuple(masks), group) for image, (masks, group) in by_image.items()]
    if not cases:
        raise MedfmError(f"{display_path(manifest)}: no rows to train on"
                         + (f" with {', '.join(f'{c}={v}' for c, v in only.items())}" if only else ""))
    for case in cases:
        for path in (case.image, *case.masks):
            if not Path(path).exists():
                raise MedfmError(f"{display_path(path)}: listed in {display_path(manifest)} but not found")
    return cases


def catalog_cases(catalog: str | None, where: Mapping[str, str]) -> list[Case]:
    """The catalog's images matching ``where`` that have a mask, grouped by patient (else study, else image)."""
    from medfm.catalog import open_catalog
    from medfm.tasks.batch import CATALOG_FILTERS

    unknown = sorted(set(where) - set(CATALOG_FILTERS))
    if unknown:
        raise MedfmError(f"a catalog query filters on {', '.join(CATALOG_FILTERS)}; got {unknown[0]!r}")
    with open_catalog(catalog, existing=True) as store:
        records = store.query(**where, with_files=True, has_mask=True)
    if not records:
        shown = ", ".join(f"{k}={v}" for k, v in where.items()) or "(no filter)"
        raise MedfmError(f"the catalog has no image with a mask matching {shown}: nothing to train on")
    return [Case(record.source_path, tuple(f.path for f in record.label_files if f.name.startswith(MASK_PREFIX)),
                 record.patient_key or record.study_uid or f"image {record.id}", record=record) for record in records]


def annotation_cases(root: str | os.PathLike, catalog: str | None, final_only: bool = False) -> list[Case]:
    """The newest saved version of every annotation name under ``root`` (the workbench's ``annotations`` folder;
    :func:`~medfm.io.annotation_versions.latest_versions` picks it), per image: several names of one image are
    several masks of it. Images come from ``catalog`` by id."""
    from medfm.catalog import open_catalog

    by_image: dict[int, list[SavedVersion]] = {}
    for saved in latest_versions(root, final_only):
        by_image.setdefault(saved.image_id, []).append(saved)
    cases = []
    with open_catalog(catalog, existing=True) as store:
        for image_id, versions in by_image.items():
            try:
                record = store.get(image_id)
            except MedfmError:
                raise MedfmError(f"{display_path(versions[0].path)}: annotates image {image_id}, which the catalog "
                                 "does not hold; pass the workbench's catalog with --catalog") from None
            cases.append(Case(record.source_path, tuple(str(v.path) for v in versions),
                              record.patient_key or record.study_uid or f"image {image_id}", record, tuple(versions)))
    return cases


def data_digest(cases: list[Case]) -> str:
    """sha256 of what the training data is: each case's image path and group and its masks' bytes."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(json.dumps([case.image, case.group, list(case.masks)]).encode())
        for mask in case.masks:
            digest.update(Path(mask).read_bytes())
    return digest.hexdigest()


def split_cases(cases: list[Case], val_fraction: float = VAL_FRACTION) -> tuple[list[Case], list[Case]]:
    """``(train, validation)``: whole groups held out by a hash of the group, so a subject is never on both sides."""
    groups = sorted({case.group for case in cases})
    if len(groups) < 2:
        raise MedfmError(f"training needs at least 2 labelled images (or subjects) to hold one out for validation; got {len(groups)}")
    ranked = sorted(groups, key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    held = set(ranked[: max(1, round(len(groups) * val_fraction))])
    return [c for c in cases if c.group not in held], [c for c in cases if c.group in held]


def load_pair(case: Case, labels: Mapping[int, str] | None, fusion: str = "staple") -> Pair:
    """The case's pixels and its (fused) mask of label values; MedfmError naming the file for any mismatch."""
    if case.record is not None:
        from medfm.catalog.loading import load_record

        image = load_record(case.record)
    else:
        image = load(case.image)
    pixels, kind = pixel_stack(image, case.image)
    masks = [_mask_values(case, index, image, kind) for index in range(len(case.masks))]
    if len(masks) > 1:
        from medfm.tasks.label_fusion import fuse_masks

        mask = fuse_masks([m.astype(np.int64) for m in masks], fusion)[0]
    else:
        mask = masks[0]
    spacing, known = image.spacing, bool(image.metadata.get("spacing_known", True))
    values = set(np.unique(mask).tolist()) - {0}
    pair = Pair(case, pixels, mask, kind, spacing, image.modality, known)
    if labels is None:
        return pair
    # black-and-white 8-bit masks store their one structure as 255
    if values <= {255} and len(labels) == 1 and 255 not in labels:
        return Pair(case, pixels, np.where(mask > 0, next(iter(labels)), 0), kind, spacing, image.modality, known)
    undeclared = sorted(values - set(labels))
    if undeclared:
        raise MedfmError(f"{display_path(case.masks[0])}: holds label value {undeclared[0]}, not declared in --labels "
                         f"({', '.join(f'{k}={v}' for k, v in sorted(labels.items()))})")
    return pair


def _mask_values(case: Case, index: int, image: Image, kind: str) -> np.ndarray:
    """Mask ``index`` of ``case`` as ``(I, J, N)`` label values on ``image``'s grid; MedfmError naming it otherwise."""
    path = case.masks[index]
    if case.versions:
        from medfm.catalog.loading import record_series

        series = record_series(case.record) if case.record.format == DICOM.name else None
        stack = version_labels(case.versions[index], image, series)  # (I, J, K, T)
        return stack[:, :, 0, :] if kind == "video" else stack[..., 0]
    mask_image = load(path)
    channels = np.asarray(mask_image.array)
    if channels.shape[4] > 1 and not (channels == channels[..., :1]).all():
        raise MedfmError(f"{display_path(path)}: a colour mask; masks hold one label value per pixel")
    values = channels[..., 0]  # (I, J, K, T)
    expected = (*image.spatial_shape[:2], image.num_frames) if kind == "video" else image.spatial_shape
    if kind == "video" and values.shape[2] == 1:
        values = values[:, :, 0, :]  # a video mask with frames
    elif values.shape[3] == 1:
        values = values[..., 0]  # a volume or 2D mask (or a video's mask with its frames as slices)
    if values.shape != expected:
        raise MedfmError(f"{display_path(path)}: mask shape {values.shape[:2] if kind == '2d' else values.shape} "
                         f"differs from its image's {expected[:2] if kind == '2d' else expected}")
    if kind == "volume" and not np.allclose(mask_image.affine, image.affine, rtol=1e-3, atol=_AFFINE_TOLERANCE_MM):
        raise MedfmError(f"{display_path(path)}: mask geometry (spacing {_rounded(mask_image.spacing)}, origin "
                         f"{_rounded(mask_image.origin)} mm) differs from its image's (spacing {_rounded(image.spacing)}, "
                         f"origin {_rounded(image.origin)} mm)")
    return values


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 3) for v in values]


def kind_of(kinds: set[str]) -> str:
    """The fingerprint's ``kind`` of a dataset whose inputs are of these kinds: ``2d``, ``volume``, ``video`` or
    ``2d+video`` (both are planes); volumes mixed with anything else are refused."""
    if "volume" in kinds and len(kinds) > 1:
        raise MedfmError(f"the images mix {' and '.join(sorted(kinds))} inputs; train one model on volumes, another on "
                         "2D images and videos")
    return "+".join(sorted(kinds))


def iterate_pairs(cases: list[Case], labels: Mapping[int, str] | None, fusion: str = "staple") -> Iterator[Pair]:
    for case in cases:
        yield load_pair(case, labels, fusion)


def fingerprint(cases: list[Case], labels: Mapping[int, str] | None,
                fusion: str = "staple") -> tuple[dict[str, Any], dict[int, str]]:
    """The dataset's fingerprint (kind, shapes, spacings, channels, modality, intensities, class frequencies,
    annotators per image) and its labels.

    Shapes and spacings are per plane (i, j) for 2D images and videos, per volume (i, j, k)
    for volumes. Without declared ``labels``, a mask set of 0 and 255 (or 0 and 1) is one
    structure, ``{1: "foreground"}``; otherwise every value found becomes a label.
    """
    rng = np.random.default_rng(0)
    shapes, spacings, channels, modalities, kinds, samples, foreground, counts = [], [], set(), set(), set(), [], [], {}
    spacing_known = True
    total = 0
    for pair in iterate_pairs(cases, labels, fusion):
        kinds.add(pair.kind)
        planar = pair.kind != "volume"
        shapes.append(pair.pixels.shape[1:3] if planar else pair.pixels.shape[1:])
        spacings.append(pair.spacing[:2] if planar else pair.spacing)
        channels.add(pair.pixels.shape[0])
        modalities.add(pair.modality)
        spacing_known = spacing_known and pair.spacing_known
        flat = pair.pixels.reshape(pair.pixels.shape[0], -1)
        samples.append(flat[:, rng.integers(0, flat.shape[1], _SAMPLES_PER_IMAGE)].astype(np.float32))
        inside = flat[:, pair.mask.reshape(-1) > 0]
        if inside.shape[1]:
            foreground.append(inside[:, rng.integers(0, inside.shape[1], min(_SAMPLES_PER_IMAGE, inside.shape[1]))].astype(np.float32))
        values, number = np.unique(pair.mask, return_counts=True)
        for value, n in zip(values.tolist(), number.tolist()):
            counts[value] = counts.get(value, 0) + n
        total += pair.mask.size
    if len(channels) > 1:
        raise MedfmError(f"the images have different channel counts {sorted(channels)}; convert them to one (grey or RGB)")
    kind = kind_of(kinds)
    if labels is None:
        found = sorted(set(counts) - {0})
        if not found:
            raise MedfmError("every mask is empty: nothing to learn")
        labels = {1: "foreground"} if found in ([1], [255]) else {v: f"label {v}" for v in found}
        if found == [255]:
            counts = {(1 if k == 255 else k): v for k, v in counts.items()}
    everything = np.concatenate(samples, axis=1)
    inside = np.concatenate(foreground, axis=1) if foreground else everything
    shape_array, spacing_array = np.array(shapes), np.array(spacings)
    record = {
        "cases": len(cases),
        "kind": kind,
        "channels": channels.pop(),
        "modality": sorted(modalities),
        "masks_per_image": {"max": max(len(c.masks) for c in cases), "min": min(len(c.masks) for c in cases)},
        "shape": {"median": np.median(shape_array, axis=0).tolist(), "min": shape_array.min(axis=0).tolist(),
                  "max": shape_array.max(axis=0).tolist()},
        "spacing_mm": {"median": np.median(spacing_array, axis=0).tolist(), "min": spacing_array.min(axis=0).tolist(),
                       "max": spacing_array.max(axis=0).tolist()},
        "spacing_known": spacing_known,
        "intensity": {"mean": float(everything.mean()), "std": float(everything.std()),
                      "foreground_percentile_0_5": float(np.percentile(inside, 0.5)),
                      "foreground_percentile_99_5": float(np.percentile(inside, 99.5)),
                      "foreground_mean": float(inside.mean()), "foreground_std": float(inside.std())},
        "class_frequency": {str(k): counts.get(k, 0) / total for k in [0, *sorted(labels)]},
    }
    return record, labels
