"""Where medfm keeps its own files (the per-user data directory and the default catalog) and where the
project's shared datasets are."""

from __future__ import annotations

import os
from pathlib import Path

#: Overrides :func:`data_dir`.
DATA_DIR_ENV = "MEDFM_DATA_DIR"
#: Overrides :func:`default_catalog_url`.
CATALOG_ENV = "MEDFM_CATALOG"
#: The data directory's folder of search indexes of its catalog, one per encoder.
INDEX_FOLDER = "index"
#: Overrides :func:`shared_data_dir`.
SHARED_DATA_ENV = "MEDFM_SHARED_DATA"


def data_dir() -> Path:
    """``$MEDFM_DATA_DIR`` if set, else the platform's per-user data folder for medfm.

    The folder is not created here; writers create it when they first need it.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("medfm"))


def catalog_index_dir(root: Path, encoder: str) -> Path:
    """The search index of the catalog of data directory ``root`` for ``encoder`` (``medfm serve`` builds it)."""
    return root / INDEX_FOLDER / encoder


def catalog_index_dirs(root: Path) -> list[Path]:
    """Every search index of the catalog of data directory ``root``, one per encoder it was built with."""
    folder = root / INDEX_FOLDER
    return sorted(path for path in folder.iterdir() if path.is_dir()) if folder.is_dir() else []


def default_catalog_url() -> str:
    """``$MEDFM_CATALOG`` if set, else a SQLite file ``catalog.db`` in :func:`data_dir`."""
    return os.environ.get(CATALOG_ENV) or f"sqlite:///{data_dir() / 'catalog.db'}"


def shared_data_dir() -> Path:
    """``$MEDFM_SHARED_DATA`` if set, else ``shared/data`` beside the repository (``../shared/data``
    from its root): the public datasets that training, benchmarks and integration tests use.

    Found from the package's location, never from the working directory. It may not exist:
    callers that need it say so (integration tests skip, trainers raise).
    """
    override = os.environ.get(SHARED_DATA_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"
