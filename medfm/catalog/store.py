"""The catalog: open it by URL, write images with their files, query them back.

One SQLAlchemy code path serves SQLite (the default, a file in the per-user data
directory) and PostgreSQL (``postgresql://user@host/db``, driven by psycopg 3).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session, selectinload

from medfm.catalog.labels import MASK, SYNTHETIC
from medfm.catalog.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Base,
    FileRow,
    ImageRow,
    LabelFileRow,
    MetaRow,
    StudyRow,
    TagRow,
)
from medfm.errors import MedfmError, display_path

# Keeps IN (...) lists well under SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500


@dataclass(frozen=True)
class FileRecord:
    """A catalogued file: resolved path, size in bytes, modification time in ns, SHA-256."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class LabelFileRecord:
    """A file of labels for an image: ``name`` is the manifest column (``mask``...), then as :class:`FileRecord`."""

    name: str
    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class ImageLabelsEntry:
    """A dataset's labels for the catalogued image that owns the file (or series folder) ``image_path``."""

    image_path: str
    files: Sequence[LabelFileRecord]
    tags: Mapping[str, str]


@dataclass(frozen=True)
class ImageEntry:
    """An image to write: a DICOM series or one image file, with the files it comes from."""

    format: str
    source_path: str
    modality: str
    body_part: str | None
    description: str | None
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    files: Sequence[FileRecord]
    metadata: dict[str, Any] = field(default_factory=dict)
    phi: dict[str, Any] = field(default_factory=dict, repr=False)
    study_uid: str | None = None
    series_uid: str | None = None


@dataclass(frozen=True)
class ImageOverview:
    """What sorting, filtering and grouping a long catalog needs of one image (no files, labels, tags or PHI)."""

    id: int
    dataset: str | None
    format: str
    source_path: str
    modality: str
    body_part: str | None
    description: str | None
    patient_key: str | None
    study_id: int | None


@dataclass(frozen=True)
class ImageRecord:
    """A catalogued image and, when fetched with them (:meth:`Catalog.get`, ``query(with_files=True)``),
    exactly the files it is read from: a DICOM series' own files, or the one image file.
    ``source_path`` only names it for people: that file, or the folder of a series' files.
    ``label_files`` (its mask...) and ``tags`` (``{column: value}``) are what its dataset's
    manifest or layout says about it (:mod:`medfm.catalog.labels`)."""

    id: int
    dataset: str | None
    format: str
    source_path: str
    modality: str
    body_part: str | None
    description: str | None
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    study_uid: str | None
    series_uid: str | None
    patient_key: str | None
    num_files: int
    metadata: dict[str, Any]
    added_at: datetime | None
    updated_at: datetime | None
    phi: dict[str, Any] = field(repr=False)
    files: tuple[FileRecord, ...] | None = None
    #: the catalog's own number for its study (not the study's UID), for grouping
    study_id: int | None = None
    label_files: tuple[LabelFileRecord, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def mask(self) -> LabelFileRecord | None:
        """The label file named ``mask``, if it has one."""
        return next((f for f in self.label_files if f.name == MASK), None)

    def to_dict(self, show_phi: bool = False) -> dict[str, Any]:
        """JSON-ready fields; patient identifiers only when ``show_phi``."""
        record = asdict(self)
        record["shape"], record["spacing"] = list(self.shape), list(self.spacing)
        for key in ("added_at", "updated_at"):
            record[key] = record[key].isoformat() if record[key] else None
        if self.files is None:
            del record["files"]
        if not show_phi:
            del record["phi"]
        return record


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL: ``postgresql://`` (and ``postgres://``) use psycopg 3; a bare path is a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    return url


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy: pydicom multi-values become lists, numpy scalars numbers, the rest text."""

    def default(obj: Any) -> Any:
        if hasattr(obj, "item"):
            return obj.item()
        if isinstance(obj, Iterable) and not isinstance(obj, (str, bytes)):
            return list(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (a server, a second shell) see the catalog while an ingest writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL syncs at checkpoints, not at every commit: a crash keeps the catalog
    # consistent and at worst loses the last batches, which the next ingest records again.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


#: Orders :meth:`Catalog.page` sorts by in the database: each the columns to sort on. ``patient``
#: keeps each patient's studies, and each study's series, together; images with no patient come last.
PAGE_ORDERS = {
    "added": lambda: (ImageRow.id,),
    "modality": lambda: (ImageRow.modality, ImageRow.id),
    "patient": lambda: (ImageRow.patient_key.is_(None), ImageRow.patient_key, ImageRow.study_id, ImageRow.id),
}
#: The longest name (description) :meth:`Catalog.rename` gives an image.
MAX_DESCRIPTION = 200
#: The largest id (and limit) a catalog's 64-bit integer columns hold.
MAX_ID = 2**63 - 1


class Catalog:
    """A catalog database. Open with :func:`open_catalog`; usable as a context manager."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.url = _safe_url(str(engine.url))
        self._secret = self._setup()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"

    def close(self) -> None:
        self._engine.dispose()

    def _setup(self) -> bytes:
        """Create missing tables, check the schema version; the patient-key secret, created once."""
        Base.metadata.create_all(self._engine)
        defaults = {"schema_version": SCHEMA_VERSION, "patient_key_secret": secrets.token_hex(32)}
        values = {}
        for key, default in defaults.items():
            with Session(self._engine) as session:
                row = session.get(MetaRow, key)
                if row is None:
                    session.add(MetaRow(key=key, value=default))
                    try:
                        session.commit()
                    except IntegrityError:  # another process created it first: use theirs
                        session.rollback()
                    row = session.get(MetaRow, key)
                values[key] = row.value
        while values["schema_version"] in MIGRATIONS:  # create_all has just added what it lacked
            with Session(self._engine) as session, session.begin():
                session.execute(update(MetaRow).where(MetaRow.key == "schema_version",
                                                      MetaRow.value == values["schema_version"])
                                .values(value=MIGRATIONS[values["schema_version"]]))
            values["schema_version"] = MIGRATIONS[values["schema_version"]]
        if values["schema_version"] != SCHEMA_VERSION:
            raise MedfmError(
                f"catalog {self.url} has schema version {values['schema_version']}; "
                f"this medfm reads version {SCHEMA_VERSION}"
            )
        return bytes.fromhex(values["patient_key_secret"])

    def patient_key(self, patient_id: str | None) -> str | None:
        """A pseudonym for ``patient_id``: HMAC-SHA256 under this catalog's secret, 32 hex digits.

        Stable within one catalog, unlinkable across catalogs, and not reversible without
        the secret (unlike a plain hash of a short ID, which can be brute-forced).
        """
        if not patient_id:
            return None
        return hmac.new(self._secret, str(patient_id).encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def file_states(self, paths: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``{path: (size, mtime_ns)}`` for those of ``paths`` already catalogued."""
        states: dict[str, tuple[int, int]] = {}
        with Session(self._engine) as session:
            for chunk in _chunks(paths):
                rows = session.execute(select(FileRow.path, FileRow.size, FileRow.mtime_ns).where(FileRow.path.in_(chunk)))
                states.update((path, (size, mtime)) for path, size, mtime in rows)
        return states

    def series_files(self, series_uids: Sequence[str]) -> dict[str, list[str]]:
        """``{series_uid: [path, ...]}`` for those of ``series_uids`` already catalogued."""
        found: dict[str, list[str]] = {}
        with Session(self._engine) as session:
            for chunk in _chunks(series_uids):
                rows = session.execute(
                    select(ImageRow.series_uid, FileRow.path).join(FileRow).where(ImageRow.series_uid.in_(chunk))
                )
                for uid, path in rows:
                    found.setdefault(uid, []).append(path)
        return found

    def series_images(self, series_uids: Sequence[str]) -> dict[str, tuple[int, str | None]]:
        """``{series_uid: (image id, dataset)}`` for those of ``series_uids`` already catalogued."""
        found: dict[str, tuple[int, str | None]] = {}
        with Session(self._engine) as session:
            for chunk in _chunks(series_uids):
                rows = session.execute(select(ImageRow.series_uid, ImageRow.id, ImageRow.dataset).where(ImageRow.series_uid.in_(chunk)))
                found.update((uid, (image_id, dataset)) for uid, image_id, dataset in rows)
        return found

    def save(self, entries: Sequence[ImageEntry], dataset: str | None = None) -> tuple[int, int]:
        """Add or replace ``entries`` in one transaction; returns ``(added, updated)``.

        An entry replaces the image with the same series UID, or, without one, the image
        that owns its file. Files that other images claimed move to the new entry, and
        an image left with no files is removed. New images go into ``dataset``; an image
        replaced keeps the dataset it was first catalogued in.
        """
        added = updated = 0
        try:
            with Session(self._engine) as session, session.begin():
                for entry in entries:
                    if self._upsert(session, entry, dataset):
                        added += 1
                    else:
                        updated += 1
        except OperationalError as exc:  # locked, disk full, connection lost: nothing of this batch was written
            raise self._write_failed(exc) from None
        return added, updated

    def _write_failed(self, exc: OperationalError) -> MedfmError:
        reason = str(exc.orig or exc).strip().splitlines()
        return MedfmError(f"cannot write to catalog {self.url}: {reason[0] if reason else 'database error'}")

    def _upsert(self, session: Session, entry: ImageEntry, dataset: str | None) -> bool:
        # File rows are written with bulk statements: a series can have thousands of files,
        # and one ORM object per file row made saving the slowest part of an ingest.
        paths = [f.path for f in entry.files]
        if entry.series_uid:
            row = session.scalar(select(ImageRow).where(ImageRow.series_uid == entry.series_uid))
        else:
            row = session.scalar(select(ImageRow).join(FileRow).where(FileRow.path == paths[0], ImageRow.series_uid.is_(None)))
        orphans = set()
        for chunk in _chunks(paths):
            orphans.update(session.scalars(select(FileRow.image_id).where(FileRow.path.in_(chunk))))
            session.execute(delete(FileRow).where(FileRow.path.in_(chunk)), execution_options={"synchronize_session": False})
        is_new = row is None
        if is_new:
            row = ImageRow()
        else:
            session.execute(delete(FileRow).where(FileRow.image_id == row.id), execution_options={"synchronize_session": False})
        patient_key = self.patient_key(entry.phi.get("patient_id"))
        study = self._study(session, entry.study_uid, patient_key) if entry.study_uid else None
        session.add(row)
        row.study = study
        row.series_uid = entry.series_uid
        if is_new:  # a changed file or a copy found under another dataset must not move its image out of its own
            row.dataset = dataset
        row.format = entry.format
        row.source_path = entry.source_path
        row.modality = (entry.modality or "OT").upper()
        row.body_part = entry.body_part.upper() if entry.body_part else None
        row.description = entry.description or None
        row.patient_key = patient_key
        row.shape = [int(n) for n in entry.shape]
        row.spacing = [round(float(s), 6) for s in entry.spacing]
        row.orientation = entry.orientation
        row.metadata_ = _plain(entry.metadata)
        row.phi = _plain(entry.phi)
        session.flush()
        session.execute(insert(FileRow.__table__), [  # Core, not the ORM bulk path: no per-row bookkeeping
            {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256, "image_id": row.id}
            for f in entry.files
        ])
        session.expire(row, ["files"])
        # the file's own synthetic mark is a tag, so that queries can leave synthetic images out
        session.execute(delete(TagRow).where(TagRow.image_id == row.id, TagRow.key == SYNTHETIC))
        if entry.metadata.get(SYNTHETIC):
            session.execute(insert(TagRow), [{"image_id": row.id, "key": SYNTHETIC, "value": "true"}])
        session.expire(row, ["tags"])
        for image_id in orphans - {row.id}:
            if session.scalar(select(func.count(FileRow.id)).where(FileRow.image_id == image_id)) == 0:
                session.execute(delete(ImageRow).where(ImageRow.id == image_id), execution_options={"synchronize_session": False})
        return is_new

    @staticmethod
    def _study(session: Session, study_uid: str, patient_key: str | None) -> StudyRow:
        study = session.scalar(select(StudyRow).where(StudyRow.study_uid == study_uid))
        if study is None:
            study = StudyRow(study_uid=study_uid, patient_key=patient_key)
            session.add(study)
        return study

    def _select(self) -> Any:
        num_files = select(func.count(FileRow.id)).where(FileRow.image_id == ImageRow.id).scalar_subquery()
        return select(ImageRow, StudyRow.study_uid, num_files).outerjoin(StudyRow).order_by(ImageRow.id)

    def save_labels(self, entries: Sequence[ImageLabelsEntry]) -> tuple[int, int, int]:
        """Give each catalogued image its dataset's labels, replacing those it had; returns
        ``(images labelled, label files attached, images removed)``.

        An image that was catalogued from a label file (an ingest that did not know it was
        one) is removed. An entry whose image is not in the catalog (it could not be read)
        is passed over.
        """
        labelled = attached = removed = 0
        label_paths = [f.path for entry in entries for f in entry.files]
        try:
            with Session(self._engine) as session, session.begin():
                for chunk in _chunks(label_paths):
                    owners = set(session.scalars(select(FileRow.image_id).where(FileRow.path.in_(chunk))))
                    session.execute(delete(FileRow).where(FileRow.path.in_(chunk)), execution_options={"synchronize_session": False})
                    for image_id in owners:
                        if session.scalar(select(func.count(FileRow.id)).where(FileRow.image_id == image_id)) == 0:
                            session.execute(delete(ImageRow).where(ImageRow.id == image_id), execution_options={"synchronize_session": False})
                            removed += 1
                owner_of = self._owners(session, [entry.image_path for entry in entries])
                for entry in entries:
                    image_id = owner_of.get(entry.image_path)
                    if image_id is None:
                        continue
                    session.execute(delete(LabelFileRow).where(LabelFileRow.image_id == image_id))
                    # a file's synthetic mark stays unless the dataset's labels say otherwise
                    kept = [] if SYNTHETIC in entry.tags else [TagRow.key != SYNTHETIC]
                    session.execute(delete(TagRow).where(TagRow.image_id == image_id, *kept))
                    if entry.files:
                        session.execute(insert(LabelFileRow), [{"image_id": image_id, **asdict(f)} for f in entry.files])
                    if entry.tags:
                        session.execute(insert(TagRow), [{"image_id": image_id, "key": key, "value": value}
                                                         for key, value in entry.tags.items()])
                    labelled += bool(entry.files or entry.tags)
                    attached += len(entry.files)
        except OperationalError as exc:
            raise self._write_failed(exc) from None
        return labelled, attached, removed

    @staticmethod
    def _owners(session: Session, paths: Sequence[str]) -> dict[str, int]:
        """``{path: image id}`` for the paths that are an image's file or a series' folder."""
        owners: dict[str, int] = {}
        for chunk in _chunks(paths):
            owners.update(session.execute(select(ImageRow.source_path, ImageRow.id).where(ImageRow.source_path.in_(chunk))).all())
            owners.update(session.execute(select(FileRow.path, FileRow.image_id).where(FileRow.path.in_(chunk))).all())
        return owners

    @staticmethod
    def _record(row: ImageRow, study_uid: str | None, num_files: int, files: Sequence[FileRow] | None = None) -> ImageRecord:
        return ImageRecord(
            id=row.id, dataset=row.dataset, format=row.format, source_path=row.source_path,
            modality=row.modality, body_part=row.body_part, description=row.description,
            shape=tuple(row.shape), spacing=tuple(row.spacing), orientation=row.orientation,
            study_uid=study_uid, study_id=row.study_id, series_uid=row.series_uid, patient_key=row.patient_key,
            num_files=num_files, metadata=row.metadata_, added_at=row.added_at,
            updated_at=row.updated_at, phi=row.phi,
            files=None if files is None else tuple(FileRecord(f.path, f.size, f.mtime_ns, f.sha256) for f in files),
            label_files=tuple(LabelFileRecord(f.name, f.path, f.size, f.mtime_ns, f.sha256) for f in row.label_files),
            tags={tag.key: tag.value for tag in row.tags},
        )

    def query(
        self,
        modality: str | None = None,
        body_part: str | None = None,
        dataset: str | None = None,
        text: str | None = None,
        limit: int | None = None,
        with_files: bool = False,
        where: Mapping[str, str] | None = None,
        has_mask: bool = False,
        synthetic: bool | None = None,
    ) -> list[ImageRecord]:
        """Images matching every given filter, oldest first; ``with_files`` fills each one's files.

        ``modality`` and ``body_part`` match whole values, ignoring case; ``dataset``
        matches exactly; ``text`` is a case-insensitive substring of the description,
        source path or dataset name; ``where`` (``{"diagnosis": "melanoma"}``) matches
        tags' whole values, ignoring case; ``has_mask`` keeps images with a ``mask``;
        ``synthetic``: False leaves out images marked synthetic (a generator made them: what
        evaluation sets want), True keeps only those, None (default) keeps both.
        """
        if limit is not None and limit < 1:
            raise MedfmError(f"limit must be a positive number of images, got {limit}")
        stmt = self._select()
        if modality:
            stmt = stmt.where(ImageRow.modality == modality.upper())
        if body_part:
            stmt = stmt.where(ImageRow.body_part == body_part.upper())
        if dataset:
            stmt = stmt.where(ImageRow.dataset == dataset)
        if text:
            columns = (ImageRow.description, ImageRow.source_path, ImageRow.dataset)
            stmt = stmt.where(or_(*(column.icontains(text, autoescape=True) for column in columns)))
        for key, value in (where or {}).items():
            stmt = stmt.where(ImageRow.tags.any(and_(TagRow.key == key, func.lower(TagRow.value) == value.lower())))
        if has_mask:
            stmt = stmt.where(ImageRow.label_files.any(LabelFileRow.name == MASK))
        if synthetic is not None:
            marked = ImageRow.tags.any(and_(TagRow.key == SYNTHETIC, func.lower(TagRow.value) == "true"))
            stmt = stmt.where(marked if synthetic else ~marked)
        if limit is not None:
            stmt = stmt.limit(min(limit, MAX_ID))
        stmt = stmt.options(selectinload(ImageRow.label_files), selectinload(ImageRow.tags))
        if with_files:
            stmt = stmt.options(selectinload(ImageRow.files))
        with Session(self._engine) as session:
            return [self._record(*row, files=row[0].files if with_files else None) for row in session.execute(stmt)]

    def overview(self, modality: str | None = None, body_part: str | None = None,
                 dataset: str | None = None) -> list[ImageOverview]:
        """Every image matching the filters (as :meth:`query` matches them) in a few columns, oldest first:
        cheap enough to sort and page tens of thousands (:mod:`medfm.catalog.browse`)."""
        columns = (ImageRow.id, ImageRow.dataset, ImageRow.format, ImageRow.source_path, ImageRow.modality,
                   ImageRow.body_part, ImageRow.description, ImageRow.patient_key, ImageRow.study_id)
        stmt = select(*columns).order_by(ImageRow.id)
        if modality:
            stmt = stmt.where(ImageRow.modality == modality.upper())
        if body_part:
            stmt = stmt.where(ImageRow.body_part == body_part.upper())
        if dataset:
            stmt = stmt.where(ImageRow.dataset == dataset)
        with Session(self._engine) as session:
            return [ImageOverview(*row) for row in session.execute(stmt)]

    def page(self, order: str = "added", descending: bool = False, offset: int = 0, limit: int | None = None,
             modality: str | None = None, body_part: str | None = None, dataset: str | None = None) -> tuple[list[ImageRecord], int]:
        """``(images, total)``: the images matching the filters (as :meth:`query`), sorted by the
        database in ``order`` (:data:`PAGE_ORDERS`), from ``offset``, at most ``limit``; ``total``
        counts every match. Only the page is read: a page of a million images costs what a small one does."""
        if order not in PAGE_ORDERS:
            raise MedfmError(f"order must be one of {', '.join(PAGE_ORDERS)}; got {order!r}")
        conditions = []
        if modality:
            conditions.append(ImageRow.modality == modality.upper())
        if body_part:
            conditions.append(ImageRow.body_part == body_part.upper())
        if dataset:
            conditions.append(ImageRow.dataset == dataset)
        keys = [column.desc() if descending else column.asc() for column in PAGE_ORDERS[order]()]
        stmt = self._select().where(*conditions).order_by(None).order_by(*keys).offset(min(offset, MAX_ID))
        if limit is not None:
            stmt = stmt.limit(min(limit, MAX_ID))
        stmt = stmt.options(selectinload(ImageRow.label_files), selectinload(ImageRow.tags))
        with Session(self._engine) as session:
            total = session.scalar(select(func.count(ImageRow.id)).where(*conditions))
            return [self._record(*row) for row in session.execute(stmt)], total

    def modalities(self) -> list[str]:
        """The modalities the catalog holds, sorted (one indexed query, whatever the catalog's size)."""
        with Session(self._engine) as session:
            return sorted(session.scalars(select(ImageRow.modality).distinct()))

    def get_many(self, image_ids: Sequence[int]) -> list[ImageRecord]:
        """The images ``image_ids`` in that order (without their file lists); ids not in the catalog are left out."""
        found: dict[int, ImageRecord] = {}
        with Session(self._engine) as session:
            for chunk in _chunks(list(image_ids)):
                stmt = self._select().where(ImageRow.id.in_(chunk))
                stmt = stmt.options(selectinload(ImageRow.label_files), selectinload(ImageRow.tags))
                found.update((row[0].id, self._record(*row)) for row in session.execute(stmt))
        return [found[i] for i in image_ids if i in found]

    def delete(self, image_ids: Sequence[int]) -> int:
        """Remove images (with their file, label and tag rows; never the files on disk) and the
        studies left without images; returns how many images were removed."""
        removed = 0
        try:
            with Session(self._engine) as session, session.begin():
                for chunk in _chunks(list(image_ids)):
                    studies = set(session.scalars(select(ImageRow.study_id).where(ImageRow.id.in_(chunk))))
                    for table in (FileRow, LabelFileRow, TagRow):  # not left to ON DELETE: SQLite enforces it only when asked
                        session.execute(delete(table).where(table.image_id.in_(chunk)), execution_options={"synchronize_session": False})
                    removed += session.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)),
                                               execution_options={"synchronize_session": False}).rowcount
                    for study_id in studies - {None}:
                        if session.scalar(select(func.count(ImageRow.id)).where(ImageRow.study_id == study_id)) == 0:
                            session.execute(delete(StudyRow).where(StudyRow.id == study_id))
        except OperationalError as exc:
            raise self._write_failed(exc) from None
        return removed

    def rename(self, image_id: int, description: str) -> ImageRecord:
        """Set an image's description, the name lists show it by (:func:`medfm.catalog.browse.display_name`)."""
        description = description.strip() if isinstance(description, str) else ""
        if not description or len(description) > MAX_DESCRIPTION:
            raise MedfmError(f"an image's name must be 1 to {MAX_DESCRIPTION} characters; got {len(description)}")
        self.get(image_id)  # a clear error for an unknown id
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(update(ImageRow).where(ImageRow.id == image_id).values(description=description))
        except OperationalError as exc:
            raise self._write_failed(exc) from None
        return self.get(image_id)

    def count(self) -> int:
        """How many images the catalog holds."""
        with Session(self._engine) as session:
            return session.scalar(select(func.count(ImageRow.id)))

    def get(self, image_id: int) -> ImageRecord:
        """One image with its file list."""
        if not 0 < image_id <= MAX_ID:  # ids are positive 64-bit integers: nothing else can be one
            raise MedfmError(f"catalog {self.url} has no image with id {image_id}")
        with Session(self._engine) as session:
            stmt = self._select().where(ImageRow.id == image_id)
            row = session.execute(stmt.options(selectinload(ImageRow.label_files), selectinload(ImageRow.tags))).first()
            if row is None:
                raise MedfmError(f"catalog {self.url} has no image with id {image_id}")
            return self._record(*row, files=row[0].files)


def open_catalog(url: str | None = None, *, existing: bool = False) -> Catalog:
    """Open (creating if needed) the catalog at ``url``.

    ``None`` means :func:`medfm.paths.default_catalog_url` (``$MEDFM_CATALOG``, else
    SQLite in the per-user data directory). ``postgresql://`` URLs use psycopg 3; a path
    without a scheme is a SQLite file.

    ``existing=True`` is for callers that only use what is there: a SQLite file named by
    ``url`` or ``$MEDFM_CATALOG`` that does not exist is refused, as most likely a mistyped
    path rather than a wish for a new empty catalog. The per-user default catalog is still
    created, so that a fresh install reads an empty catalog.
    """
    from medfm.paths import CATALOG_ENV, default_catalog_url

    from_env = url is None and bool(os.environ.get(CATALOG_ENV))
    named = url or os.environ.get(CATALOG_ENV)
    url = normalize_url(named or default_catalog_url())
    try:
        parsed = make_url(url)
        is_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        sqlite_file = Path(parsed.database).expanduser() if is_file else None
        # a path is shown as the user typed it (not the URL made of it), and where it came from when not typed
        shown = display_path(named if named and "://" not in named else sqlite_file) if sqlite_file else _safe_url(url)
        shown += f" (${CATALOG_ENV})" if from_env else ""
        if existing and named and sqlite_file and not sqlite_file.exists():
            raise MedfmError(f"{shown}: no catalog there; medfm ingest creates one")
        if sqlite_file:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, **({"connect_args": {"timeout": 30}} if parsed.get_backend_name() == "sqlite" else {}))
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise MedfmError(f"cannot use catalog URL {_safe_url(url)}: {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise MedfmError(f"cannot create the catalog folder for {_safe_url(url)}: {exc.strerror or exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        return Catalog(engine)
    except DatabaseError as exc:  # OperationalError among them: locked, unreachable, not allowed
        engine.dispose()
        lines = str(exc.orig or exc).strip().splitlines()
        reason = lines[0] if lines else "connection failed"
        if sqlite_file and not isinstance(exc, OperationalError):  # SQLite read the file and found no database in it
            reason = f"not an SQLite database ({reason})"
        raise MedfmError(f"cannot open catalog {shown}: {reason}") from None
    except MedfmError:
        engine.dispose()
        raise
