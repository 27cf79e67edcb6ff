"""Reading and writing medical images with their geometry; de-identification.

``load(path)`` and ``save(image, path)`` cover every registered format; importing this
package registers them all.
"""

from medfm.io import dicom, itk, neuro, nifti, npz, raster, video  # noqa: F401  (registers the formats)
from medfm.io.formats import detect_format, load, load_all, probe_all, registered_formats, save
from medfm.io.image import Image

__all__ = ["Image", "detect_format", "load", "load_all", "probe_all", "registered_formats", "save"]
