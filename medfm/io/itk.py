"""NRRD and MetaImage through SimpleITK, whose geometry is LPS like DICOM's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.errors import MedfmError
from medfm.io.formats import Format, register_format
from medfm.io.image import LPS_TO_RAS, Image


def read_itk(path: Path) -> list[Image]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    dimension = reader.GetDimension()
    if dimension not in (2, 3):
        raise ValueError(f"{dimension}-dimensional image; medfm reads 2D and 3D NRRD/MetaImage")
    itk_image = reader.Execute()
    # (K, J, I[, C]) in numpy order -> (I, J, K[, C]); a view, not a copy.
    array = sitk.GetArrayFromImage(itk_image)
    channels = itk_image.GetNumberOfComponentsPerPixel()
    spatial = array.ndim - (1 if channels > 1 else 0)
    order = tuple(reversed(range(spatial))) + ((spatial,) if channels > 1 else ())
    array = array.transpose(order)
    if dimension == 2:
        array = array[:, :, None, ...]
    if channels > 1:
        array = array[:, :, :, None, :]
    lps = np.eye(4)
    direction = np.asarray(itk_image.GetDirection()).reshape(dimension, dimension)
    spacing = np.asarray(itk_image.GetSpacing())
    lps[:dimension, :dimension] = direction * spacing
    lps[:dimension, 3] = itk_image.GetOrigin()
    metadata = {key: itk_image.GetMetaData(key) for key in ("modality",) if itk_image.HasMetaDataKey(key)}
    return [Image(array, LPS_TO_RAS @ lps, metadata=metadata)]


def write_itk(image: Image, path: Path) -> None:
    import SimpleITK as sitk

    if image.num_frames > 1:
        raise MedfmError(f"NRRD/MetaImage output holds one volume; this image has {image.num_frames} frames (write .nii.gz)")
    array = image.array[:, :, :, 0, :]
    vector = image.num_channels > 1
    array = array.transpose(2, 1, 0, 3) if vector else array[..., 0].transpose(2, 1, 0)
    itk_image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    lps = image.lps_affine
    spacing = np.asarray(image.spacing)
    itk_image.SetSpacing(spacing.tolist())
    itk_image.SetOrigin(lps[:3, 3].tolist())
    itk_image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    sitk.WriteImage(itk_image, str(path), useCompression=True)


def _sniff_nrrd(head: bytes) -> bool:
    return head.startswith(b"NRRD000")


NRRD = register_format(Format("nrrd", (".nrrd", ".nhdr"), read_itk, write_itk, _sniff_nrrd))
METAIMAGE = register_format(Format("metaimage", (".mha", ".mhd"), read_itk, write_itk))
