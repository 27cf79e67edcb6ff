"""DICOM de-identification by the PS3.15 Basic Application Level Confidentiality Profile.

:func:`deidentify` processes files and folders; :func:`deidentify_dataset` one pydicom
dataset, with a :class:`UIDMap` shared by every dataset that must stay consistent.
Not implemented: the profile's options (Retain Safe Private, date shifting by Retain
Longitudinal Temporal Information with Modified Dates, Clean Pixel Data, ...).
"""

from medfm.io.deid.dataset import Change, UIDMap, burned_in_reason, deidentify_dataset
from medfm.io.deid.files import DeidentifiedFile, DeidReport, FileProblem, deidentify

__all__ = [
    "Change",
    "DeidReport",
    "DeidentifiedFile",
    "FileProblem",
    "UIDMap",
    "burned_in_reason",
    "deidentify",
    "deidentify_dataset",
]
