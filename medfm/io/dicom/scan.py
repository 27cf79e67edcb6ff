"""Header-only scanning: each file to frames (pixels untouched), frames to series.

Reading stops before Pixel Data; the file position there gives the pixel offset, so a
native file's pixels can later be read with one seek and one read. One bad file never
stops a scan: it lands on the bad list with a one-line reason.
"""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from medfm.errors import MedfmError, UnreadableFileError
from medfm.io.dicom import mosaic, multiframe, pixels
from medfm.io.dicom.frames import NATIVE_SYNTAXES, Frame, PixelLayout, looks_like_dicom
from medfm.io.dicom.provenance import provenance_text
from medfm.io.dicom.workers import fork_context, usable_cpus
from medfm.io.formats import sha256_of

if TYPE_CHECKING:
    from medfm.io.dicom import DicomSeries

#: Non-identifying attributes copied to ``metadata`` as ``name: keyword``.
METADATA_KEYWORDS = {
    "modality": "Modality",
    "body_part": "BodyPartExamined",
    "series_number": "SeriesNumber",
    "series_description": "SeriesDescription",
    "study_description": "StudyDescription",
    "protocol_name": "ProtocolName",
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "frame_of_reference_uid": "FrameOfReferenceUID",
    "sop_class_uid": "SOPClassUID",
    "manufacturer": "Manufacturer",
    "manufacturer_model": "ManufacturerModelName",
    "image_type": "ImageType",
    "derivation_description": "DerivationDescription",
    "slice_thickness": "SliceThickness",
    "magnetic_field_strength": "MagneticFieldStrength",
    "window_center": "WindowCenter",
    "window_width": "WindowWidth",
    "echo_time": "EchoTime",
    "repetition_time": "RepetitionTime",
    "kvp": "KVP",
    "convolution_kernel": "ConvolutionKernel",
    "photometric_interpretation": "PhotometricInterpretation",
}
#: Patient identifiers, kept in ``phi`` only.
PHI_KEYWORDS = {
    "patient_name": "PatientName",
    "patient_id": "PatientID",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "age": "PatientAge",
    "accession_number": "AccessionNumber",
    "study_id": "StudyID",
    "study_date": "StudyDate",
    "study_time": "StudyTime",
    "series_date": "SeriesDate",
    "series_time": "SeriesTime",
    "acquisition_date": "AcquisitionDate",
    "acquisition_time": "AcquisitionTime",
    "institution_name": "InstitutionName",
    "referring_physician": "ReferringPhysicianName",
    "other_patient_ids": "OtherPatientIDs",
}


class BadFile(Exception):
    """A file that is not a readable DICOM image; the message is the one-line reason."""


#: A scan of at least this many files parses them in worker processes.
PARALLEL_SCAN_FILES = 256
#: At most this many worker processes (and never more than the CPUs).
SCAN_PROCESSES = 8
#: Files per task sent to a worker: large enough to amortise the round trip.
SCAN_CHUNK_FILES = 512

#: Files up to this size are read whole before their header is parsed.
WHOLE_FILE_BYTES = 256 * 1024

#: Converted values by raw element: ``(tag, VR, implicit, little endian, raw bytes) -> value``.
_converted: dict[tuple, Any] = {}
#: The memo is emptied when it reaches this many values (values unique to one file fill it).
_CONVERTED_MAX = 20_000


def header_value(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)``, converting each distinct raw value once per process.

    The files of a series repeat most of their geometry and pixel-module values; pydicom
    takes about 10 µs to convert a raw value, a look-up here about 1 µs. The memo is keyed
    by the raw bytes and the encoding they were read with, so a value is only ever shared
    between elements that are byte for byte the same. Only for attributes whose value does
    not depend on the character set (numbers, UIDs, code strings).
    """
    tag = _keyword_tag(keyword)
    element = ds.get_item(tag)
    if element is None:
        return default
    if not isinstance(element, RawDataElement) or element.value is None:
        return element.value
    key = (tag, element.VR, element.is_implicit_VR, element.is_little_endian, element.value)
    try:
        return _converted[key]
    except KeyError:
        pass
    value = ds[tag].value
    if len(_converted) >= _CONVERTED_MAX:
        _converted.clear()
    _converted[key] = value
    return value


@cache
def _keyword_tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"no DICOM keyword {keyword!r}")
    return Tag(tag)


def _plain(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def describe(ds: Dataset) -> tuple[dict[str, Any], dict[str, str]]:
    """``(metadata, phi)`` of a header: non-identifying attributes, then patient identifiers."""
    metadata = {name: _plain(ds.get(keyword)) for name, keyword in METADATA_KEYWORDS.items()}
    metadata["transfer_syntax"] = _transfer_syntax(ds)
    if not isinstance(metadata["series_number"], int):  # absent, or not a valid IS value
        metadata["series_number"] = None
    if "PerFrameFunctionalGroupsSequence" not in ds and not header_value(ds, "PixelSpacing"):
        # the frames get a nominal 1 mm (file_frames); areas and distances must not be read as mm
        metadata["spacing_known"] = False
    phi = {name: str(ds.get(keyword)) for name, keyword in PHI_KEYWORDS.items() if ds.get(keyword) not in (None, "")}
    return {k: v for k, v in metadata.items() if v is not None}, phi


def _transfer_syntax(ds: Dataset) -> str:
    """The Transfer Syntax UID, or for a file without one the native encoding pydicom found."""
    meta = getattr(ds, "file_meta", None)
    syntax = header_value(meta, "TransferSyntaxUID") if meta is not None else None
    if syntax:
        return str(syntax)
    implicit, little = ds.original_encoding
    return "1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def _ends_inside_an_element(ds: Dataset, leftover: int) -> bool:
    """Whether pydicom stopped because the file ends inside an element (it stops quietly there).

    ``leftover`` is how many bytes follow where pydicom stopped. Checked only for files
    without Pixel Data, to tell a cut file from an object that has none.
    """
    if 0 < leftover < 8 or len(ds) == 0:  # part of a tag left, or nothing after the file meta
        return True
    last = ds.get_item(max(ds.keys()))  # the raw element: its declared length and the bytes read
    return (
        isinstance(last, RawDataElement) and last.value is not None
        and last.length != 0xFFFFFFFF and len(last.value) < last.length
    )


def _read_header(path: Path) -> tuple[Dataset, int, int, int]:
    """The header, the Pixel Data value's offset and length (-1, -1 if none), and the file size."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            # A small file is read whole with one call: pydicom's many small reads cost more.
            fp = io.BytesIO(handle.read()) if size <= WHOLE_FILE_BYTES else handle
            head = fp.read(132)
            if not looks_like_dicom(head):
                raise BadFile("not a DICOM file (no DICM marker at byte 128)")
            fp.seek(0)
            ds = dcmread(fp, stop_before_pixels=True, force=head[128:132] != b"DICM")
            if _transfer_syntax(ds) == pixels.DEFLATED:  # pydicom inflated the data set: no file offsets
                meta_length = int(ds.file_meta.get("FileMetaInformationGroupLength") or 0)
                offset, length = (0, 0xFFFFFFFF) if pixels.deflated_has_pixels(path, meta_length) else (-1, -1)
            else:
                stopped_at = fp.tell()
                offset, length = _pixel_element(fp, ds)
                if offset < 0 and _ends_inside_an_element(ds, size - stopped_at):
                    raise BadFile("truncated or corrupt: the file ends before its pixel data")
    except BadFile:
        raise
    except UnreadableFileError as exc:  # a deflated data set over the decompression limits
        raise BadFile(exc.reason) from None
    except MemoryError:  # a damaged element length: pydicom allocates what it claims before reading
        raise BadFile("corrupt DICOM header: an element claims more bytes than can be held") from None
    except OSError as exc:
        raise BadFile(f"cannot open ({exc.strerror or exc})") from None
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        text = str(exc).strip().splitlines()
        raise BadFile(f"corrupt or truncated DICOM header ({text[0][:120] if text else type(exc).__name__})") from None
    return ds, offset, length, size


def _pixel_element(fp, ds: Dataset) -> tuple[int, int]:
    """Read the element header at the position where pydicom stopped, before Pixel Data."""
    start = fp.tell()
    header = fp.read(12)
    if len(header) < 8:
        return -1, -1
    implicit, little = ds.original_encoding
    endian = "<" if little is not False else ">"
    if struct.unpack_from(f"{endian}HH", header) != (0x7FE0, 0x0010):
        return -1, -1
    if implicit:
        return start + 8, struct.unpack_from(f"{endian}I", header, 4)[0]
    if header[4:6] in (b"OB", b"OW", b"UN", b"OF", b"OD", b"OL", b"OV"):
        if len(header) < 12:
            raise BadFile("truncated or corrupt: the file ends inside the Pixel Data element's header")
        return start + 12, struct.unpack_from(f"{endian}I", header, 8)[0]
    return start + 8, struct.unpack_from(f"{endian}H", header, 6)[0]


def _layout(ds: Dataset, offset: int, length: int, size: int) -> PixelLayout:
    syntax = _transfer_syntax(ds)
    rows, columns = int(header_value(ds, "Rows") or 0), int(header_value(ds, "Columns") or 0)
    if rows == 0 or columns == 0:
        raise BadFile(f"image has {rows} rows and {columns} columns: no pixels")
    bits = int(header_value(ds, "BitsAllocated") or 0)
    signed = int(header_value(ds, "PixelRepresentation") or 0) == 1
    samples = int(header_value(ds, "SamplesPerPixel") or 1)
    frames = int(header_value(ds, "NumberOfFrames") or 1)
    photometric = str(header_value(ds, "PhotometricInterpretation", "MONOCHROME2"))
    native = syntax in NATIVE_SYNTAXES and length != 0xFFFFFFFF
    dtype = f"{NATIVE_SYNTAXES.get(syntax, '<')}{'i' if signed else 'u'}{max(bits, 8) // 8}"
    layout = PixelLayout(
        syntax, offset, rows, columns, samples, frames, dtype, int(header_value(ds, "BitsStored") or bits),
        int(header_value(ds, "PlanarConfiguration") or 0),
    )
    # Big endian 8-bit pixels may be stored as OW, byte-swapped in pairs: pydicom untangles them.
    big_endian_bytes = bits == 8 and NATIVE_SYNTAXES.get(syntax) == ">"
    fast = native and bits in (8, 16, 32) and photometric in ("MONOCHROME1", "MONOCHROME2", "RGB") and not big_endian_bytes
    _check_pixel_bytes(layout, bits, photometric, native, max(min(length, size - offset), 0))
    return layout if fast else replace(layout, offset=-1)


def _check_pixel_bytes(layout: PixelLayout, bits: int, photometric: str, native: bool, held: int) -> None:
    """Refuse a header that claims more frames than the Pixel Data's ``held`` bytes can hold.

    Before any frame is listed or any buffer allocated: a damaged Number of Frames (2**31)
    would otherwise make billions of frames. Native data must hold every byte; encapsulated
    data holds each frame in at least one item, which takes 8 bytes. (Deflated data is
    bounded by the decompression limits as it is inflated.)
    """
    frames, rows, columns, samples = layout.number_of_frames, layout.rows, layout.columns, layout.samples
    if frames < 1:
        raise BadFile(f"header claims {frames} frames")
    if native:
        # YBR_FULL_422 stores two luminance samples per pair of chroma samples: 2/3 of full size;
        # Bits Allocated 1 packs eight pixels into a byte.
        values = frames * rows * columns * samples * (2 if photometric == "YBR_FULL_422" else 3) // 3
        expected = -(-values * max(bits, 1) // 8)
        if held < expected:
            raise BadFile(
                f"header claims {expected} bytes of pixel data ({frames} frame(s) of {columns}x{rows}x"
                f"{samples}, {bits} bits) but the file holds {held}"
            )
    elif layout.transfer_syntax != pixels.DEFLATED and frames > held // 8:
        raise BadFile(f"header claims {frames} frames but its {held} bytes of encapsulated pixel data hold at most {held // 8}")


def _common(ds: Dataset) -> dict[str, Any]:
    """Per-file values that every frame of the file shares unless a functional group overrides them."""
    spacing = header_value(ds, "SpacingBetweenSlices") or header_value(ds, "SliceThickness")
    return {
        "rescale": (float(header_value(ds, "RescaleSlope") or 1.0), float(header_value(ds, "RescaleIntercept") or 0.0)),
        "slice_spacing": abs(float(spacing)) if spacing else None,
        "gantry_tilt": float(header_value(ds, "GantryDetectorTilt") or 0.0),
        "acquisition_3d": str(header_value(ds, "MRAcquisitionType", "")).upper() == "3D",
        "volume_key": tuple(
            float(header_value(ds, k) or 0) for k in ("TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime", "InstanceNumber")
        ),
    }


def _sop_class_name(ds: Dataset) -> str:
    """The SOP Class's name, or its UID if pydicom does not know it; never the raw bytes of a damaged value."""
    meta = getattr(ds, "file_meta", None)
    uid = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    if not uid:
        return "no SOP Class UID"
    uid = UID(str(uid))
    return uid.name if uid.is_valid else "invalid SOP Class UID"


def file_frames(path: Path) -> tuple[Dataset, list[Frame]]:
    """The header of ``path`` and its frames; :class:`BadFile` with the reason if it has none."""
    ds, offset, length, size = _read_header(path)
    if offset < 0:
        raise BadFile(f"DICOM object without pixel data ({_sop_class_name(ds)})")
    try:
        layout = _layout(ds, offset, length, size)
        common = _common(ds)
        if "PerFrameFunctionalGroupsSequence" in ds:
            return ds, multiframe.frames(ds, path, layout, common)
        if mosaic.is_mosaic(ds):
            return ds, mosaic.frames(ds, path, layout, common)
        position = tuple(float(v) for v in header_value(ds, "ImagePositionPatient") or (0.0, 0.0, 0.0))
        orientation = tuple(float(v) for v in header_value(ds, "ImageOrientationPatient") or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
        pixel_spacing = tuple(float(v) for v in header_value(ds, "PixelSpacing") or (1.0, 1.0))
        frames = [
            Frame(path, n, layout, position, orientation, pixel_spacing, layout.rows, layout.columns,
                  common["rescale"], (*common["volume_key"], n), common["slice_spacing"],
                  common["gantry_tilt"], common["acquisition_3d"])
            for n in range(layout.number_of_frames)
        ]
    except BadFile:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, MedfmError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        culprit = _non_numeric_attribute(ds)
        raise BadFile(f"malformed DICOM attributes ({f'{culprit}: ' if culprit else ''}{reason})") from None
    return ds, frames


#: The numeric attributes a plane's geometry and values are read from (none identifies a patient).
_NUMERIC_KEYWORDS = ("Rows", "Columns", "BitsAllocated", "NumberOfFrames", "ImagePositionPatient", "ImageOrientationPatient",
                     "PixelSpacing", "RescaleSlope", "RescaleIntercept", "SpacingBetweenSlices", "SliceThickness",
                     "GantryDetectorTilt", "TemporalPositionIdentifier", "AcquisitionNumber", "TriggerTime", "InstanceNumber")


def _non_numeric_attribute(ds: Dataset) -> str | None:
    """The first of :data:`_NUMERIC_KEYWORDS` whose value is not numbers: looked for only once a file has failed,
    so that its one-line reason names the attribute."""
    for keyword in _NUMERIC_KEYWORDS:
        try:
            value = ds.get(keyword)
            for number in value if isinstance(value, (list, tuple, MultiValue)) else [value]:
                if number is not None and number != "":
                    float(number)
        except (ValueError, TypeError, OverflowError):
            return keyword
    return None


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """What a scan keeps of one file: its series, its instance, its frames, and for the first
    file of each series in a chunk the series' ``(metadata, phi, provenance)`` (see
    :func:`describe` and :func:`medfm.io.dicom.provenance.provenance_text`)."""

    path: Path
    series_uid: str
    instance_uid: str | None
    frames: list[Frame]
    described: tuple[dict[str, Any], dict[str, str], str | None] | None
    sha256: str | None = None


#: What scanning a chunk of files gives: the files read, and ``(path, reason)`` for the others.
ScannedChunk = tuple[list[ScannedFile], list[tuple[Path, str]]]
#: ``scan_chunks(paths, checksums)``: every file of ``paths`` scanned, as :func:`scan_files` results in order.
ChunkScanner = Callable[[list[Path], bool], Iterable[ScannedChunk]]


def scan_files(paths: list[Path], checksums: bool = False) -> ScannedChunk:
    """Scan ``paths`` in order (and hash each DICOM image file with ``checksums``); one
    process's share of a parallel scan."""
    from medfm.io.dicom import quiet_pydicom

    scanned: list[ScannedFile] = []
    bad: list[tuple[Path, str]] = []
    described: set[str] = set()
    with quiet_pydicom():
        for path in paths:
            try:
                ds, frames = file_frames(path)
                digest = sha256_of(path) if checksums else None
            except BadFile as exc:
                bad.append((path, str(exc)))
                continue
            except OSError as exc:  # gone or unreadable between the header and the hash
                bad.append((path, f"cannot read ({exc.strerror or exc})"))
                continue
            uid = str(header_value(ds, "SeriesInstanceUID") or f"no-uid:{path.parent}")
            instance = header_value(ds, "SOPInstanceUID")
            scanned.append(ScannedFile(path, uid, str(instance) if instance else None, frames,
                                       None if uid in described else (*describe(ds), provenance_text(ds)), digest))
            described.add(uid)
    return scanned, bad


def _scan_all(paths: list[Path], checksums: bool) -> Iterator[ScannedChunk]:
    """Chunks of ``paths`` scanned in order: in worker processes for many files (parsing holds
    the GIL, so threads do not help), here for a few (a pool costs more than it saves)."""
    workers = min(SCAN_PROCESSES, usable_cpus())
    context = fork_context()
    if workers < 2 or len(paths) < PARALLEL_SCAN_FILES or context is None:
        yield scan_files(paths, checksums)
        return
    # A forked worker must import nothing: another thread of this process (a server's) may be importing that very
    # module as the pool forks, and the worker would wait forever for the import lock it inherited held. medfm's
    # modules are imported above; scanning the first file here imports what pydicom loads lazily for such files.
    yield scan_files(paths[:1], checksums)
    size = max(16, min(SCAN_CHUNK_FILES, -(-len(paths) // (4 * workers))))
    chunks = [paths[start:start + size] for start in range(1, len(paths), size)]
    # gc.freeze: a worker's collections then skip the heap it inherits (every module the parent
    # imported), which they would otherwise traverse again and again while results pile up.
    with ProcessPoolExecutor(workers, mp_context=context, initializer=gc.freeze) as pool:
        with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process; see fork_context
            warnings.simplefilter("ignore", DeprecationWarning)
            results = pool.map(scan_files, chunks, [checksums] * len(chunks))  # submits every chunk, starting the workers
        yield from results


def scan(paths: Iterable[Path], checksums: bool = False,
         scan_chunks: ChunkScanner | None = None) -> tuple[list[DicomSeries], list[tuple[Path, str]]]:
    """Group DICOM files into series; see :func:`medfm.io.dicom.scan_dicom`.

    Within a series, a file whose SOP Instance UID repeats an earlier file's (the same image
    copied under another name) is left out of ``files`` and listed in ``duplicates``.
    """
    from medfm.io.dicom import DicomSeries

    groups: dict[str, _Group] = {}
    bad: list[tuple[Path, str]] = []
    for scanned, chunk_bad in (scan_chunks or _scan_all)([p if isinstance(p, Path) else Path(p) for p in paths], checksums):
        bad.extend(chunk_bad)
        for item in scanned:
            group = groups.get(item.series_uid)
            if group is None:
                group = groups[item.series_uid] = _Group(item.described)
            if item.instance_uid is not None and item.instance_uid in group.instances:
                group.duplicates.append(item.path)
                continue
            if item.instance_uid is not None:
                group.instances.add(item.instance_uid)
            group.files.append(item.path)
            group.frames.extend(item.frames)
            if item.sha256 is not None:
                group.sha256[item.path] = item.sha256
    series = [DicomSeries.from_frames(uid, *group.described, group.files, group.frames, group.duplicates, group.sha256)
              for uid, group in groups.items()]
    series.sort(key=lambda s: (s.study_uid, s.metadata.get("series_number", 0), s.series_uid))
    return series, bad


@dataclass
class _Group:
    described: tuple[dict[str, Any], dict[str, str], str | None]
    files: list[Path] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)
    sha256: dict[Path, str] = field(default_factory=dict)
