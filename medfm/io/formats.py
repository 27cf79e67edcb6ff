"""One registry of image formats behind :func:`load` and :func:`save`.

Each format module registers a reader and/or writer with :func:`register_format`.
``load`` picks the format from the path (a folder is a DICOM series, otherwise the
suffix, otherwise the file's first bytes); ``save`` picks it from the output suffix
and writes through a temporary file so that a failed write never leaves a partial file.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from medfm.errors import TEMP_PREFIX, FileError, MedfmError, UnreadableFileError, display_path
from medfm.io.image import Image

Reader = Callable[[Path], list[Image]]
Writer = Callable[[Image, Path], None]
Sniffer = Callable[[bytes], bool]

SNIFF_BYTES = 512
#: Deflate (gzip, zlib) expands data at most 1032-fold, which bounds what a compressed file can hold.
MAX_DEFLATE_RATIO = 1032

# mkstemp creates owner-only files; outputs get the permissions that open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass(frozen=True)
class Format:
    """A file format: its name, suffixes and the functions that read and write it.

    ``read`` returns every image the path holds (a DICOM folder may hold several series);
    ``probe``, where a format has one, returns the same images from headers alone, with
    zero-strided stand-in arrays, for cataloguing without decoding voxels.
    ``keeps_provenance``: the writer stores :attr:`Image.provenance` and the reader gives it
    back; :func:`save` refuses an image with provenance in any other format.
    """

    name: str
    suffixes: tuple[str, ...]
    read: Reader | None = None
    write: Writer | None = None
    sniff: Sniffer | None = None
    reads_folders: bool = False
    probe: Reader | None = None
    keeps_provenance: bool = False


_FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    _FORMATS[fmt.name] = fmt
    return fmt


def registered_formats() -> dict[str, Format]:
    """The registered formats by name."""
    return dict(_FORMATS)


def _suffix_match(path: Path) -> tuple[str, Format] | None:
    name = path.name.lower()
    best: tuple[str, Format] | None = None
    for fmt in _FORMATS.values():
        for suffix in fmt.suffixes:
            if name.endswith(suffix) and len(name) > len(suffix) and (best is None or len(suffix) > len(best[0])):
                best = (suffix, fmt)
    return best


def image_suffix(path: str | os.PathLike) -> str | None:
    """The registered suffix that ``path``'s name ends with (the longest: ``.nii.gz``), if any."""
    match = _suffix_match(Path(os.fsdecode(path)))
    return match[0] if match else None


def detect_format(path: str | os.PathLike) -> Format:
    """The format that can read ``path``, or a one-line error saying why none can."""
    path = Path(os.fsdecode(path))
    if path.is_dir():
        for fmt in _FORMATS.values():
            if fmt.reads_folders:
                return fmt
        raise UnreadableFileError(path, "is a folder and no folder reader is registered")
    if not path.exists():
        raise UnreadableFileError(path, "no such file")
    if path.stat().st_size == 0:
        raise UnreadableFileError(path, "file is empty (0 bytes)")
    match = _suffix_match(path)
    if match is not None and match[1].read is not None:
        return match[1]
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot open ({exc.strerror or exc})") from None
    for fmt in _FORMATS.values():
        if fmt.read is not None and fmt.sniff is not None and fmt.sniff(head):
            return fmt
    raise UnreadableFileError(path, "not a recognised image format")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    return reason[:200]


def load_all(path: str | os.PathLike) -> list[Image]:
    """Every image that ``path`` holds: one for most files, one per series for a DICOM folder."""
    return _read(path, header_only=False)


def probe_all(path: str | os.PathLike) -> list[Image]:
    """Like :func:`load_all`, from headers alone where the format allows (arrays are stand-ins)."""
    return _read(path, header_only=True)


def _read(path: str | os.PathLike, header_only: bool) -> list[Image]:
    path = Path(os.fsdecode(path))
    fmt = detect_format(path)
    reader = fmt.probe if header_only and fmt.probe else fmt.read
    try:
        images = reader(path)
    except FileError:
        raise
    except MedfmError as exc:  # a reader's own check: give it the file, so callers have path and reason as fields
        raise UnreadableFileError(path, str(exc)) from None
    except MemoryError:
        raise UnreadableFileError(path, "image is too large to fit in memory") from None
    except Exception as exc:  # a reader library's own error becomes one line naming the file
        raise UnreadableFileError(path, f"cannot read as {fmt.name}: {first_line(exc)}") from None
    if not images:
        raise UnreadableFileError(path, f"no {fmt.name} image found")
    for image in images:
        if image.array.size == 0:
            raise UnreadableFileError(path, f"image has no voxels (shape {image.shape}, I, J, K, T, C)")
    return images


def load(path: str | os.PathLike) -> Image:
    """Read one image (file or DICOM series folder) with its geometry and metadata."""
    images = load_all(path)
    if len(images) > 1:
        raise UnreadableFileError(
            path, f"holds {len(images)} DICOM series; give one series' own folder or file (medfm convert splits "
                  "them into files; in Python, load_all reads each)"
        )
    return images[0]


def check_claimed_size(path: Path, shape: Sequence[int], itemsize: int, room: int) -> None:
    """Refuse, before allocating, a header that claims more voxel bytes than the file has ``room`` for."""
    claimed = math.prod(int(n) for n in shape) * itemsize
    if claimed > room:
        raise UnreadableFileError(
            path,
            f"header claims {'x'.join(str(int(n)) for n in shape)} voxels ({claimed:,} bytes) "
            f"but the file holds at most {room:,}: it is truncated or damaged",
        )


def writer_for(path: str | os.PathLike) -> Format:
    """The format that writes ``path``, chosen by its suffix."""
    match = _suffix_match(Path(os.fsdecode(path)))
    fmt = match[1] if match else None
    if fmt is None or fmt.write is None:
        writable = sorted({s for f in _FORMATS.values() if f.write for s in f.suffixes})
        raise MedfmError(
            f"{display_path(path)}: cannot choose an output format from the name; "
            f"use one of {', '.join(writable)}"
        )
    return fmt


#: Whether outputs may go into folders that do not exist yet (created on the way). Every command that
#: writes a file turns it off for its run unless given ``--mkdir`` (:mod:`medfm.cli.output`), so that a
#: mistyped ``-o`` is refused instead of growing a new directory tree; Python callers keep the
#: default (on) or set it (``CREATE_FOLDERS.set(False)``), or pass :func:`atomic_path`'s argument.
CREATE_FOLDERS: ContextVar[bool] = ContextVar("medfm_create_folders", default=True)


def check_output_folder(folder: str | os.PathLike, create: bool | None = None) -> Path:
    """``folder``, created if missing when ``create`` (default :data:`CREATE_FOLDERS`) allows it;
    else a missing folder raises :class:`MedfmError` naming it."""
    folder = Path(os.fsdecode(folder))
    if folder.is_dir():
        return folder
    if folder.exists():
        raise MedfmError(f"{display_path(folder)}: is a file, not a folder to write into")
    if not (CREATE_FOLDERS.get() if create is None else create):
        raise MedfmError(f"{display_path(folder)}: folder does not exist; create it first or pass --mkdir")
    _make_folder(folder, parents=True)
    return folder


def _make_folder(folder: Path, parents: bool) -> None:
    try:
        folder.mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise FileError(folder, f"cannot create the folder: {exc.strerror or first_line(exc)}") from None


@contextmanager
def output_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A folder for the block to write several outputs into: created if missing when its parent exists
    (like ``mkdir``), a whole missing tree only when :data:`CREATE_FOLDERS` allows it. The folders made
    here are removed again after the block when it wrote nothing into them (every input failed, or the
    command refused), so that a failed command leaves no trace."""
    folder = Path(os.fsdecode(folder))
    missing = [f for f in (folder, *folder.parents) if not f.exists()]  # deepest first
    if not folder.exists() and folder.parent.is_dir():
        _make_folder(folder, parents=False)
    check_output_folder(folder)
    try:
        yield folder
    finally:
        for made in missing:
            try:
                made.rmdir()
            except OSError:  # not empty: the block wrote into it
                break


#: Files up to this size are hashed from one read (``file_digest`` zero-fills a 256 KiB buffer per call).
WHOLE_READ_BYTES = 1 << 20


def sha256_of(path: str | os.PathLike) -> str:
    """The file's SHA-256 as hex: a small file from one read, a large one in chunks."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size <= WHOLE_READ_BYTES:
            return hashlib.sha256(handle.read()).hexdigest()
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike, create_folders: bool | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds.

    The temporary name keeps the final suffix, for libraries that choose the encoding
    from it (``.nii.gz``). A missing parent folder is refused unless ``create_folders``
    (default: :data:`CREATE_FOLDERS`) allows creating it: outputs only; medfm's own
    caches pass ``True``.
    """
    path = Path(path)
    check_output_folder(path.parent, create_folders)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="-" + path.name, dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except OSError as exc:
            if not is_write_failure(exc):
                raise
            raise cannot_write(path, exc) from None
        try:
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            os.replace(tmp_path, path)
        except OSError as exc:
            raise cannot_write(path, exc) from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: The errors of writing a file that the disk gives: full, over quota, read-only, not allowed.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def is_write_failure(exc: OSError) -> bool:
    """Whether ``exc``, raised while writing an :func:`atomic_path`, is the output's disk refusing the write:
    an error on the temporary file itself, or a disk error that names no file (``write()`` on an open file)."""
    if isinstance(exc.filename, (str, bytes, os.PathLike)) and os.fspath(exc.filename):
        return os.path.basename(os.fsdecode(exc.filename)).startswith(TEMP_PREFIX)
    return exc.errno in _DISK_ERRNOS


def cannot_write(path: str | os.PathLike, exc: OSError) -> FileError:
    """The one-line error for an output that the OS would not let medfm write, with the OS's reason."""
    return FileError(path, f"cannot write: {exc.strerror or first_line(exc)}")


def save(image: Image, path: str | os.PathLike) -> Path:
    """Write ``image`` in the format its suffix names; nothing is left behind on failure.

    An image with :attr:`~Image.provenance` (a model made it) is written only where the
    record travels with it (PNG, NIfTI): elsewhere it would lose what made it (and whether
    it is synthetic) without a word.
    """
    path = Path(os.fsdecode(path))
    fmt = writer_for(path)
    if image.provenance is not None and not fmt.keeps_provenance:
        keeping = sorted(s for f in _FORMATS.values() if f.keeps_provenance and f.write for s in f.suffixes)
        raise MedfmError(f"{display_path(path)}: {fmt.name} cannot carry the image's provenance (the record of "
                         f"the model that made it); write {', '.join(keeping)}")
    with atomic_path(path) as tmp:
        try:
            fmt.write(image, tmp)
        except MedfmError as exc:
            raise MedfmError(f"{display_path(path)}: {exc}") from None
        except Exception as exc:
            if isinstance(exc, OSError) and is_write_failure(exc):
                raise  # atomic_path words it, without the temporary file's name
            raise MedfmError(
                f"{display_path(path)}: cannot write as {fmt.name}: {first_line(exc)}"
            ) from None
    return path
