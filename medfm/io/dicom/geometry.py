"""Where each frame goes in the volume, and the affine: dcm2niix's layout, exactly.

dcm2niix (v1.0.20220720, checked empirically) writes:

* ``i`` along the row direction (increasing column index), as stored;
* ``j`` against the column direction: the row axis is flipped, so ``j = 0`` is the last
  stored row and the origin is the centre of the last row's first pixel;
* ``k`` along the slice normal ``row × column``, slices sorted by their position on it
  (whatever the Instance Numbers say), spacing from the positions;
* ``t`` over frames that share a position, ordered by temporal position, acquisition
  number, trigger time, then instance number (within each volume dcm2niix keeps Instance
  Number order; medfm sorts by position, which agrees whenever the numbers follow the
  positions, as scanners write them);
* for a single-volume 3D MR acquisition (MR Acquisition Type ``3D``), the voxel axes
  permuted and flipped to the nearest RAS+ order.

A missing slice, uneven spacing, mixed orientations or sizes, and gantry tilt are refused
with a one-line reason rather than written on a wrong grid.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from medfm.errors import MedfmError
from medfm.io.dicom.frames import Frame
from medfm.io.image import LPS_TO_RAS

#: Frames whose positions along the normal differ by less than this (mm) share a slice.
SAME_POSITION_MM = 0.01
#: Largest relative departure of one slice step from the median before the spacing is uneven.
SPACING_TOLERANCE = 0.02
#: Largest in-plane drift (mm per slice) before the stack counts as sheared (gantry tilt).
SHEAR_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class VolumePlan:
    """Frames placed on the grid: ``grid[k][t]`` is the frame at slice ``k`` of volume ``t``.

    ``affine`` is RAS+ for the array laid out as dcm2niix stores it before any 3D
    reorientation; ``reorientation`` (a nibabel orientation array) then permutes and
    flips the voxel axes, or is None.
    """

    grid: list[list[Frame]]
    shape: tuple[int, int, int, int, int]  # (I, J, K, T, C) before reorientation
    affine: np.ndarray
    reorientation: np.ndarray | None

    @property
    def output_shape(self) -> tuple[int, int, int, int, int]:
        if self.reorientation is None:
            return self.shape
        spatial = [0, 0, 0]
        for axis, (target, _) in enumerate(self.reorientation):
            spatial[int(target)] = self.shape[axis]
        return (*spatial, *self.shape[3:])

    @property
    def output_affine(self) -> np.ndarray:
        if self.reorientation is None:
            return self.affine
        from nibabel.orientations import inv_ornt_aff

        return self.affine @ inv_ornt_aff(self.reorientation, self.shape[:3])


def _plane_name(normal: np.ndarray) -> str:
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _check_uniform(frames: list[Frame]) -> None:
    sizes = Counter((f.rows, f.columns) for f in frames)
    if len(sizes) > 1:
        detail = ", ".join(f"{c}x{r} in {n} frames" for (r, c), n in sizes.most_common())
        raise MedfmError(f"inconsistent image size within the series (columns x rows: {detail})")
    # distinct raw values first: a series repeats one orientation and one spacing in every frame
    orientations = {tuple(np.round(o, 4)) for o in {f.orientation for f in frames}}
    if len(orientations) > 1:
        planes = sorted({_plane_name(np.cross(o[:3], o[3:])) for o in orientations})
        raise MedfmError(
            f"mixed orientations within the series: {len(orientations)} different Image Orientation "
            f"(Patient) values ({', '.join(planes)}); a localizer or several stacks share the series"
        )
    spacings = {tuple(np.round(s, 4)) for s in {f.pixel_spacing for f in frames}}
    if len(spacings) > 1:
        raise MedfmError(f"inconsistent Pixel Spacing within the series: {sorted(spacings)}")


def _slice_step(projections: np.ndarray, fallback: float | None) -> float:
    """Spacing of sorted slice positions along the normal, after checking it is even."""
    if len(projections) == 1:
        return float(fallback) if fallback else 1.0
    steps = np.diff(projections)
    median = float(np.median(steps))
    tolerance = max(SAME_POSITION_MM * 2, SPACING_TOLERANCE * median)
    for n, step in enumerate(steps):
        if step > 1.5 * median:
            missing = round(step / median) - 1
            raise MedfmError(
                f"missing slice: gap of {step:.3f} mm between slice positions {projections[n]:.3f} and "
                f"{projections[n + 1]:.3f} mm along the slice normal (slices {n + 1} and {n + 2} of "
                f"{len(projections)}), where the spacing is {median:.3f} mm; about {missing} slice(s) missing"
            )
    if np.any(np.abs(steps - median) > tolerance):
        raise MedfmError(
            f"uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm along the slice "
            "normal; a NIfTI grid needs even spacing"
        )
    return float((projections[-1] - projections[0]) / (len(projections) - 1))


def plan_volume(frames: list[Frame]) -> VolumePlan:
    """Sort ``frames`` into ``(K, T)`` slots and compute the dcm2niix affine; MedfmError if impossible."""
    _check_uniform(frames)
    first = frames[0]
    row = np.asarray(first.orientation[:3], dtype=np.float64)
    column = np.asarray(first.orientation[3:], dtype=np.float64)
    row /= np.linalg.norm(row)
    column /= np.linalg.norm(column)
    normal = np.cross(row, column)
    normal /= np.linalg.norm(normal)
    positions = np.array([f.position for f in frames], dtype=np.float64)
    projections = positions @ normal
    order = np.argsort(projections, kind="stable")
    slices: list[list[int]] = []
    for index in order:
        if slices and projections[index] - projections[slices[-1][0]] < SAME_POSITION_MM:
            slices[-1].append(index)
        else:
            slices.append([index])
    counts = Counter(len(s) for s in slices)
    if len(counts) > 1:
        (usual, _), = counts.most_common(1)
        odd = next(n for n, s in enumerate(slices) if len(s) != usual)
        raise MedfmError(
            f"slice positions hold different numbers of frames ({min(counts)} to {max(counts)}): "
            f"slice at {projections[slices[odd][0]]:.3f} mm along the normal has {len(slices[odd])}, "
            f"most have {usual}; a volume of this 4D series is incomplete"
        )
    stack = np.array([projections[s[0]] for s in slices])
    _check_shear(positions[[s[0] for s in slices]], stack, normal, row, column, first.gantry_tilt)
    step = _slice_step(stack, first.slice_spacing)
    grid = [sorted((frames[i] for i in s), key=lambda f: f.volume_key) for s in slices]
    n_rows = first.rows
    row_spacing, column_spacing = first.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row * column_spacing
    lps[:3, 1] = -column * row_spacing  # the row axis is flipped, as dcm2niix does
    lps[:3, 2] = normal * step
    lps[:3, 3] = positions[slices[0][0]] + column * row_spacing * (n_rows - 1)
    shape = (first.columns, n_rows, len(slices), len(slices[0]), first.layout.samples)
    reorientation = None
    if first.acquisition_3d and shape[2] > 1 and shape[3] == 1:
        from nibabel.orientations import io_orientation

        reorientation = io_orientation(LPS_TO_RAS @ lps)
        if np.array_equal(reorientation, [[0, 1], [1, 1], [2, 1]]):
            reorientation = None
    return VolumePlan(grid, shape, LPS_TO_RAS @ lps, reorientation)


def _check_shear(
    positions: np.ndarray, projections: np.ndarray, normal: np.ndarray, row: np.ndarray,
    column: np.ndarray, gantry_tilt: float,
) -> None:
    """Refuse stacks whose slices drift in-plane: a tilted CT gantry, or several stacks mixed."""
    if len(positions) < 2:
        return
    in_plane = positions - np.outer(projections, normal)
    drift = np.linalg.norm(in_plane[-1] - in_plane[0]) / (len(positions) - 1)
    if drift <= SHEAR_TOLERANCE_MM:
        return
    step = (projections[-1] - projections[0]) / (len(positions) - 1)
    angle = np.degrees(np.arctan2(drift, step))
    along = abs((in_plane[-1] - in_plane[0]) @ column) >= abs((in_plane[-1] - in_plane[0]) @ row)
    tag = f", Gantry/Detector Tilt {gantry_tilt:g}°" if gantry_tilt else ""
    raise MedfmError(
        f"gantry tilt of {angle:.2f}° (slices drift {drift:.3f} mm per slice along the "
        f"{'column' if along else 'row'} direction{tag}); medfm does not resample tilted "
        "stacks (dcm2niix writes a tilt-corrected copy)"
    )
