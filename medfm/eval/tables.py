"""Reading the CSV tables that classification evaluation joins: one row per id."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from medfm.errors import MedfmError, display_path


@dataclass(frozen=True)
class Table:
    """``rows[id][column]`` as text, in file order; ``columns`` excludes the id column."""

    path: Path
    columns: list[str]
    rows: dict[str, dict[str, str]]

    def require(self, columns: list[str], what: str) -> None:
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise MedfmError(
                f"{display_path(self.path)}: no {what} column {', '.join(map(repr, missing))}; "
                f"columns are {', '.join(self.columns)}"
            )

    def number(self, row_id: str, column: str) -> float:
        text = self.rows[row_id][column].strip()
        try:
            return float(text)
        except ValueError:
            raise MedfmError(
                f"{display_path(self.path)}: id {row_id!r}, column {column!r}: {text!r} is not a number"
            ) from None


def read_table(path: str | os.PathLike, id_column: str) -> Table:
    """A CSV file with a header row and unique values in ``id_column``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if id_column not in header:
                found = ", ".join(header) if header else "none (empty file)"
                raise MedfmError(f"{display_path(path)}: no id column {id_column!r}; columns are {found}")
            rows: dict[str, dict[str, str]] = {}
            for line, record in enumerate(reader, start=2):
                if None in record or any(v is None for v in record.values()):
                    raise MedfmError(f"{display_path(path)}: line {line} has a different number of fields than the header")
                row_id = record.pop(id_column).strip()
                if row_id in rows:
                    raise MedfmError(f"{display_path(path)}: id {row_id!r} appears more than once (line {line})")
                rows[row_id] = record
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MedfmError(f"{display_path(path)}: not a readable CSV file ({exc})") from None
    return Table(path, [c for c in header if c != id_column], rows)
