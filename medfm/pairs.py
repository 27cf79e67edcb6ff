"""``KEY=VALUE`` texts as dicts, one parser for every surface: ``--where modality=CT`` (CLI and REST
search, catalog queries, batches), ``--rule min_score=0.5`` and ``--plan batch_size=4``."""

from __future__ import annotations

from collections.abc import Sequence

from medfm.errors import MedfmError


def parse_pairs(pairs: Sequence[str], option: str, example: str) -> dict[str, str]:
    """``pairs`` as ``{KEY: VALUE}`` (both stripped); ``option`` and ``example`` word the error for a pair
    without ``=`` or without a key."""
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MedfmError(f"{option} takes KEY=VALUE (e.g. {example}); got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed
