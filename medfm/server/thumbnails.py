"""Thumbnails from the middle plane of an image, reading that plane only where the format allows.

A catalog of thin-slice CT studies shows dozens of thumbnails at once; reading each whole
volume for them would cost its full size in memory and time. A DICOM series reads the one
file of its middle slice (headers of the others), a NIfTI file the middle slice through
nibabel's array proxy, a video decodes up to its middle frame keeping only that one;
pictures are read whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.catalog import ImageRecord
from medfm.io import Image
from medfm.io.video import VIDEO
from medfm.server.display import Display, default_window, render_png

#: Longest side of a thumbnail, in pixels.
THUMBNAIL_SIDE = 96


def thumbnail_png(image: Image) -> bytes:
    """The middle plane of ``image`` as a PNG whose longest side is :data:`THUMBNAIL_SIDE`."""
    shape = image.shape
    return render_png(image, shape[2] // 2, shape[3] // 2, Display.of(image), default_window(image), max_side=THUMBNAIL_SIDE)


def middle_plane(record: ImageRecord) -> Image:
    """The middle plane (slice, then frame) of a catalog image as a one-plane image with its affine."""
    from medfm.catalog.ingestion import DICOM_FORMAT

    if record.format == DICOM_FORMAT:
        return _dicom_middle(record)
    if record.source_path.lower().endswith((".nii", ".nii.gz")):
        plane = _nifti_middle(Path(record.source_path))
        if plane is not None:
            return plane
    if record.format == VIDEO.name:
        return _video_middle(Path(record.source_path), record.shape[3] // 2 if len(record.shape) > 3 else 0)
    from medfm.io import load

    image = load(record.source_path)
    k, t = image.shape[2] // 2, image.shape[3] // 2
    return image.with_array(np.ascontiguousarray(image.array[:, :, k:k + 1, t:t + 1]))


def _nifti_middle(path: Path) -> Image | None:
    """The middle slice of a grey 3D or 4D NIfTI file; ``None`` for other layouts (read whole)."""
    import nibabel as nib

    nifti = nib.load(path)
    if nifti.ndim not in (3, 4) or nifti.header.get_data_dtype().fields:
        return None
    index = tuple(size // 2 for size in nifti.shape[2:])
    plane = np.asarray(nifti.dataobj[(slice(None), slice(None), *index)])
    return Image(plane[:, :, None, None, None], nifti.affine)


def _video_middle(path: Path, middle: int) -> Image:
    """Frame ``middle`` of a video (the last one if it has fewer), decoded one frame at a time."""
    import av

    from medfm.errors import UnreadableFileError

    kept = None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise UnreadableFileError(path, "file holds no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            for index, frame in enumerate(container.decode(stream)):
                kept = frame
                if index == middle:
                    break
            if kept is None:
                raise UnreadableFileError(path, "video holds no decodable frames")
            pixels = kept.to_ndarray(width=width, height=height, format="rgb24")
    except av.error.FFmpegError as exc:
        raise UnreadableFileError(path, f"not a readable video ({exc.strerror or type(exc).__name__})") from None
    return Image(pixels.transpose(1, 0, 2)[:, :, None, None, :])  # (rows, columns, 3) -> (I, J, 1, 1, 3)


def _dicom_middle(record: ImageRecord) -> Image:
    """The middle slice of a DICOM series: every file's header, one file's pixels."""
    from medfm.errors import MedfmError
    from medfm.io.dicom import quiet_pydicom, scan_dicom
    from medfm.io.dicom.geometry import plan_volume
    from medfm.io.dicom.series import assemble

    series_list, _bad = scan_dicom([Path(f.path) for f in record.files or ()])
    series = next((s for s in series_list if s.series_uid == record.series_uid), None)
    if series is None or not series.frames:
        raise MedfmError(f"image {record.id} cannot be read: its DICOM files changed since they were catalogued")
    row, column = np.asarray(series.frames[0].orientation[:3]), np.asarray(series.frames[0].orientation[3:])
    normal = np.cross(row, column)
    first_volume = min(f.volume_key for f in series.frames)
    frames = sorted((f for f in series.frames if f.volume_key == first_volume), key=lambda f: float(np.dot(f.position, normal)))
    with quiet_pydicom():
        return assemble(plan_volume([frames[len(frames) // 2]]), series.metadata.get("modality") or "OT",
                        series.metadata, series.phi)
