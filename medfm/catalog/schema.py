"""The catalog's tables: studies, images (one per DICOM series or per image file), files,
and a dataset's labels of an image: its label files (masks) and tags (manifest columns).

The same models serve SQLite and PostgreSQL. Patient identifiers are kept only in
``images.phi``; ``patient_key`` is a keyed hash of the patient ID (see
:meth:`medfm.catalog.store.Catalog.patient_key`), so that images can be grouped by
patient without the raw ID.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Bumped whenever a table changes; a catalog written with another version is migrated
#: (:data:`MIGRATIONS`) or refused.
SCHEMA_VERSION = "2"
#: ``{old version: the version it becomes}`` for catalogs that need only the tables
#: ``create_all`` adds: version 2 added ``label_files`` and ``tags``.
MIGRATIONS = {"1": "2"}


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class MetaRow(Base):
    """Catalog-wide settings: ``schema_version`` and the patient-key secret."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    patient_key: Mapped[str | None] = mapped_column(String(64), index=True)

    images: Mapped[list[ImageRow]] = relationship(back_populates="study")


class ImageRow(Base):
    """One image: a DICOM series (many files) or a single image file."""

    __tablename__ = "images"
    # The workbench filters by modality and body part together and pages by id: one index
    # answers both filters in id order (separate ones leave the database to intersect or
    # scan). Catalogs created before it lack it and stay correct, only slower.
    __table_args__ = (Index("ix_images_modality_body_part", "modality", "body_part"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    series_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    dataset: Mapped[str | None] = mapped_column(String(200), index=True)
    format: Mapped[str] = mapped_column(String(32))
    source_path: Mapped[str] = mapped_column(Text)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    body_part: Mapped[str | None] = mapped_column(String(64), index=True)
    description: Mapped[str | None] = mapped_column(Text)
    patient_key: Mapped[str | None] = mapped_column(String(64), index=True)
    shape: Mapped[list[Any]]
    spacing: Mapped[list[Any]]
    orientation: Mapped[str] = mapped_column(String(8))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    phi: Mapped[dict[str, Any]]
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), onupdate=func.now())

    study: Mapped[StudyRow | None] = relationship(back_populates="images")
    files: Mapped[list[FileRow]] = relationship(back_populates="image", cascade="all, delete-orphan", order_by="FileRow.path")
    label_files: Mapped[list[LabelFileRow]] = relationship(cascade="all, delete-orphan", passive_deletes=True,
                                                           order_by=lambda: (LabelFileRow.name, LabelFileRow.path))
    tags: Mapped[list[TagRow]] = relationship(cascade="all, delete-orphan", passive_deletes=True, order_by="TagRow.id")


class FileRow(Base):
    """A file on disk, keyed by its resolved path; size and mtime tell whether it changed."""

    __tablename__ = "files"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)

    image: Mapped[ImageRow] = relationship(back_populates="files")


class LabelFileRow(Base):
    """A file of labels for one image: its mask (``name`` = ``mask``) or another annotation file
    a manifest column names (``fov_mask``...). Not an image of its own: never in ``files``."""

    __tablename__ = "label_files"
    __table_args__ = (UniqueConstraint("image_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class TagRow(Base):
    """A dataset's word about one image (a manifest column: diagnosis, subject, split), searchable.

    Values are not indexed: a PostgreSQL index refuses long values such as captions."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("image_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    value: Mapped[str] = mapped_column(Text)
