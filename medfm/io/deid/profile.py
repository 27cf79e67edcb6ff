"""The action table of DICOM PS3.15 Table E.1-1 (Basic Profile), shipped as ``basic_profile.json``.

Actions are the standard's letters: ``D`` dummy value, ``Z`` zero length, ``X`` remove,
``U`` new UID, and compounds such as ``X/Z/D`` (the first, unless a later one is needed
to keep the object valid) or ``X/Z/U*`` (a sequence kept with every UID in it replaced).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pydicom.datadict import keyword_for_tag

TABLE_FILE = "basic_profile.json"


@dataclass(frozen=True)
class Rule:
    """One row of the table: ``tag`` as an int ``0xGGGGEEEE`` and the Basic Profile action."""

    tag: int
    keyword: str
    action: str


@cache
def table() -> dict:
    """The shipped table as read from JSON: ``profile``, ``standard``, ``attributes``, ..."""
    return json.loads(resources.files(__package__).joinpath(TABLE_FILE).read_text(encoding="utf-8"))


@cache
def _rules() -> dict[int, Rule]:
    return {int(row["tag"], 16): Rule(int(row["tag"], 16), row["keyword"], row["action"]) for row in table()["attributes"]}


@cache
def _repeating_groups() -> frozenset[int]:
    # The table removes Curve Data (50xx) and Overlay Data/Comments (60xx). An overlay
    # plane without its type 1 Overlay Data is invalid, so whole groups go, which also
    # drops any text an overlay label or description holds.
    return frozenset(int(row["tag"][:2], 16) for row in table()["repeating_groups"])


def rule_for(tag: int) -> Rule | None:
    """The Basic Profile rule for a public ``tag``, or None when the profile keeps it."""
    rule = _rules().get(tag)
    if rule is not None:
        return rule
    group = tag >> 16
    if group >> 8 in _repeating_groups() and group & 0xFF <= 0x1E and group % 2 == 0:
        return Rule(tag, keyword_for_tag(tag) or f"{group >> 8:02X}xx group", "X")
    return None


def profile_name() -> str:
    """The profile and the standard's edition that the shipped table follows."""
    return f"{table()['profile']} ({table()['standard']})"
