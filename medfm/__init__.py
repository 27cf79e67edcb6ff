"""medfm: offline-first medical imaging foundation-model toolkit."""

from importlib.metadata import PackageNotFoundError, version

from medfm.io import Image, load, load_all, save

try:
    __version__ = version("medfm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["Image", "__version__", "load", "load_all", "save"]
