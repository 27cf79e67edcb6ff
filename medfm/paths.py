"""Where medfm keeps its own files: the per-user data directory and the default catalog."""

from __future__ import annotations

import os
from pathlib import Path

#: Overrides :func:`data_dir`.
DATA_DIR_ENV = "MEDFM_DATA_DIR"
#: Overrides :func:`default_catalog_url`.
CATALOG_ENV = "MEDFM_CATALOG"


def data_dir() -> Path:
    """``$MEDFM_DATA_DIR`` if set, else the platform's per-user data folder for medfm.

    The folder is not created here; writers create it when they first need it.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("medfm"))


def default_catalog_url() -> str:
    """``$MEDFM_CATALOG`` if set, else a SQLite file ``catalog.db`` in :func:`data_dir`."""
    return os.environ.get(CATALOG_ENV) or f"sqlite:///{data_dir() / 'catalog.db'}"
