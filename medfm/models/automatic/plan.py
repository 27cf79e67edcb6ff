"""The written plan of an automatic segmenter: how images are scaled, normalised, cut into patches and augmented.

``medfm train seg`` derives it from the dataset's fingerprint (:mod:`medfm.train.seg_plan`)
and saves it as ``plan.json`` beside the weights; inference applies the same plan, so
nobody normalises by hand.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import MedfmError

NORMALISATIONS = ("zscore", "ct_clip")


@dataclass(frozen=True)
class Plan:
    """Everything training and inference must agree on.

    ``dims``: 2 (the network sees planes: 2D images, video frames, or the slices of
    strongly anisotropic volumes) or 3 (volumes); ``scale``: a 2D plan's factor applied to
    both image axes before the network (1 keeps the native grid); ``target_spacing``: a 3D
    plan's voxel size in mm along i, j, k, to which every volume is resampled (``scale`` is
    then 1); ``patch_size``: a training patch and the inference sliding window, one side per
    axis; ``normalisation``: ``"zscore"`` per image and channel, or
    ``"ct_clip"``: clip to the dataset's foreground ``clip`` percentiles, then subtract
    ``mean`` and divide by ``std`` of the dataset (nnU-Net's CT scheme); ``labels``:
    label value → name, background 0 excluded; ``augmentation``: the random transforms
    and their probabilities; ``label_fusion``: how several masks of one image became the
    training target (``"staple"`` or ``"majority"``, :mod:`medfm.tasks.label_fusion`), None
    when each image had one.
    """

    dims: int
    in_channels: int
    labels: Mapping[int, str]
    scale: float
    patch_size: tuple[int, ...]
    batch_size: int
    normalisation: str
    architecture: str
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None
    augmentation: Mapping[str, float] = field(default_factory=dict)
    learning_rate: float = 1e-3
    sliding_window_overlap: float = 0.25
    target_spacing: tuple[float, float, float] | None = None
    label_fusion: str | None = None

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS:
            raise MedfmError(f"plan normalisation must be one of {', '.join(NORMALISATIONS)}; got {self.normalisation!r}")
        if self.normalisation == "ct_clip" and (self.clip is None or self.mean is None or not self.std):
            raise MedfmError("plan normalisation ct_clip needs clip, mean and a nonzero std")
        if not self.labels or 0 in self.labels:
            raise MedfmError(f"plan labels must name at least one label value other than 0; got {dict(self.labels)}")
        if not 0 < self.scale <= 4:
            raise MedfmError(f"plan scale must be in (0, 4]; got {self.scale}")
        if len(self.patch_size) != self.dims or min(self.patch_size) < 8:
            raise MedfmError(f"plan patch_size must give {self.dims} sides of at least 8 pixels; got {list(self.patch_size)}")
        if self.dims not in (2, 3):
            raise MedfmError(f"plan dims must be 2 or 3; got {self.dims}")
        if self.target_spacing is not None and (self.dims != 3 or len(self.target_spacing) != 3
                                                or min(self.target_spacing) <= 0):
            raise MedfmError(f"plan target_spacing is a 3D plan's 3 positive voxel sizes in mm; got {self.target_spacing}")
        if self.batch_size < 1:
            raise MedfmError(f"plan batch_size must be >= 1; got {self.batch_size}")
        object.__setattr__(self, "labels", {int(k): str(v) for k, v in self.labels.items()})
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", tuple(float(s) for s in self.target_spacing))

    @property
    def out_channels(self) -> int:
        """Network outputs: background plus one per label value (label values are mapped to 1..n in order)."""
        return len(self.labels) + 1

    @property
    def label_values(self) -> list[int]:
        """Label values in the order of the network's output channels 1..n."""
        return sorted(self.labels)

    def to_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["labels"] = {str(k): v for k, v in sorted(self.labels.items())}
        record["patch_size"] = list(self.patch_size)
        record["clip"] = list(self.clip) if self.clip else None
        record["target_spacing"] = list(self.target_spacing) if self.target_spacing else None
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Plan:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise MedfmError(f"plan has no setting {unknown[0]!r}; the settings are {', '.join(sorted(names))}")
        values = dict(record)
        for name in ("clip", "target_spacing"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        values["labels"] = {int(k): v for k, v in values.get("labels", {}).items()}
        try:
            return cls(**values)
        except TypeError as exc:
            raise MedfmError(f"plan is incomplete: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def normalise(pixels: np.ndarray, plan: Plan) -> np.ndarray:
    """``pixels``: ``(C, *spatial)`` any dtype → float32 normalised as ``plan`` says (z-score per channel over the whole input)."""
    pixels = pixels.astype(np.float32)
    if plan.normalisation == "ct_clip":
        low, high = plan.clip
        return (np.clip(pixels, low, high) - plan.mean) / plan.std
    flat = pixels.reshape(pixels.shape[0], -1)
    mean, std = flat.mean(axis=1), flat.std(axis=1)
    shape = (-1,) + (1,) * (pixels.ndim - 1)
    return (pixels - mean.reshape(shape)) / np.maximum(std, 1e-6).reshape(shape)
