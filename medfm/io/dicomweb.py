"""A PACS over DICOMweb: search (QIDO-RS), retrieve (WADO-RS) and store (STOW-RS).

:class:`DicomWeb` wraps :class:`dicomweb_client.DICOMwebClient` and speaks medfm's
terms: search results are plain dicts without patient identifiers unless asked for,
retrieved instances land on disk as ``<folder>/<series_uid>/<sop_uid>.dcm`` (each written
whole or not at all), and every network or HTTP failure is a one-line
:class:`~medfm.errors.MedfmError` naming the server (never its credentials) and the
HTTP status, never a traceback and never patient data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from medfm.errors import MedfmError, display_path
from medfm.io.formats import atomic_path

if TYPE_CHECKING:
    import pydicom

T = TypeVar("T")

#: QIDO-RS attributes asked for in study and series searches (tag keywords).
STUDY_FIELDS = ("StudyDate", "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances", "BodyPartExamined")
PHI_FIELDS = ("PatientName", "PatientID")
#: DICOM tags read from QIDO-RS JSON (which is keyed by hex tag, not keyword).
_TAGS = {
    "StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "StudyDate": "00080020",
    "StudyDescription": "00081030", "ModalitiesInStudy": "00080061", "NumberOfStudyRelatedSeries": "00201206",
    "NumberOfStudyRelatedInstances": "00201208", "Modality": "00080060",
    "SeriesDescription": "0008103E", "SeriesNumber": "00200011", "NumberOfSeriesRelatedInstances": "00201209",
    "BodyPartExamined": "00180015", "PatientName": "00100010", "PatientID": "00100020",
}
#: QIDO-RS date matching: one day, or a range open at either end.
_DATE_RANGE = re.compile(r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}")
#: STOW-RS response: Failed SOP Sequence, and in each item the SOP Instance UID and the reason.
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"


class DicomWeb:
    """A DICOMweb server at ``url`` (e.g. ``http://pacs:8042/dicom-web``).

    ``token`` is sent as ``Authorization: Bearer TOKEN``; ``timeout`` (seconds) bounds each
    request. Nothing is sent until a method is called.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        from dicomweb_client import DICOMwebClient

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # the address is echoed only as scheme and host: what else a URL holds may be a password
            got = f"got {_address(url)!r}" if parts.scheme and parts.hostname else "got one without a scheme and host"
            raise MedfmError(f"PACS address must be an http:// or https:// URL, e.g. http://pacs:8042/dicom-web; {got}")
        self.url = url.rstrip("/")
        #: How the server is named in messages: scheme, host and port, no credentials or path.
        self.address = _address(url)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._client = DICOMwebClient(self.url, headers=headers, timeout=timeout)
        # A retry loop with exponential backoff would hide a down server for many seconds;
        # callers (CLI, server jobs) report the failure at once instead.
        self._client.set_http_retry_params(retry=False)

    def __repr__(self) -> str:
        return f"DicomWeb({self.address!r})"

    def search_studies(
        self,
        *,
        modality: str | None = None,
        study_date: str | None = None,
        accession: str | None = None,
        limit: int | None = None,
        show_phi: bool = False,
    ) -> list[dict[str, Any]]:
        """Studies matching every filter given (QIDO-RS), as the server orders them.

        ``study_date`` is DICOM's ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``. Each result
        is ``{"study_uid", "study_date", "modalities", "description", "num_series",
        "num_instances"}``, plus ``"patient_name"`` and ``"patient_id"`` when ``show_phi``.
        """
        if study_date and not _DATE_RANGE.fullmatch(study_date):
            raise MedfmError(f"study date must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be left open); got {study_date[:40]!r}")
        if limit is not None and limit < 1:
            raise MedfmError(f"limit must be a positive number of studies; got {limit}")
        filters = {key: value for key, value in (("ModalitiesInStudy", modality and modality.upper()),
                                                 ("StudyDate", study_date), ("AccessionNumber", accession)) if value}
        fields = [*STUDY_FIELDS, *(PHI_FIELDS if show_phi else ())]
        found = self._call("search studies", partial(self._client.search_for_studies, search_filters=filters,
                                                     fields=fields, limit=limit))
        return [_study(item, show_phi) for item in found]

    def search_series(self, study_uid: str, show_phi: bool = False, *, modality: str | None = None) -> list[dict[str, Any]]:
        """The series of one study (QIDO-RS), optionally only those of ``modality``.

        Each result is ``{"series_uid", "study_uid", "modality", "series_number",
        "description", "body_part", "num_instances"}``, plus the patient fields when ``show_phi``.
        """
        check_uid("study UID", study_uid)
        filters = {"Modality": modality.upper()} if modality else {}
        fields = [*SERIES_FIELDS, *(PHI_FIELDS if show_phi else ())]
        found = self._call(f"search series of study {study_uid}", partial(self._client.search_for_series, study_uid,
                                                                          search_filters=filters, fields=fields))
        return [_series(item, study_uid, show_phi) for item in found]

    def retrieve(self, study_uid: str, folder: str | os.PathLike, series_uid: str | None = None) -> list[Path]:
        """Download a study (or one of its series) as ``<folder>/<series_uid>/<sop_uid>.dcm`` files (WADO-RS).

        Instances are streamed and each is written to a temporary file then renamed, so an
        interrupted retrieve leaves no partial file. An instance already on disk is kept as
        it is: a SOP Instance UID names one immutable object, and keeping the file keeps its
        modification time, so a catalog sees it as unchanged. Returns every instance's path.
        """
        check_uid("study UID", study_uid)
        if series_uid is None:
            what, request = f"retrieve study {study_uid}", partial(self._client.iter_study, study_uid)
        else:
            check_uid("series UID", series_uid)
            what = f"retrieve study {study_uid} series {series_uid}"
            request = partial(self._client.iter_series, study_uid, series_uid)
        folder = Path(folder)
        written = [_write_instance(ds, folder) for ds in self._stream(what, request)]
        if not written:
            raise MedfmError(f"{self.address}: study {study_uid} has no instances to retrieve")
        return written

    def store(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """Upload DICOM files (STOW-RS); returns the SOP Instance UIDs the server stored.

        Raises if the server reports any instance as failed, naming its SOP Instance UID
        and the failure reason code.
        """
        import pydicom
        import requests
        from pydicom.errors import InvalidDicomError

        datasets = []
        for path in paths:
            try:
                datasets.append(pydicom.dcmread(path))
            except (OSError, InvalidDicomError) as exc:
                raise MedfmError(f"{display_path(path)}: not a readable DICOM file ({exc})") from None
        if not datasets:
            raise MedfmError("no DICOM file given to store")
        with self._errors(f"store {len(datasets)} instance(s)"):
            try:
                response = self._client.store_instances(datasets)
                body = response.to_json_dict() if response else {}
            except requests.HTTPError as exc:
                # Servers (Orthanc among them) refuse a partly failed STOW-RS with 4xx and
                # name the failed instances in the body: report those rather than the bare status.
                body = _stow_failures(exc.response)
                if body is None:
                    raise
        return _stored_uids(body, len(datasets), self.address)

    def _call(self, what: str, request: Callable[[], T]) -> T:
        with self._errors(what):
            return request()

    def _stream(self, what: str, request: Callable[[], Iterable[T]]) -> Iterator[T]:
        with self._errors(what):
            yield from request()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn the HTTP stack's exceptions into one line naming the server and the status."""
        import requests

        try:
            yield
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            reason = f" {exc.response.reason}" if exc.response is not None and exc.response.reason else ""
            hint = " (not found on the server)" if status == 404 else " (the server wants credentials: give a token)" if status in (401, 403) else ""
            raise MedfmError(f"{self.address}: {what} failed: HTTP {status}{reason}{hint}") from None
        except requests.Timeout:
            raise MedfmError(f"{self.address}: {what} failed: no answer within the timeout") from None
        except requests.ConnectionError:
            raise MedfmError(f"{self.address}: {what} failed: cannot connect to the server") from None
        except requests.RequestException as exc:
            raise MedfmError(f"{self.address}: {what} failed: {type(exc).__name__}") from None


def check_uid(name: str, uid: str) -> str:
    """``uid`` if it is a DICOM UID (1 to 64 digits and dots), else a MedfmError naming ``name``.

    Checked before any request: UIDs become URL path segments and file names.
    """
    if not isinstance(uid, str) or not 0 < len(uid) <= 64 or not all(c.isdigit() or c == "." for c in uid):
        raise MedfmError(f"{name} must be 1 to 64 digits and dots (e.g. 1.2.840.113619.2.5); got {str(uid)[:70]!r}")
    return uid


def _address(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: never the user name, password, path or query."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def _value(item: dict[str, Any], keyword: str) -> Any:
    """The first value of ``keyword`` in a DICOM JSON object; ``None`` when absent."""
    values = item.get(_TAGS[keyword], {}).get("Value") or [None]
    value = values[0]
    if isinstance(value, dict):  # person names are {"Alphabetic": "..."}
        return value.get("Alphabetic")
    return value


def _values(item: dict[str, Any], keyword: str) -> list[Any]:
    return list(item.get(_TAGS[keyword], {}).get("Value") or [])


def _phi(item: dict[str, Any]) -> dict[str, Any]:
    return {"patient_name": _value(item, "PatientName"), "patient_id": _value(item, "PatientID")}


def _study(item: dict[str, Any], show_phi: bool) -> dict[str, Any]:
    study = {
        "study_uid": _value(item, "StudyInstanceUID"),
        "study_date": _value(item, "StudyDate"),
        "modalities": _values(item, "ModalitiesInStudy"),
        "description": _value(item, "StudyDescription"),
        "num_series": _value(item, "NumberOfStudyRelatedSeries"),
        "num_instances": _value(item, "NumberOfStudyRelatedInstances"),
    }
    return {**study, **_phi(item)} if show_phi else study


def _series(item: dict[str, Any], study_uid: str, show_phi: bool) -> dict[str, Any]:
    series = {
        "series_uid": _value(item, "SeriesInstanceUID"),
        "study_uid": _value(item, "StudyInstanceUID") or study_uid,
        "modality": _value(item, "Modality"),
        "series_number": _value(item, "SeriesNumber"),
        "description": _value(item, "SeriesDescription"),
        "body_part": _value(item, "BodyPartExamined"),
        "num_instances": _value(item, "NumberOfSeriesRelatedInstances"),
    }
    return {**series, **_phi(item)} if show_phi else series


def _write_instance(ds: pydicom.Dataset, folder: Path) -> Path:
    """``ds`` as ``folder/<series_uid>/<sop_uid>.dcm``, atomically; an existing file is kept."""
    # UIDs become path components: only digits and dots, so nothing the server sends can escape the folder.
    series_uid = check_uid("series UID sent by the server", str(ds.get("SeriesInstanceUID", "")))
    sop_uid = check_uid("SOP Instance UID sent by the server", str(ds.get("SOPInstanceUID", "")))
    path = folder / series_uid / f"{sop_uid}.dcm"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def _stow_failures(response: Any) -> dict[str, Any] | None:
    """The STOW-RS response body of a refused request when it lists failed instances, else ``None``."""
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get(_FAILED_SOP_SEQUENCE, {}).get("Value") else None


def _stored_uids(response: dict[str, Any], count: int, address: str) -> list[str]:
    """The SOP Instance UIDs a STOW-RS response lists as stored; MedfmError if it lists any failure."""
    failed = response.get(_FAILED_SOP_SEQUENCE, {}).get("Value") or []
    if failed:
        first = failed[0]
        uid = (first.get(_REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or ["?"])[0]
        reason = (first.get(_FAILURE_REASON, {}).get("Value") or ["?"])[0]
        code = f"0x{reason:04X}" if isinstance(reason, int) else reason
        raise MedfmError(f"{address}: the server refused {len(failed)} of {count} instance(s), "
                         f"e.g. {uid} (failure reason {code})")
    stored = response.get(_REFERENCED_SOP_SEQUENCE, {}).get("Value") or []
    uids = [(item.get(_REFERENCED_SOP_INSTANCE_UID, {}).get("Value") or [None])[0] for item in stored]
    return [uid for uid in uids if uid]
