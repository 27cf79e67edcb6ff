"""Errors that medfm reports to users as one line.

Every error raised for bad input is a :class:`MedfmError`; the CLI prints its message
alone and exits non-zero, so messages must name the file and what is wrong, and must
never contain patient identifiers.
"""

from __future__ import annotations

import errno
import os
import re


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


#: The name prefix of the temporary file that stands in for an output while it is written
#: (:func:`medfm.io.formats.atomic_path`); users only ever see their output's own name.
TEMP_PREFIX = ".medfm-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[^-]*-")

#: OS errors that describe the user's files, folders or disk (a read-only or full disk, a missing folder,
#: no permission), which the user can act on; any other OS error is medfm's own.
USER_ENVIRONMENT_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
    errno.ENAMETOOLONG, errno.EEXIST, errno.ENOENT, errno.EFBIG,
})


def user_file_name(path: str | os.PathLike) -> str:
    """``path`` as printable text, a medfm temporary file named as the output it stands in for."""
    folder, name = os.path.split(os.fsdecode(path))
    if name.startswith(TEMP_PREFIX):
        name = _TEMP_NAME.sub("", name, count=1)
    return display_path(os.path.join(folder, name))


def os_error_text(exc: OSError) -> str:
    """``exc`` in one line: ``"<file>: <reason>"`` (the file as :func:`user_file_name` names it), or the reason alone."""
    reason = exc.strerror or type(exc).__name__
    named = isinstance(exc.filename, (str, bytes, os.PathLike)) and os.fspath(exc.filename)
    return f"{user_file_name(exc.filename)}: {reason}" if named else reason
