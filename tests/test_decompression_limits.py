"""Decompression bombs are refused from headers, in one line, without inflating them.

The NPZ bomb is built as an attacker would: a 1.5 MB archive whose one ``.npy`` member
is 1.5 GiB of zeros (deflate blocks repeated, so building it costs no 1.5 GiB either).
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
from clitools import run_cli

import medfm
from medfm.errors import MedfmError
from medfm.io import probe_all
from medfm.io.limits import DecompressionBombError

BOMB_SHAPE = (1536, 1024, 1024)  # uint8 zeros: 1.5 GiB
#: Reading or describing the bomb may allocate at most this much (it would inflate to 1.5 GiB).
MEMORY_BUDGET = 32 * 2**20
CHUNK = 16 * 2**20


def _deflated_zeros(total: int) -> bytes:
    """A byte-aligned raw deflate stream (not final) of ``total`` zero bytes, a multiple of CHUNK."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(CHUNK)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    # With the window full of zeros, every later chunk compresses to the same byte-aligned blocks.
    repeated = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return first + repeated * (total // CHUNK - 1)


def write_npz_bomb(path: Path, shape: tuple[int, ...] = BOMB_SHAPE) -> Path:
    """An ``.npz`` holding one uint8 array of zeros of ``shape``: a zip written by hand around a deflate stream."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    header, zeros = buffer.getvalue(), int(np.prod(shape))
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH) + _deflated_zeros(zeros) + b"\x03\x00"  # final empty block
    crc, block = zlib.crc32(header), bytes(CHUNK)
    for _ in range(zeros // CHUNK):
        crc = zlib.crc32(block, crc)
    name, size = b"array.npy", len(header) + zeros
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)
    return path


@pytest.fixture(scope="module")
def npz_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npz_bomb(tmp_path_factory.mktemp("bomb") / "zeros.npz")


def test_the_bomb_is_small_and_a_valid_archive(npz_bomb: Path) -> None:
    import zipfile

    assert npz_bomb.stat().st_size < 2 * 2**20
    with zipfile.ZipFile(npz_bomb) as archive:
        (info,) = archive.infolist()
        assert info.file_size > 1.5 * 2**30
        with archive.open(info) as stream:  # the stream inflates: its start is the .npy header, then zeros
            assert np.lib.format.read_magic(stream) == (1, 0)
            assert np.lib.format.read_array_header_1_0(stream)[0] == BOMB_SHAPE
            assert stream.read(CHUNK) == bytes(CHUNK)


def _peak_bytes(call) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loading_the_npz_bomb_is_refused_in_one_line_without_inflating_it(npz_bomb: Path) -> None:
    def load() -> str:
        with pytest.raises(DecompressionBombError) as caught:
            medfm.load(npz_bomb)
        return str(caught.value)

    message, peak = _peak_bytes(load)
    assert peak < MEMORY_BUDGET
    assert "\n" not in message and message.startswith(str(npz_bomb))
    assert "inflate" in message and "MEDFM_MAX_INFLATION_RATIO" in message


def test_describing_the_npz_bomb_reads_headers_only(npz_bomb: Path, capsys: pytest.CaptureFixture) -> None:
    (image,), peak = _peak_bytes(lambda: probe_all(npz_bomb))  # what ingest catalogues
    assert peak < MEMORY_BUDGET
    assert image.shape == (1024, 1024, 1536, 1, 1) and image.array.dtype == np.uint8
    (code, out, _), peak = _peak_bytes(lambda: run_cli(["info", "--json", str(npz_bomb)], capsys))
    assert code == 0 and peak < MEMORY_BUDGET
    summary = json.loads(out)
    assert summary["shape"] == [1024, 1024, 1536, 1, 1]
    assert summary["value_range"] is None
    assert "MEDFM_MAX_INFLATION_RATIO" in summary["not_decoded"]


def test_a_raised_ratio_limit_lets_a_highly_compressible_file_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_npz_bomb(tmp_path / "zeros.npz", (320, 1024, 1024))  # 320 MiB from 0.3 MB
    monkeypatch.setenv("MEDFM_MAX_INFLATION_RATIO", "2000")
    monkeypatch.setenv("MEDFM_MAX_DECODED_BYTES", str(2**20))
    with pytest.raises(DecompressionBombError, match=r"would decode to 320\.0 MiB, over the 1\.0 MiB limit"):
        medfm.load(path)


def _rle_dicom(folder: Path) -> Path:
    return Path(pydicom.data.get_testdata_file("MR_small_RLE.dcm"))


def _saved(suffix: str):
    def write(folder: Path) -> Path:
        volume = np.arange(64 * 64 * 8, dtype=np.int16).reshape(64, 64, 8) % 300
        image = medfm.Image(volume if suffix not in (".png", ".gif") else (volume[:, :, :1] % 256).astype(np.uint8))
        return medfm.save(image, folder / f"image{suffix}")
    return write


@pytest.mark.parametrize("write", [_saved(s) for s in (".nii.gz", ".nrrd", ".mha", ".npz", ".tiff", ".png")] + [_rle_dicom],
                         ids=[".nii.gz", ".nrrd", ".mha", ".npz", ".tiff", ".png", "rle.dcm"])
def test_every_compressed_reader_checks_the_byte_limit_first(write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path)
    assert medfm.load(path).array.size > 0
    monkeypatch.setenv("MEDFM_MAX_DECODED_BYTES", "4096")
    with pytest.raises(MedfmError, match=r"would decode to .* over the 4\.0 KiB limit \(MEDFM_MAX_DECODED_BYTES\)") as caught:
        medfm.load(path)
    assert "\n" not in str(caught.value) and path.name in str(caught.value)


def test_a_limit_that_is_not_a_number_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = medfm.save(medfm.Image(np.zeros((4, 4, 2), np.uint8)), tmp_path / "a.nii.gz")
    monkeypatch.setenv("MEDFM_MAX_DECODED_BYTES", "lots")
    with pytest.raises(MedfmError, match=r"MEDFM_MAX_DECODED_BYTES='lots' is not a number"):
        medfm.load(path)


def test_a_dicom_series_is_checked_as_a_whole_before_its_volume_is_allocated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.io.synthetic import phantom, write_dicom_series

    files = write_dicom_series(phantom((32, 32, 6)), tmp_path / "series")
    monkeypatch.setenv("MEDFM_MAX_DECODED_BYTES", str(32 * 32 * 2 * 5))  # five of the six slices
    with pytest.raises(MedfmError, match=r"series would decode to 12\.0 KiB, over the 10\.0 KiB limit") as caught:
        medfm.load(tmp_path / "series")
    assert str(caught.value).startswith(str(files[0].parent))


@pytest.mark.parametrize("syntax", [None, pydicom.uid.JPEGLSLossless], ids=["native", "encapsulated"])
def test_a_damaged_number_of_frames_is_refused_before_any_frame_is_listed(tmp_path: Path, syntax: str | None) -> None:
    from medfm.io.synthetic import phantom, write_dicom_series

    (path,) = write_dicom_series(phantom((32, 32, 1)), tmp_path, transfer_syntax=syntax)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2**31 - 1  # 2**31 frames' worth of memory before any size check, once
    ds.save_as(path)
    held = len(ds.PixelData) + (8 if syntax else 0)  # encapsulated: and the sequence delimiter

    def load() -> MedfmError:
        with pytest.raises(MedfmError) as caught:
            medfm.load(path)
        return caught.value

    error, peak = _peak_bytes(load)
    assert peak < MEMORY_BUDGET
    expected = (f"header claims {(2**31 - 1) * 32 * 32 * 2} bytes of pixel data (2147483647 frame(s) of 32x32x1, 16 bits) "
                f"but the file holds {held}") if syntax is None else \
        f"header claims 2147483647 frames but its {held} bytes of encapsulated pixel data hold at most {held // 8}"
    assert error.reason == expected


def test_a_codestream_larger_than_its_header_is_refused_before_decoding(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate, generate_frames

    from medfm.io.synthetic import phantom, write_dicom_series

    (path,) = write_dicom_series(phantom((32, 32, 1)), tmp_path, transfer_syntax=pydicom.uid.JPEG2000Lossless)
    ds = pydicom.dcmread(path)
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    assert frame[:4] == b"\xff\x4f\xff\x51"
    frame[8:16] = struct.pack(">II", 60000, 60000)  # SIZ: the reference grid, 3.6 gigapixels
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path)
    with pytest.raises(MedfmError) as caught:
        medfm.load(path)
    assert caught.value.reason == ("the JPEG 2000 Image Compression (Lossless Only) codestream of frame 1 declares 60000x60000 pixels, "
                                   "more than the header's 32x32")
