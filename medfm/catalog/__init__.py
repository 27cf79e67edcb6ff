"""The catalog: what images exist, where, and what they are.

``ingest(paths)`` walks folders and records every image (a DICOM series or an image
file) with its metadata and file hashes; ``open_catalog(url).query(...)`` finds them
again. SQLite in the per-user data directory by default; PostgreSQL by URL.
"""

from medfm.catalog.ingestion import IngestReport, ingest
from medfm.catalog.store import Catalog, FileRecord, ImageRecord, open_catalog

__all__ = ["Catalog", "FileRecord", "ImageRecord", "IngestReport", "ingest", "open_catalog"]
