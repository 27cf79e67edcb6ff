"""De-identify one pydicom dataset by the Basic Profile, with consistent UIDs and pseudonyms."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medfm import __version__
from medfm.io.deid.profile import rule_for

#: Dummy value for text VRs; short enough for SH, AE and CS (16 characters).
DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"), 0),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"\x00\x00"),
}
#: Attributes that get the patient's pseudonym rather than an empty or dummy value.
PSEUDONYM_TAGS = frozenset({0x00100010, 0x00100020})  # PatientName, PatientID
#: File meta attributes that can name the sending site or carry private data.
_FILE_META_REMOVED = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)

PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
#: Deidentification Method: the profile, then the tool that applied it (two LO values of up to 64 characters).
METHOD = ("DICOM PS3.15 Basic Application Confidentiality Profile", f"medfm {__version__}")

#: Modalities whose pixels often hold burned-in text (names, dates) when the
#: object does not say otherwise.
BURNED_IN_MODALITIES = frozenset({"US", "XA", "RF", "ES", "SC", "XC", "GM", "OT", "DOC", "DX", "CR", "IVUS"})
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass(frozen=True)
class Change:
    """What was done to one attribute; never its value.

    ``action`` is what was applied (``X`` removed, ``Z`` emptied, ``D`` dummy or
    pseudonym, ``U`` new UID); ``rule`` is the table's action (``X/Z/D``…),
    ``private`` or ``file meta``; ``path`` locates it inside sequences, e.g.
    ``ReferencedImageSequence[0].ReferencedSOPInstanceUID``.
    """

    tag: str
    keyword: str
    action: str
    rule: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class UIDMap:
    """Consistent replacements for one run: UIDs and patient pseudonyms, keyed by ``secret``.

    The same original UID always maps to the same new ``2.25.`` UID (a name-based UUID
    from HMAC-SHA256 of the secret and the UID), so series group and references resolve
    across files; the same secret gives the same UIDs in another run. Without a secret a
    random one is drawn, and nothing links the new UIDs to the old.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secrets.token_bytes(32) if secret is None else bytes(secret)
        self._uids: dict[str, str] = {}

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The new UID for ``original`` (empty stays empty)."""
        original = str(original).strip("\0 ")
        if not original:
            return original
        if original not in self._uids:
            number = int.from_bytes(self._digest("uid", original)[:16], "big")
            # Mark the 128 bits as a UUID (version 8, RFC 9562 variant), as the 2.25 arc requires.
            number = (number & ~(0xF << 76) | (8 << 76)) & ~(0b11 << 62) | (0b10 << 62)
            self._uids[original] = f"2.25.{number}"
        return self._uids[original]

    def pseudonym(self, patient: str) -> str:
        """``ANON-`` and 10 hex digits, the same for every file of one original patient."""
        return "ANON-" + self._digest("patient", patient).hex()[:10].upper()

    def __len__(self) -> int:
        """How many distinct UIDs have been replaced."""
        return len(self._uids)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _resolve(action: str, vr: str) -> str:
    """One applied action from a table entry: the most conservative that stays valid.

    Without the IOD's attribute types at hand, a compound keeps the attribute present
    (a dummy or empty value carries nothing). A sequence cannot get a generic dummy
    item, so one that must stay is emptied; ``U*`` keeps its items and replaces UIDs.
    """
    options = action.split("/")
    if vr == "SQ":
        if "U*" in options:
            return "U*"
        return "X" if options == ["X"] else "Z"
    if "D" in options or "U" in options:  # a UID's dummy is a new UID; a non-UI value's, a dummy
        return "U" if vr == "UI" else "D"
    if "Z" in options:
        return "Z"
    if options == ["X"]:
        return "X"
    raise ValueError(f"unknown action {action!r} in the Basic Profile table")


def _clean(ds: Dataset, uid_map: UIDMap, pseudonym: str, path: str, changes: list[Change]) -> None:
    for tag in list(ds.keys()):
        tag = BaseTag(tag)
        if tag.is_private:
            del ds[tag]
            changes.append(Change(_tag_text(tag), "private", "X", "private", path + _tag_text(tag)))
            continue
        if tag.element == 0:  # group lengths go stale once attributes change
            del ds[tag]
            continue
        elem = ds[tag]
        keyword = elem.keyword or keyword_for_tag(tag) or _tag_text(tag)
        where = path + keyword
        rule = rule_for(tag)
        action = _resolve(rule.action, elem.VR) if rule else None
        if action is None or action == "U*":  # kept: its items are de-identified in turn
            if elem.VR == "SQ":
                for n, item in enumerate(elem.value):
                    _clean(item, uid_map, pseudonym, f"{where}[{n}].", changes)
            continue
        if action in ("Z", "D") and elem.is_empty:
            continue
        if tag in PSEUDONYM_TAGS:  # Z allows a dummy: the pseudonym keeps patients apart
            action = "D"
        if action == "X":
            del ds[tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif action == "U":
            elem.value = [uid_map.uid(v) for v in elem.value] if elem.VM > 1 else uid_map.uid(elem.value)
        elif tag in PSEUDONYM_TAGS:
            elem.value = pseudonym
        else:
            elem.value = _DUMMY_BY_VR.get(elem.VR, DUMMY_TEXT)
        changes.append(Change(_tag_text(tag), keyword, action, rule.action, where))


def deidentify_dataset(ds: Dataset, uid_map: UIDMap) -> list[Change]:
    """De-identify ``ds`` in place by PS3.15 Table E.1-1 and return what changed.

    Every private attribute, curve and overlay group goes; table attributes are removed,
    emptied, given dummies or new UIDs (through ``uid_map``) at every sequence depth;
    Patient Name and ID become the patient's pseudonym. Geometry, pixel data and other
    attributes the table does not name are kept; burned-in text in pixels is not touched
    (see :func:`burned_in_reason`). The file meta follows the new SOP Instance UID, the
    preamble is zeroed, and the dataset is marked with Patient Identity Removed and the
    profile's code 113100.
    """
    patient = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
    changes: list[Change] = []
    _clean(ds, uid_map, uid_map.pseudonym(patient), "", changes)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in _FILE_META_REMOVED:
            if tag in meta:
                changes.append(Change(_tag_text(tag), meta[tag].keyword, "X", "file meta", meta[tag].keyword))
                del meta[tag]
        if meta.get("MediaStorageSOPInstanceUID"):  # maps as the SOP Instance UID it repeats
            meta.MediaStorageSOPInstanceUID = uid_map.uid(meta.MediaStorageSOPInstanceUID)
            changes.append(Change("(0002,0003)", "MediaStorageSOPInstanceUID", "U", "U", "MediaStorageSOPInstanceUID"))
    if getattr(ds, "preamble", None):
        ds.preamble = bytes(128)  # a preamble can hold another format's header (TIFF) and its text
    _mark(ds)
    return changes


def _mark(ds: Dataset) -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = PROFILE_CODE
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = list(METHOD)
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    # Dates and times were emptied or replaced by dummies, not shifted.
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def burned_in_reason(ds: Dataset) -> str | None:
    """Why the pixels of ``ds`` may hold burned-in identifying text, or None.

    True when Burned In Annotation is YES, or when it is absent and the modality or
    SOP class (secondary capture) usually carries text in the image.
    """
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return None
    flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if flag == "YES":
        return "BurnedInAnnotation is YES"
    if flag:
        return None
    modality = str(ds.get("Modality", "") or "")
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality} often has burned-in text and BurnedInAnnotation is absent"
    if str(ds.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE_PREFIX):
        return "secondary capture often has burned-in text and BurnedInAnnotation is absent"
    return None
