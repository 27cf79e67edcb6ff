"""Automatic segmentation: a trained :class:`~medfm.models.automatic.AutoSegmenter` over many images, no prompts.

:func:`auto_segment` gives one label map on the image's grid (the plan's label values, 0
background) stamped with its provenance: the model's name and weights sha256, the
input's pixel id, per-label mean confidence, and the plan, flips and component settings.
:func:`auto_segment_files` writes one output per input, named after it, as every batch does;
:func:`uncertainty` says how unsure the model is of an image (for choosing what to label next): the mean
entropy of its prediction, or how much Monte Carlo dropout passes disagree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medfm.errors import MedfmError, display_path
from medfm.io.formats import output_folder
from medfm.io.image import Image
from medfm.io.label_maps import save_segmentation
from medfm.models.automatic import AutoSegmenter
from medfm.models.automatic.segmenter import pixel_stack
from medfm.scale import LocalRunner, Runner, map_outcomes
from medfm.tasks.batch import BatchInput, BatchReport, output_paths, run_batch
from medfm.tasks.segment import measure, segmentation_provenance
from medfm.tasks.segment_to_file import load_input

#: What :func:`uncertainty` can measure.
MEASURES = ("entropy", "mc-dropout")
#: Monte Carlo dropout passes per image for ``measure="mc-dropout"``.
MC_PASSES = 8


def auto_segment(image: Image, segmenter: AutoSegmenter, path: str | os.PathLike = "image", *, flips: bool = False,
                 largest_component: bool = False) -> Image:
    """``image``'s label map; ``flips``: average over mirror images; ``largest_component``: keep each label's largest
    piece (per plane for 2D images and videos, in 3D for volumes)."""
    pixels, kind = pixel_stack(image, path)
    probabilities = segmenter.probabilities(pixels, image.spacing, flips=flips)
    labels = segmenter.label_map(probabilities)  # (I, J, N)
    if largest_component:
        labels = (keep_largest_components(labels) if kind == "volume" else
                  np.stack([keep_largest_components(labels[..., n]) for n in range(labels.shape[-1])], axis=-1))
    structures = []
    for channel, value in enumerate(segmenter.plan.label_values, start=1):
        inside = labels == value
        score = float(probabilities[channel][inside].mean()) if inside.any() else 0.0
        structures.append({"label": value, "label_name": segmenter.plan.labels[value],
                           "planes": [{"slice_index": 0, "frame_index": 0, "score": score}]})
    array = labels[:, :, None, :, None] if kind == "video" else labels[:, :, :, None, None]
    result = image.with_array(array)
    result.provenance = segmentation_provenance(
        image, segmenter.info, [], structures,
        {"mode": "automatic", "plan": segmenter.plan.to_dict(), "flips": flips, "largest_component": largest_component})
    return result


def uncertainty(image: Image, segmenter: AutoSegmenter, path: str | os.PathLike = "image", *,
                measure: str = "entropy", passes: int = MC_PASSES, seed: int = 0) -> float:
    """How unsure ``segmenter`` is of ``image``, from 0 (certain everywhere) to 1. Active learning asks for
    labels on the images where it is highest.

    ``measure``: ``"entropy"``, the mean over the image's pixels of the entropy of their class probabilities,
    over that of a uniform guess (1: no idea anywhere); ``"mc-dropout"``, how much ``passes`` Monte Carlo
    dropout passes (:func:`~medfm.models.automatic.segmenter.dropout_at_inference`, seeded by ``seed``)
    disagree: the mean over pixels of the mutual information between the class and the dropout draw (BALD:
    the entropy of the mean probabilities less the mean entropy of each pass), over the entropy of a uniform
    guess. 0 when every pass says the same, however unsure each is.
    """
    import torch

    from medfm.models.automatic.segmenter import dropout_at_inference

    if measure not in MEASURES:
        raise MedfmError(f"uncertainty measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    pixels, _ = pixel_stack(image, path)
    if measure == "entropy":
        probabilities = segmenter.probabilities(pixels, image.spacing)
        return float(_entropy(probabilities).mean() / np.log(probabilities.shape[0]))
    if passes < 2:
        raise MedfmError(f"MC-dropout needs at least 2 passes; got {passes}")
    mean_probabilities, mean_entropy = 0.0, 0.0
    with torch.random.fork_rng(devices=[]), dropout_at_inference(segmenter.network):
        torch.manual_seed(seed)
        for _ in range(passes):
            probabilities = segmenter.probabilities(pixels, image.spacing)
            mean_probabilities = mean_probabilities + probabilities / passes
            mean_entropy = mean_entropy + _entropy(probabilities) / passes
    mutual_information = np.maximum(_entropy(mean_probabilities) - mean_entropy, 0.0)  # >= 0 but for rounding
    return float(mutual_information.mean() / np.log(probabilities.shape[0]))


def _entropy(probabilities: np.ndarray) -> np.ndarray:
    """Per pixel, the entropy (nats) of ``(classes, ...)`` probabilities."""
    clipped = np.clip(probabilities, 1e-12, 1.0)
    return -(clipped * np.log(clipped)).sum(axis=0)


def keep_largest_components(labels: np.ndarray) -> np.ndarray:
    """Each label value's largest connected piece (face connectivity); the rest becomes background."""
    kept = np.zeros_like(labels)
    for value in np.unique(labels):
        if value == 0:
            continue
        pieces, count = ndimage.label(labels == value)
        if count:
            sizes = np.bincount(pieces.ravel())[1:]
            kept[pieces == 1 + int(np.argmax(sizes))] = value
    return kept


def auto_segment_files(inputs: Sequence[BatchInput], out_dir: str | os.PathLike, segmenter: AutoSegmenter, *,
                       suffix: str | None = None, flips: bool = False, largest_component: bool = False,
                       progress: bool = False, runner: Runner | None = None) -> BatchReport:
    """:func:`auto_segment` for each input into ``out_dir`` as a label map named after it
    (:func:`~medfm.tasks.batch.output_paths`: ``suffix``, else PNG for 2D pictures and NIfTI
    otherwise; ``.dcm`` writes a DICOM SEG referencing a DICOM series input; clashes are refused
    before anything is written); an input that fails is reported in the :class:`BatchReport`
    and the others go on. ``runner`` (:func:`medfm.scale.open_runner` holding ``segmenter``'s
    model on each worker) reads and segments the inputs on its workers; this process writes the
    label maps, in input order."""
    targets = dict(zip(inputs, output_paths(inputs, out_dir, suffix)))
    with output_folder(out_dir):
        segmented = map_outcomes(runner or LocalRunner(segmenter), segment_input,
                                 [(item, flips, largest_component) for item in inputs])

        def one(item: BatchInput) -> dict[str, Any]:
            outcome = next(segmented)  # run_batch takes the inputs in order, once each
            if isinstance(outcome, MedfmError):
                raise outcome
            labels, series = outcome
            written = save_segmentation(labels, targets[item], series)
            return {"input": display_path(item.path), "output": display_path(written), "structures": measure(labels)}

        return run_batch(inputs, one, progress=progress, description="Segmenting")


def segment_input(segmenter: AutoSegmenter, job: tuple[BatchInput, bool, bool]) -> tuple[Image, Any]:
    """``job = (input, flips, largest_component)``: the input's label map and its DICOM series, if it is one
    (a runner's unit of work in :func:`auto_segment_files`)."""
    item, flips, largest_component = job
    image, series = load_input(item.path, item.record)
    return auto_segment(image, segmenter, item.path, flips=flips, largest_component=largest_component), series
