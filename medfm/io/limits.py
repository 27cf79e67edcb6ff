"""Decompression limits: refuse, from headers alone, a file that would decode to too many bytes.

Readers call :func:`check_decoded_size` with the size a header claims before allocating
anything, so a 1.5 MB archive of zeros that inflates to 1.5 GB is refused in one line
instead of filling memory. Two limits, set by environment variables (the CLI, the server
and library calls all read them):

- ``MEDFM_MAX_DECODED_BYTES``: the most bytes one image may decode to (default 8 GiB);
- ``MEDFM_MAX_INFLATION_RATIO``: the most a file may expand (decoded / on-disk bytes,
  default 200), applied only to images over ``RATIO_FLOOR_BYTES`` decoded, as small
  sparse masks legitimately compress several hundredfold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medfm.errors import MedfmError, UnreadableFileError

DEFAULT_MAX_DECODED_BYTES = 8 * 2**30
DEFAULT_MAX_INFLATION_RATIO = 200.0
#: Images that decode to less than this are never refused for their inflation ratio.
RATIO_FLOOR_BYTES = 256 * 2**20


class DecompressionBombError(UnreadableFileError):
    """A file whose header claims more decoded bytes than the limits allow."""


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_ratio: float = DEFAULT_MAX_INFLATION_RATIO


def positive_env_number(name: str, default: float, kind: type) -> float:
    """The positive number environment variable ``name`` holds (``kind`` int or float), else ``default``."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        raise MedfmError(f"{name}={text!r} is not a number; give e.g. {kind(default)}") from None
    if value <= 0:
        raise MedfmError(f"{name}={text!r} must be positive")
    return value


def decode_limits() -> DecodeLimits:
    """The limits in force, from the environment (read at each call, so tests and servers can change them)."""
    return DecodeLimits(
        int(positive_env_number("MEDFM_MAX_DECODED_BYTES", DEFAULT_MAX_DECODED_BYTES, int)),
        float(positive_env_number("MEDFM_MAX_INFLATION_RATIO", DEFAULT_MAX_INFLATION_RATIO, float)),
    )


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def check_decoded_size(path: Path, decoded_bytes: int, stored_bytes: int | None, what: str = "image") -> None:
    """Refuse ``path`` if ``what`` would decode to more than the limits allow.

    ``decoded_bytes`` is what the header claims; ``stored_bytes`` what the file (or the
    compressed member) occupies on disk, or None where only the byte limit applies (video
    codecs legitimately compress static scenes a thousandfold).
    """
    limits = decode_limits()
    if decoded_bytes > limits.max_bytes:
        raise DecompressionBombError(
            path, f"{what} would decode to {_size(decoded_bytes)}, over the {_size(limits.max_bytes)} limit (MEDFM_MAX_DECODED_BYTES)"
        )
    if stored_bytes is None:
        return
    ratio = decoded_bytes / max(stored_bytes, 1)
    if decoded_bytes > RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
        raise DecompressionBombError(
            path,
            f"{what} would inflate {ratio:,.0f}-fold, from {_size(stored_bytes)} to {_size(decoded_bytes)}: "
            f"a decompression bomb? (limit {limits.max_ratio:g}-fold, MEDFM_MAX_INFLATION_RATIO)",
        )
