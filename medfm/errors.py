"""Errors that medfm reports to users as one line.

Every error raised for bad input is a :class:`MedfmError`; the CLI prints its message
alone and exits non-zero, so messages must name the file and what is wrong, and must
never contain patient identifiers.
"""

from __future__ import annotations

import os


class MedfmError(Exception):
    """A problem with the user's input or request, explained in one line."""


class FileError(MedfmError):
    """A problem with one file: its ``path`` and the ``reason`` as fields, the message ``"<path>: <reason>"``.

    A caller that must not show the path (it may name the patient) words its own message
    from ``reason``, never by cutting the text apart.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{display_path(path)}: {reason}")

    def __reduce__(self) -> tuple:
        # rebuilt from its fields, not its message, so that it crosses to another process (a Ray worker's) whole
        return type(self), (self.path, self.reason)


class UnreadableFileError(FileError):
    """A file that medfm cannot read as an image."""


class UnsupportedError(MedfmError):
    """An input medfm recognises but refuses to convert, with the reason."""


def display_path(path: str | os.PathLike) -> str:
    """The path as text that is safe to print, whatever bytes its name holds."""
    text = os.fsdecode(path)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
