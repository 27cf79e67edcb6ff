"""Walk folders and record every image in a catalog: idempotent, resumable, never stopped by one file.

Which files count:

* Folders are walked recursively; hidden files and folders (names starting with ``.``)
  are passed over, and anything that is not a regular file is skipped. Paths given
  explicitly are always taken.
* A file is an *image* when its suffix belongs to a registered format (``.dcm``,
  ``.nii.gz``, ``.png``...) or its first bytes carry a format's signature (DICOM's
  ``DICM``, NIfTI's magic...). An image that cannot be read is *bad*: it is listed with
  the reason and the run goes on.
* Any other file (``README.txt``, ``.csv``...) is *skipped* as not an image.

DICOM files are grouped by series (header only, :func:`medfm.io.dicom.scan_dicom`):
one catalog image per series with exactly its own files, so that a folder holding several
series gives one image each, read back from its files alone
(:func:`medfm.catalog.loading.load_record`). A file whose SOP Instance UID repeats one
already in its series (the same image saved under two names) is counted as a duplicate
and not catalogued; a copy of an image catalogued before leaves that image, and its dataset,
as they were. Every other image file is one catalog image; NIfTI is described
from its header alone.

Masks and other label files are not images of their own: a manifest (``manifest.csv``
among the files, or one given) or a folder layout (``images/`` + ``masks/``, ``imagesTr/``
+ ``labelsTr/``) attaches them to their image, with the manifest's other columns as
searchable tags (:mod:`medfm.catalog.labels`). Labels are saved again on every run, so
re-ingesting a folder whose masks an older ingest catalogued as images removes those.

Files are keyed by resolved path, size and modification time: a file already
catalogued with the same size and mtime is *unchanged* and not read again; a changed
one is read again and its image replaced. New files of a series already catalogued
make the whole series rescanned. Images are committed in small batches, each a
transaction, so a run that is killed leaves a consistent catalog and the next run
picks up the files it did not reach. Files deleted from disk stay in the catalog.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from nibabel.orientations import aff2axcodes

from medfm.catalog.labels import SYNTHETIC, DatasetLabels, find_labels, manifest_images, may_hold_labels
from medfm.catalog.loading import DICOM_FORMAT
from medfm.catalog.store import (
    Catalog,
    FileRecord,
    ImageEntry,
    ImageLabelsEntry,
    LabelFileRecord,
    open_catalog,
)
from medfm.errors import FileError, MedfmError, UnreadableFileError, display_path
from medfm.io import detect_format, probe_all
from medfm.io.dicom import DICOM, DicomSeries, scan_dicom
from medfm.io.dicom.scan import SCAN_CHUNK_FILES, ChunkScanner, ScannedChunk, scan_files
from medfm.io.dicom.secondary import is_synthetic_dicom
from medfm.io.formats import image_suffix, sha256_of
from medfm.progress import progress_bar
from medfm.provenance import Provenance
from medfm.scale import LocalRunner, Runner, split

#: A batch is committed once it holds this many images or files, whichever comes first.
BATCH_IMAGES = 32
BATCH_FILES = 1024
#: Names that are DICOM by their suffix alone (``.dcm``...).
DICOM_SUFFIXES = tuple(DICOM.suffixes)


@dataclass
class IngestReport:
    """What one ingest did.

    ``added`` and ``updated`` count catalog images; ``unchanged`` counts files already
    catalogued with the same size and mtime; ``skipped`` counts files that are not
    images; ``duplicates`` counts DICOM files left out as copies of an image of their
    series, and ``duplicates_of`` (``{image id: dataset}``) names the images catalogued
    before this run that they copy (each keeps its dataset); ``bad`` lists ``(path, reason)`` for images that could not be read (and
    manifest rows that name no file). ``labelled`` counts images given a dataset's labels
    (label files or tags), ``label_files`` the files attached to them, ``unmatched_labels``
    the files of a ``masks/`` or ``labelsTr/`` folder that match no image (not catalogued),
    and ``removed`` the images an older ingest made of what are label files.
    """

    catalog: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    duplicates: int = 0
    duplicates_of: dict[int, str | None] = field(default_factory=dict)
    bad: list[tuple[str, str]] = field(default_factory=list)
    labelled: int = 0
    label_files: int = 0
    unmatched_labels: int = 0
    removed: int = 0


@dataclass(frozen=True)
class _Found:
    location: str  #: the resolved path as text; a Path is made only for the files that are read
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        return Path(self.location)


def _walk(paths: Iterable[str | os.PathLike], bad: list[tuple[str, str]]) -> tuple[list[_Found], int]:
    """Regular files under ``paths``, resolved and deduplicated; and how many were not regular files.

    Each root is resolved once; below it only symbolic links need resolving (folders are not
    followed through links), so a file costs one ``stat``.
    """
    # paths stay strings until a file is kept: pathlib's parsing and hashing were most of a re-ingest's time
    candidates: list[tuple[str, os.DirEntry | None]] = []
    for root in map(Path, paths):
        if not root.is_dir():
            candidates.append((str(root), None))
            continue
        candidates.extend((entry.path, entry) for entry in _folder_entries(root.resolve(), bad))
    found: dict[str, _Found] = {}
    irregular = 0
    for path, entry in candidates:
        try:
            if entry is None or entry.is_symlink():
                resolved = str(Path(path).resolve())
                info = os.stat(resolved)
            else:
                resolved, info = path, entry.stat(follow_symlinks=False)
        except OSError as exc:
            bad.append((display_path(path), f"cannot read ({exc.strerror or exc})"))
            continue
        if not stat.S_ISREG(info.st_mode):
            irregular += 1
        elif _undecodable(resolved):
            bad.append((display_path(path), "file name is not valid UTF-8 text; rename it"))
        elif resolved not in found:
            found[resolved] = _Found(resolved, info.st_size, info.st_mtime_ns)
    return list(found.values()), irregular


def _folder_entries(root: Path, bad: list[tuple[str, str]]) -> Iterator[os.DirEntry]:
    """Every non-folder entry under ``root``, depth first in name order, hidden names passed over."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as scanned:
                entries = sorted(scanned, key=lambda entry: entry.name)
        except OSError as exc:
            bad.append((display_path(folder), f"cannot read folder ({exc.strerror or exc})"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder = entry.is_dir()
            except OSError:
                is_folder = False
            if not is_folder:
                yield entry
            elif not entry.is_symlink():  # linked folders are not followed
                subfolders.append(Path(entry.path))
        stack.extend(reversed(subfolders))


def _undecodable(path: str) -> bool:
    """Whether the name holds bytes that are not UTF-8, which the catalog cannot store as text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_image(path: Path) -> tuple[str | None, str | None]:
    """``(format name, None)`` for an image, ``(None, None)`` for another file, ``(None, reason)`` for a bad one."""
    try:
        return detect_format(path).name, None
    except UnreadableFileError as exc:
        if image_suffix(path):  # an empty .png, say
            return None, exc.reason
        try:
            with open(path, "rb"):
                pass
        except OSError as open_error:
            return None, f"cannot open ({open_error.strerror or open_error})"
        return None, None


def _file_record(found: _Found, digest: str | None = None) -> FileRecord:
    return FileRecord(found.location, found.size, found.mtime_ns, digest or sha256_of(found.path))


def _file_entry(found: _Found, fmt: str) -> ImageEntry:
    (image,) = probe_all(found.path)
    meta = image.metadata
    if image.provenance is not None and image.provenance.synthetic:
        meta = {**meta, SYNTHETIC: True}
    return ImageEntry(
        format=fmt, source_path=found.location, modality=image.modality, body_part=meta.get("body_part"),
        description=meta.get("series_description") or meta.get("description"), shape=image.shape,
        spacing=image.spacing, orientation=image.orientation, files=[_file_record(found)],
        metadata=meta, phi=image.phi,
    )


def _series_entry(series: DicomSeries, found: dict[Path, _Found]) -> ImageEntry:
    meta = dict(series.metadata)
    if series.problem:  # still catalogued, so that the user can find and fix it
        meta["volume_problem"] = series.problem
    if _synthetic_series(series):
        meta[SYNTHETIC] = True
    files = [found.get(p) or _Found(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in series.files]
    # A name for people only: the file itself, or the folder of a series' files (which may hold others).
    source_path = files[0].location if len(files) == 1 else os.path.commonpath([str(f.path.parent) for f in files])
    return ImageEntry(
        format=DICOM_FORMAT, source_path=source_path,
        modality=meta.get("modality") or "OT", body_part=meta.get("body_part"),
        description=meta.get("series_description"), shape=series.shape, spacing=series.spacing,
        orientation="".join(aff2axcodes(series.affine)), metadata=meta, phi=series.phi,
        files=[_file_record(f, series.sha256.get(f.path)) for f in files],
        study_uid=series.study_uid or None, series_uid=series.series_uid,
    )


def _synthetic_series(series: DicomSeries) -> bool:
    """Whether a series is marked synthetic: DERIVED\\SECONDARY with a derivation description saying so, or
    a medfm provenance record that does (a damaged record is the reader's error to report, not ours)."""
    if is_synthetic_dicom(series.metadata):
        return True
    try:
        return bool(series.provenance_record) and Provenance.from_json(series.provenance_record).synthetic
    except MedfmError:
        return False


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, FileError) else str(exc)


class _Batch:
    """Entries waiting for one commit."""

    def __init__(self, catalog: Catalog, dataset: str | None, report: IngestReport) -> None:
        self.catalog, self.dataset, self.report = catalog, dataset, report
        self.entries: list[ImageEntry] = []

    def add(self, entry: ImageEntry) -> None:
        self.entries.append(entry)
        if len(self.entries) >= BATCH_IMAGES or sum(len(e.files) for e in self.entries) >= BATCH_FILES:
            self.commit()

    def commit(self) -> None:
        if self.entries:
            added, updated = self.catalog.save(self.entries, self.dataset)
            self.report.added += added
            self.report.updated += updated
            self.entries = []


def ingest(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    catalog: str | Catalog | None = None,
    *,
    dataset: str | None = None,
    manifest: str | os.PathLike | None = None,
    progress: bool | Callable[[int, int], None] = True,
    runner: Runner | None = None,
) -> IngestReport:
    """Record every image under ``paths`` (files or folders, walked recursively) in ``catalog``.

    ``catalog`` is an open :class:`Catalog` or a URL for :func:`open_catalog` (``None``:
    the default catalog). ``dataset`` names the collection the new images belong to.
    ``manifest`` names a CSV manifest (an ``image`` column, a ``mask`` column...) whose
    images are ingested with their labels, besides ``paths`` (which may then be empty).
    ``progress``: ``True`` shows a progress bar on stderr; a function is called with
    ``(files done, files to do)`` as the run goes instead (a server's job progress). Bad
    files do not stop the run: they are listed in the report's ``bad``. ``runner`` (a
    :func:`medfm.scale.open_runner` without a model) reads the files' headers on its workers,
    DICOM and others; this process groups series and writes the catalog with the same code, in the
    same order, so the catalog ends as a plain ingest leaves it.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    manifest_path = Path(manifest).resolve() if manifest else None
    # before the catalog is opened: a refused manifest or path must not leave a new empty catalog behind
    if manifest_path:
        paths += manifest_images(manifest_path)
    if not paths:
        raise MedfmError("nothing to ingest: give files, folders or a manifest")
    missing = next((path for path in paths if not Path(path).exists()), None)
    if missing is not None:
        raise MedfmError(f"{display_path(missing)}: no such file or folder")
    owned = not isinstance(catalog, Catalog)
    store = open_catalog(catalog) if owned else catalog
    try:
        return _ingest(paths, store, dataset, manifest_path, progress, runner)
    finally:
        if owned:
            store.close()


def _ingest(paths: list, catalog: Catalog, dataset: str | None, manifest: Path | None,
            progress: bool | Callable[[int, int], None], runner: Runner | None) -> IngestReport:
    report = IngestReport(catalog.url)
    found, report.skipped = _walk(paths, report.bad)
    labels, bad_rows = find_labels([f.path for f in found if may_hold_labels(f.location)], [manifest] if manifest else [])
    report.bad.extend(bad_rows)
    report.unmatched_labels = labels.unmatched
    if labels.label_paths:
        found = [f for f in found if f.path not in labels.label_paths]
    known = catalog.file_states([f.location for f in found])
    dicom: list[_Found] = []
    others: list[tuple[_Found, str]] = []
    for item in found:
        if known.get(item.location) == (item.size, item.mtime_ns):
            report.unchanged += 1
            continue
        if item.size and item.path.name.lower().endswith(DICOM_SUFFIXES):
            dicom.append(item)  # no sniffing needed: the header scan reports a bad one with its reason
            continue
        fmt, reason = _is_image(item.path)
        if reason:
            report.bad.append((display_path(item.path), reason))
        elif fmt is None:
            report.skipped += 1
        elif fmt == DICOM_FORMAT:
            dicom.append(item)
        else:
            others.append((item, fmt))
    batch = _Batch(catalog, dataset, report)
    total = len(others) + len(dicom)
    done = 0
    with progress_bar(progress is True) as bar:
        task = bar.add_task("Cataloguing images", total=total)

        def advance(files: int = 1) -> None:
            nonlocal done
            done += files
            bar.advance(task, files)
            if callable(progress):
                progress(done, total)

        # here, one file at a time keeps the progress exact; a runner's workers take chunks of files
        describer, largest = (runner, BATCH_IMAGES) if runner is not None else (LocalRunner(None), 1)
        chunks = split(others, describer.workers, largest)
        for chunk, described in zip(chunks, describer.map(describe_files, chunks), strict=True):
            for entry in described:
                if isinstance(entry, ImageEntry):
                    batch.add(entry)
                else:
                    report.bad.append(entry)
            advance(len(chunk))
        if dicom:
            bar.update(task, description="Cataloguing DICOM series")
            _ingest_dicom(dicom, batch, advance, partial(_scan_on, runner) if runner is not None else None)
        batch.commit()
    _save_labels(catalog, labels, report)
    report.bad.sort()
    return report


def describe_files(_: Any, chunk: list[tuple[_Found, str]]) -> list[ImageEntry | tuple[str, str]]:
    """Each file's catalog entry, described from its header, or ``(path, reason)`` for one that cannot be
    read (a runner's unit of work in :func:`ingest`)."""
    described: list[ImageEntry | tuple[str, str]] = []
    for item, fmt in chunk:
        try:
            described.append(_file_entry(item, fmt))
        except MedfmError as exc:
            described.append((display_path(item.path), _reason(exc)))
        except OSError as exc:
            described.append((display_path(item.path), f"cannot read ({exc.strerror or exc})"))
    return described


def _scan_on(runner: Runner, paths: list[Path], checksums: bool) -> Iterator[ScannedChunk]:
    """DICOM headers parsed (and files hashed) by ``runner``'s workers, in chunks, in order."""
    return runner.map(scan_dicom_files, [(chunk, checksums) for chunk in split(paths, runner.workers, SCAN_CHUNK_FILES)])


def scan_dicom_files(_: Any, chunk: tuple[list[Path], bool]) -> ScannedChunk:
    """:func:`~medfm.io.dicom.scan.scan_files` as a runner's unit of work."""
    return scan_files(*chunk)


def _save_labels(catalog: Catalog, labels: DatasetLabels, report: IngestReport) -> None:
    entries = []
    for image, found in labels.images.items():
        files = []
        for name, path in found.files:
            try:
                info = path.stat()
                files.append(LabelFileRecord(name, str(path), info.st_size, info.st_mtime_ns, sha256_of(path)))
            except OSError as exc:
                report.bad.append((display_path(path), f"cannot read ({exc.strerror or exc})"))
        entries.append(ImageLabelsEntry(str(image), files, found.tags))
    for start in range(0, len(entries), BATCH_FILES):
        labelled, attached, removed = catalog.save_labels(entries[start : start + BATCH_FILES])
        report.labelled += labelled
        report.label_files += attached
        report.removed += removed


def _ingest_dicom(dicom: list[_Found], batch: _Batch, advance: Callable[[int], None],
                  scan_chunks: ChunkScanner | None) -> None:
    """One catalog image per series; new files of a catalogued series make it rescanned whole.

    The scan's worker processes (or ``scan_chunks``) hash each file right after parsing its header."""
    by_path = {item.path: item for item in dicom}
    series_list, bad = scan_dicom(list(by_path), checksums=True, scan_chunks=scan_chunks)
    advance(len(bad))
    catalogued = batch.catalog.series_files([s.series_uid for s in series_list])
    copied: list[str] = []
    for series in series_list:
        new_files = len(series.files) + len(series.duplicates)
        earlier = [path for path in map(Path, catalogued.get(series.series_uid, [])) if path not in by_path and path.is_file()]
        try:
            if earlier:
                rescanned, more_bad = scan_dicom(earlier + list(series.files), checksums=True, scan_chunks=scan_chunks)
                bad.extend(more_bad)
                series = next(s for s in rescanned if s.series_uid == series.series_uid)
            # copies of files already catalogued were all this run brought: the image is as it was, nothing to save
            only_copies = bool(earlier) and by_path.keys().isdisjoint(series.files)
            entry = None if only_copies else _series_entry(series, by_path)
        except MedfmError as exc:
            bad.append((series.files[0], _reason(exc)))
        except OSError as exc:
            bad.append((series.files[0], f"cannot read ({exc.strerror or exc})"))
        except StopIteration:
            bad.append((series.files[0], "series files changed while being read; ingest again"))
        else:
            if entry is not None:
                batch.add(entry)
        duplicates = sum(1 for path in series.duplicates if path in by_path)
        batch.report.duplicates += duplicates
        if duplicates and series.series_uid in catalogued:
            copied.append(series.series_uid)
        advance(new_files)
    batch.report.duplicates_of.update(batch.catalog.series_images(copied).values())
    batch.report.bad.extend((display_path(path), reason) for path, reason in bad)
