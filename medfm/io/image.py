"""The image type that every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.provenance import Provenance

#: Axis order of :attr:`Image.array`: the NIfTI dimension order.
AXES = ("i", "j", "k", "t", "c")

#: Flips LPS (DICOM, ITK) world coordinates to RAS (NIfTI, nibabel) and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(eq=False)
class Image:
    """An array with the geometry that places it in the patient, in the spirit of TorchIO.

    ``array`` has five axes ``(I, J, K, T, C)``: voxel axes ``i`` (along image columns),
    ``j`` (along image rows) and ``k`` (across slices), then frames ``t`` (time, volumes
    of a 4D series, video frames) and channels ``c`` (1 for grey, 3 for RGB). Shorter
    arrays are padded with trailing axes of length 1, so ``Image(np.zeros((64, 64, 20)))``
    is a single-channel volume. The array is kept as given (a memory map stays a memory
    map); nothing is copied.

    ``affine`` is a float64 ``(4, 4)`` matrix mapping voxel ``(i, j, k, 1)`` to world
    millimetres in RAS+ (x to the patient's right→left is negative, the nibabel/NIfTI
    convention). ``lps_affine`` gives the DICOM/ITK form.

    ``metadata`` holds non-identifying attributes (modality, body part, series keys…);
    ``phi`` holds patient identifiers, kept apart so that nothing prints them by accident.
    ``provenance`` says what made the image when a model did (a label map, a generated
    image); writers of PNG, NIfTI and DICOM SEG store it and :func:`medfm.load` gives it back.
    """

    array: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: LPS_TO_RAS.copy())
    modality: str = "OT"
    metadata: dict[str, Any] = field(default_factory=dict)
    phi: dict[str, Any] = field(default_factory=dict)
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        array = self.array if isinstance(self.array, np.ndarray) else np.asarray(self.array)
        if not 2 <= array.ndim <= 5:
            raise ValueError(f"array must have 2 to 5 axes (I, J, K, T, C), got shape {array.shape}")
        self.array = array.reshape(array.shape + (1,) * (5 - array.ndim))
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
        if not np.isfinite(affine).all():
            raise ValueError("affine has non-finite values (NaN or infinity)")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("affine is singular: voxel axes must span 3D space")
        self.affine = affine

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(I, J, K, T, C)``."""
        return self.array.shape

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return self.array.shape[:3]

    @property
    def num_frames(self) -> int:
        return self.array.shape[3]

    @property
    def num_channels(self) -> int:
        return self.array.shape[4]

    @property
    def is_2d(self) -> bool:
        return self.array.shape[2] == 1

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def origin(self) -> tuple[float, float, float]:
        """World RAS+ position of voxel (0, 0, 0)."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` unit vectors of the voxel axes in RAS+, as columns."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def orientation(self) -> str:
        """Axis code such as ``"LPS"``: the world direction each voxel axis increases toward."""
        from nibabel.orientations import aff2axcodes  # nibabel (and the pydicom it loads) only when asked

        return "".join(aff2axcodes(self.affine))

    @property
    def lps_affine(self) -> np.ndarray:
        """The affine in DICOM/ITK LPS+ world coordinates."""
        return LPS_TO_RAS @ self.affine

    def check_plane_index(self, k: int, t: int) -> None:
        """MedfmError unless slice ``k`` and frame ``t`` name a plane of this image."""
        if not 0 <= k < self.shape[2]:
            raise MedfmError(f"slice {k} is outside the image (slices 0 to {self.shape[2] - 1})")
        if not 0 <= t < self.shape[3]:
            raise MedfmError(f"frame {t} is outside the image (frames 0 to {self.shape[3] - 1})")

    def frame(self, k: int = 0, t: int = 0) -> np.ndarray:
        """One 2D plane for display: ``(rows, columns)`` or ``(rows, columns, C)``, a view."""
        self.check_plane_index(k, t)  # numpy would quietly take slice -1 as the last one
        plane = self.array[:, :, k, t, :].transpose(1, 0, 2)
        return plane[:, :, 0] if plane.shape[2] == 1 else plane

    def with_array(self, array: np.ndarray) -> Image:
        """A new image on the same grid with another array (a segmentation, say), without provenance:
        whatever made the new array must stamp its own."""
        return Image(array, self.affine, self.modality, dict(self.metadata), dict(self.phi))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.4g}" for s in self.spacing)
        return (
            f"Image(shape={self.shape}, dtype={self.array.dtype}, modality={self.modality!r}, "
            f"spacing=({spacing}), orientation={self.orientation!r})"
        )


def affine_from_lps(
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    slice_direction: np.ndarray,
    spacing: tuple[float, float, float],
    origin_lps: np.ndarray,
) -> np.ndarray:
    """RAS+ affine from DICOM-style LPS geometry.

    ``row_direction`` is the direction of increasing column index (i), ``column_direction``
    that of increasing row index (j), both as in Image Orientation (Patient);
    ``spacing`` is (column spacing, row spacing, slice step) in mm.
    """
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(row_direction, dtype=np.float64) * spacing[0]
    lps[:3, 1] = np.asarray(column_direction, dtype=np.float64) * spacing[1]
    lps[:3, 2] = np.asarray(slice_direction, dtype=np.float64) * spacing[2]
    lps[:3, 3] = origin_lps
    return LPS_TO_RAS @ lps
