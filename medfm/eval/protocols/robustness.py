"""How medfm's segmenters and classifiers hold up under the corruption suite.

Thin over :func:`medfm.eval.protocols.degradation.degradation_curves`: this module turns a manifest
into cases and a model into a ``predict`` callable. Segmenters follow the promptable
segmentation convention of a box prompt simulated from the reference (its bounding box,
taken before corruption, so every severity gets the same prompt) and are scored with
Dice; classifiers (a fitted probe with its encoder) are scored with accuracy.

The corruptions act on one grey plane, so colour images are converted to luminance
(ITU-R BT.601 weights) before corruption; the model then sees the grey image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.eval.corruptions import CORRUPTIONS, SEVERITIES, get_corruption
from medfm.eval.protocols.degradation import RobustnessResult, degradation_curves
from medfm.eval.seg_metrics import dice
from medfm.io import Image, load
from medfm.io.label_maps import read_mask
from medfm.io.manifest import read_manifest
from medfm.models.encoders.base import Encoder
from medfm.models.encoders.planes import embed_image
from medfm.models.probe import Probe
from medfm.models.segmenters import Prompt, Segmenter, mask_box
from medfm.scale import Runner, open_runner

_LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: Image metadata key that carries a case's box prompt through the corruptions.
BOX_KEY = "robustness_box_prompt"


def grey_plane(image: Image, path: str) -> Image:
    """One 2D grey plane of ``image`` (colour → luminance), on the same grid."""
    if not image.is_2d or image.num_frames > 1:
        raise MedfmError(f"{display_path(path)}: robustness takes 2D images; this one has shape {image.shape} (I, J, K, T, C)")
    if image.num_channels == 1:
        return image
    if image.num_channels not in (3, 4):
        raise MedfmError(f"{display_path(path)}: {image.num_channels} channels; expected grey or RGB")
    return image.with_array(np.asarray(image.array[..., :3], np.float32) @ _LUMINANCE)


def segmenter_robustness(
    manifest: str | os.PathLike,
    segmenter: Segmenter,
    *,
    image_column: str = "image",
    mask_column: str = "mask",
    limit: int | None = None,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: bool = False,
    runner: Runner | None = None,
) -> RobustnessResult:
    """Box-prompted Dice of ``segmenter`` per corruption and severity over a manifest's
    ``image``/``mask`` rows (paths relative to the manifest's folder); ``runner``: workers that each
    hold a :class:`BoxPrompted` ``segmenter`` (see :func:`degradation_curves`)."""
    for name in corruptions:
        get_corruption(name)  # refuse a bad name before loading anything
    images, masks = read_manifest(manifest, mask_column, image_column)
    folder = Path(manifest).parent
    cases = []
    for image_path, mask_name in list(zip(images, masks))[:limit]:
        mask_path = str((folder / mask_name).resolve())
        image = grey_plane(load(image_path), image_path)
        reference = read_mask(mask_path, image.spatial_shape[:2])[:, :, 0]  # (I, J)
        if not reference.any():
            raise MedfmError(f"{display_path(mask_path)}: the mask is empty, so no box prompt can be simulated")
        image.metadata[BOX_KEY] = mask_box(reference.T)  # boxes are on (rows, columns) = (J, I) planes
        cases.append((image, reference))

    return degradation_curves(BoxPrompted(segmenter), cases, dice, corruptions, severities, seed, progress, runner)


class BoxPrompted:
    """``segmenter`` as ``predict(image) -> (I, J) mask``, prompted with the box the case carries."""

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter
        self.info = segmenter.info  # the weights that a runner's workers are checked against

    def __call__(self, image: Image) -> np.ndarray:
        self.segmenter.set_image(image.frame())
        return self.segmenter.predict(Prompt(boxes=[image.metadata[BOX_KEY]])).mask.T  # mask is (rows, columns)


class ProbeOnEncoder:
    """A fitted ``probe`` on ``encoder``'s embeddings as ``predict(image) -> class``."""

    def __init__(self, probe: Probe, encoder: Encoder) -> None:
        probe.check_model(encoder.info)
        self.probe, self.encoder, self.info = probe, encoder, encoder.info

    def __call__(self, image: Image) -> str:
        return self.probe.predict(embed_image(image, self.encoder)[None])[1][0]


def accuracy(predicted: str, label: str) -> float:
    """1 when the predicted class is the labelled one, else 0."""
    return float(predicted == label)


def classifier_robustness(
    manifest: str | os.PathLike,
    probe: Probe,
    encoder: Encoder,
    *,
    label_column: str,
    image_column: str = "image",
    limit: int | None = None,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: bool = False,
    runner: Runner | None = None,
) -> RobustnessResult:
    """Accuracy of a fitted ``probe`` (on ``encoder``'s embeddings) per corruption and severity; ``runner``:
    workers that each hold a :class:`ProbeOnEncoder` (see :func:`degradation_curves`)."""
    predict = ProbeOnEncoder(probe, encoder)
    for name in corruptions:
        get_corruption(name)
    images, labels = read_manifest(manifest, label_column, image_column)
    cases = [(grey_plane(load(path), path), label) for path, label in list(zip(images, labels))[:limit]]

    return degradation_curves(predict, cases, accuracy, corruptions, severities, seed, progress, runner)


def evaluate_robustness(
    manifest: str | os.PathLike,
    *,
    segmenter: str | None = None,
    probe: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: bool = False,
    ray: str | None = None,
    workers: int = 2,
) -> RobustnessResult:
    """Degradation curves of a registered ``segmenter`` (by name) or of a ``probe`` file
    (with the encoder it was fitted on); ``progress`` shows a bar on stderr. ``ray`` (an address,
    or ``local``) scores the cases on that many Ray ``workers``, each loading the model itself
    (checked by sha256 against this machine's); the result is that of a plain run."""
    from medfm.models import create_encoder
    from medfm.models.probe import load_probe
    from medfm.models.registry import create_segmenter

    if (segmenter is None) == (probe is None):
        raise MedfmError("give a segmenter (--segmenter NAME) or a classifier (--probe FILE), not both")
    options = {"limit": limit, "corruptions": corruptions, "severities": severities, "seed": seed, "progress": progress}
    checkpoint = os.path.abspath(checkpoint) if checkpoint is not None else None  # the same file on every worker
    if segmenter is not None:
        model = create_segmenter(segmenter, checkpoint)
        with _runner(ray, workers, BoxPrompted(model), partial(_box_prompted, segmenter, checkpoint)) as runner:
            return segmenter_robustness(manifest, model, runner=runner, **options)
    if not label_column:
        raise MedfmError("a classifier's robustness needs --label-column, the manifest column with each image's class")
    fitted = load_probe(probe)
    encoder = create_encoder(fitted.model["name"], checkpoint)
    with _runner(ray, workers, ProbeOnEncoder(fitted, encoder), partial(_probe_on_encoder, os.path.abspath(probe), checkpoint)) as runner:
        return classifier_robustness(manifest, fitted, encoder, label_column=label_column, runner=runner, **options)


@contextmanager
def _runner(ray: str | None, workers: int, predict: Any, build: Callable[[], Any]) -> Iterator[Runner | None]:
    """No runner without ``ray``, else Ray workers that each hold ``build()``, closed on leaving."""
    if ray is None:
        yield None
        return
    runner = open_runner(ray, workers, predict, build)
    try:
        yield runner
    finally:
        runner.close()


def _box_prompted(name: str, checkpoint: str | None) -> BoxPrompted:
    from medfm.models.registry import create_segmenter

    return BoxPrompted(create_segmenter(name, checkpoint))


def _probe_on_encoder(probe: str, checkpoint: str | None) -> ProbeOnEncoder:
    from medfm.models import create_encoder
    from medfm.models.probe import load_probe

    fitted = load_probe(probe)
    return ProbeOnEncoder(fitted, create_encoder(fitted.model["name"], checkpoint))
