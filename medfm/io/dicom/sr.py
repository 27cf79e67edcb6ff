"""A draft report as a DICOM Comprehensive SR (highdicom), marked as machine-generated.

The document is a Diagnostic Imaging Report (LOINC 18748-4) whose Findings container holds
one TEXT item per sentence, after a comment saying the draft is machine-generated and
unverified; its observer is a device (medfm and the model that drafted it), and its flags say
PRELIMINARY, UNVERIFIED, PARTIAL. With the source series, the SR joins the series' study,
inherits its patient and study attributes (nothing else of the patient) and lists every
source instance in the Current Requested Procedure Evidence Sequence (study, series and SOP
instance UIDs). Without one (a PNG or NIfTI study), it is its own study with empty patient
attributes. The whole provenance record goes in medfm's private block, as for a SEG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from medfm.errors import MedfmError, UnreadableFileError, display_path
from medfm.io.dicom import DicomSeries, quiet_pydicom
from medfm.io.dicom.provenance import add_provenance
from medfm.io.formats import atomic_path
from medfm.provenance import Provenance

#: The comment that opens every drafted SR's findings.
MACHINE_GENERATED_NOTE = "Machine-generated draft (medfm): not verified by a physician; check every sentence against the images."
#: Longest sentence written (a TEXT item's UT value may be longer; a drafted sentence never is).
MAX_SENTENCE_CHARS = 2000


def write_report_sr(sentences: Sequence[str], provenance: Provenance, path: str | os.PathLike,
                    series: DicomSeries | None = None) -> Path:
    """Write ``sentences`` (the draft, in order) as a Comprehensive SR at ``path``, atomically,
    referencing ``series`` (the study's DICOM series) when given."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    path = Path(path)
    texts = [" ".join(str(s).split()) for s in sentences]
    if not any(texts):
        raise MedfmError(f"{display_path(path)}: the draft has no sentences; no SR written")
    if too_long := next((t for t in texts if len(t) > MAX_SENTENCE_CHARS), None):
        raise MedfmError(f"{display_path(path)}: a sentence has {len(too_long)} characters; at most {MAX_SENTENCE_CHARS}")
    findings = hd.sr.ContainerContentItem(name=codes.DCM.Findings, relationship_type="CONTAINS")
    findings.ContentSequence = [
        hd.sr.TextContentItem(name=codes.DCM.Comment, value=MACHINE_GENERATED_NOTE, relationship_type="CONTAINS"),
        *(hd.sr.TextContentItem(name=codes.DCM.Finding, value=t, relationship_type="CONTAINS") for t in texts if t),
    ]
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="medfm", manufacturer_name="medfm", model_name=(provenance.model or "medfm")[:64]))
    report = hd.sr.ContainerContentItem(name=codes.LN.DiagnosticImagingReport, template_id="2000")
    report.ContentSequence = [*hd.sr.ObservationContext(observer_device_context=device), findings]
    evidence = _evidence(series)
    with quiet_pydicom():
        sr = hd.sr.ComprehensiveSR(
            evidence=evidence, content=report, series_instance_uid=generate_uid(), series_number=9000,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="medfm",
            is_complete=False, is_final=False, is_verified=False,
            series_description="medfm draft report (machine-generated)",
        )
        if series is None:  # the stand-in study is no instance to reference
            del sr.CurrentRequestedProcedureEvidenceSequence
        # UTF-8: retrieved captions hold bullets, dashes and accents that Latin-1 would turn into "?"
        sr.SpecificCharacterSet = "ISO_IR 192"
        add_provenance(sr, provenance)
        with atomic_path(path) as tmp:
            sr.save_as(tmp)
    return path


def _evidence(series: DicomSeries | None) -> list:
    """The source series' headers, or one stand-in header of a new study without patient attributes."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    if series is not None:
        files = list(dict.fromkeys(f.path for f in series.frames))
        if not files:
            raise MedfmError("the source series has no frames recorded; scan it with scan_dicom")
        with quiet_pydicom():
            try:
                return [dcmread(file, stop_before_pixels=True) for file in files]
            except Exception as exc:  # pydicom's own errors become one line naming the file
                raise UnreadableFileError(files[0], f"cannot read the source DICOM header ({exc})") from None
    now = datetime.now(UTC)
    stand_in = Dataset()
    stand_in.SOPClassUID, stand_in.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    stand_in.StudyInstanceUID, stand_in.SeriesInstanceUID = generate_uid(), generate_uid()
    stand_in.PatientID = stand_in.PatientName = stand_in.PatientBirthDate = stand_in.PatientSex = ""
    stand_in.AccessionNumber = stand_in.StudyID = stand_in.ReferringPhysicianName = ""
    stand_in.StudyDate, stand_in.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return [stand_in]


def read_report_sr(path: str | os.PathLike) -> list[str]:
    """The drafted sentences of an SR that :func:`write_report_sr` wrote (the machine-generated note left out)."""
    from pydicom import dcmread

    with quiet_pydicom():
        try:
            ds = dcmread(path)
        except Exception as exc:
            raise UnreadableFileError(Path(path), f"not a readable DICOM file ({exc})") from None
    texts = []
    for item in ds.get("ContentSequence", []):
        for child in item.get("ContentSequence", []) if item.ValueType == "CONTAINER" else []:
            if child.ValueType == "TEXT" and child.ConceptNameCodeSequence[0].CodeValue == "121071":
                texts.append(str(child.TextValue))
    return texts
