"""medfm: offline-first medical imaging foundation-model toolkit.

The public names load their modules on first use (PEP 562), so that ``import medfm`` and
the command line's start-up (``medfm --help``) do not pay for numpy, nibabel or pydicom.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfm.io import Image, load, load_all, save
    from medfm.threads import set_threads

#: Public name → the module that defines it.
_LAZY = {"Image": "medfm.io", "load": "medfm.io", "load_all": "medfm.io", "save": "medfm.io",
         "set_threads": "medfm.threads"}

__all__ = ["Image", "__version__", "load", "load_all", "save", "set_threads"]


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medfm")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _installed_version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'medfm' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
