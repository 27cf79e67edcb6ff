"""Non-DICOM formats: round trips through save/load and ``medfm convert``, and bad input.

Bad input must give one line naming the file, exit code 2 from the CLI, and leave no
output (nor any ``.medfm-tmp-*`` file) behind.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

import medfm
from medfm.cli import main
from medfm.errors import FileError, MedfmError, UnreadableFileError
from medfm.io.formats import _FORMATS, Format, check_output_folder, output_folder

NIBABEL_DATA = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/nibabel/tests/data"
if not NIBABEL_DATA.is_dir():
    import nibabel

    NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"

GEOMETRY_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".npz")


def oblique_affine() -> np.ndarray:
    """A RAS+ affine with anisotropic spacing, a rotation about k and a flipped j axis."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, -0.9, 2.5])
    affine[:3, 3] = [-12.5, 40.0, 7.25]
    return affine


def volume(dtype: str = "int16", shape: tuple[int, ...] = (23, 19, 7), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(0, 100, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -2000), min(info.max, 4000), shape, endpoint=True).astype(dtype)


def run_cli(args: list[str | os.PathLike], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    """``medfm ARGS`` in-process through :func:`medfm.cli.main`: exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["medfm", *(os.fsdecode(a) for a in args)])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return exited.value.code or 0, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".medfm-tmp-"))


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", GEOMETRY_SUFFIXES)
@pytest.mark.parametrize("dtype", ["int16", "uint8", "float32"])
def test_volume_round_trip_keeps_voxels_and_geometry(tmp_path: Path, suffix: str, dtype: str) -> None:
    image = medfm.Image(volume(dtype), oblique_affine(), modality="CT")
    back = medfm.load(medfm.save(image, tmp_path / f"volume{suffix}"))
    assert back.shape == (23, 19, 7, 1, 1)
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-5)
    assert back.orientation == image.orientation
    assert back.spacing == pytest.approx((0.7, 0.9, 2.5), abs=1e-5)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "PIR", "SAR"])
@pytest.mark.parametrize("suffix", GEOMETRY_SUFFIXES)
def test_orientation_codes_survive(tmp_path: Path, codes: str, suffix: str) -> None:
    world = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    for axis, (letter, spacing) in enumerate(zip(codes, (1.5, 1.5, 3.0))):
        row, sign = world[letter]
        affine[:3, axis] = 0
        affine[row, axis] = sign * spacing
    image = medfm.Image(volume(shape=(5, 6, 7)), affine)
    assert image.orientation == codes
    back = medfm.load(medfm.save(image, tmp_path / f"oriented{suffix}"))
    assert back.orientation == codes
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".npz"])
def test_4d_series_round_trip(tmp_path: Path, suffix: str) -> None:
    image = medfm.Image(volume(shape=(9, 8, 5, 3)), oblique_affine())
    back = medfm.load(medfm.save(image, tmp_path / f"series{suffix}"))
    assert back.shape == (9, 8, 5, 3, 1)
    np.testing.assert_array_equal(back.array, image.array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha", ".npz"])
def test_rgb_volume_round_trip(tmp_path: Path, suffix: str) -> None:
    image = medfm.Image(volume("uint8", shape=(6, 5, 4, 1, 3)), oblique_affine())
    back = medfm.load(medfm.save(image, tmp_path / f"rgb{suffix}"))
    assert back.shape == (6, 5, 4, 1, 3)
    np.testing.assert_array_equal(back.array, image.array)


def test_npz_keeps_modality_and_nifti_keeps_description(tmp_path: Path) -> None:
    assert medfm.load(medfm.save(medfm.Image(volume(), modality="MR"), tmp_path / "a.npz")).modality == "MR"
    assert medfm.load(NIBABEL_DATA / "example4d.nii.gz").metadata["description"] == "FSL3.3"


@pytest.mark.parametrize(
    ("name", "pixels"),
    [
        ("grey8.png", volume("uint8", (31, 17))),
        ("grey16.png", volume("uint16", (31, 17))),
        ("rgb.png", volume("uint8", (31, 17, 1, 1, 3))),
        ("rgba.png", volume("uint8", (31, 17, 1, 1, 4))),
        ("grey.bmp", volume("uint8", (31, 17))),
        ("rgb.bmp", volume("uint8", (31, 17, 1, 1, 3))),
        ("grey16.tiff", volume("uint16", (31, 17))),
        ("float.tif", volume("float32", (31, 17))),
        ("pages.tiff", volume("int16", (31, 17, 5))),
        ("float_pages.tiff", volume("float32", (31, 17, 5))),
        ("rgb.tiff", volume("uint8", (31, 17, 1, 1, 3))),
    ],
)
def test_raster_round_trip_is_lossless(tmp_path: Path, name: str, pixels: np.ndarray) -> None:
    image = medfm.Image(pixels)
    back = medfm.load(medfm.save(image, tmp_path / name))
    assert back.shape == image.shape
    assert back.array.dtype == pixels.dtype
    np.testing.assert_array_equal(back.array, image.array)
    assert back.metadata["spacing_known"] is False


def test_raster_keeps_row_column_order(tmp_path: Path) -> None:
    """Column index i runs along a picture's width, row index j down its height."""
    from PIL import Image as PILImage

    rows_columns = np.zeros((10, 30), np.uint8)
    rows_columns[2, 25] = 255
    PILImage.fromarray(rows_columns).save(tmp_path / "wide.png")
    image = medfm.load(tmp_path / "wide.png")
    assert image.spatial_shape == (30, 10, 1)
    assert image.array[25, 2, 0, 0, 0] == 255
    np.testing.assert_array_equal(image.frame(), rows_columns)


def test_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    smooth = np.add.outer(np.arange(40), np.arange(32)).astype(np.uint8) * 2
    image = medfm.Image(smooth)
    back = medfm.load(medfm.save(image, tmp_path / "smooth.jpg"))
    assert back.shape == image.shape
    assert np.abs(back.array.astype(int) - image.array).mean() < 2


def test_foreign_npz_stack_reads_as_slices(tmp_path: Path) -> None:
    stack = volume("uint8", (4, 12, 10))  # (N, rows, columns), as MedMNIST ships
    np.savez(tmp_path / "stack.npz", images=stack, labels=np.arange(4))
    image = medfm.load(tmp_path / "stack.npz")
    assert image.shape == (10, 12, 4, 1, 1)
    for n in range(4):
        np.testing.assert_array_equal(image.frame(k=n), stack[n])
    assert image.metadata["npz_key"] == "images"
    assert image.metadata["npz_other_arrays"] == {"labels": [4]}


@pytest.mark.parametrize("chain", [(".nii.gz", ".nrrd", ".mha", ".nii", ".npz", ".nii.gz"), (".png", ".tiff", ".bmp", ".npz", ".png")])
def test_cli_convert_chain_is_lossless(tmp_path: Path, chain: tuple[str, ...], capsys, monkeypatch) -> None:
    pixels = volume("uint8", (31, 17)) if chain[0] == ".png" else volume()
    affine = medfm.Image(pixels).affine if chain[0] == ".png" else oblique_affine()
    source = medfm.save(medfm.Image(pixels, affine), tmp_path / f"step0{chain[0]}")
    for n, suffix in enumerate(chain[1:], start=1):
        target = tmp_path / f"step{n}{suffix}"
        code, out, err = run_cli(["convert", source, target], capsys, monkeypatch)
        assert (code, err) == (0, "")
        assert out.strip() == str(target)
        source = target
    back = medfm.load(source)
    np.testing.assert_array_equal(back.array, medfm.Image(pixels).array)
    if chain[0] != ".png":
        np.testing.assert_allclose(back.affine, affine, atol=1e-5)


def test_saved_files_get_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = medfm.save(medfm.Image(volume()), tmp_path / "shared.nii.gz")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


# --- medfm info -------------------------------------------------------------------------


def test_info_json_example4d(capsys, monkeypatch) -> None:
    code, out, err = run_cli(["info", "--json", NIBABEL_DATA / "example4d.nii.gz"], capsys, monkeypatch)
    assert (code, err) == (0, "")
    info = json.loads(out)
    assert info["format"] == "nifti"
    assert info["shape"] == [128, 96, 24, 2, 1]
    assert info["num_frames"] == 2
    assert info["num_slices"] == 24
    assert info["spacing_mm"] == pytest.approx([2.0, 2.0, 2.2], abs=1e-4)
    assert info["orientation"] == "LAS"
    assert info["modality"] == "OT"
    assert info["value_range"] == [0.0, 1162.0]
    assert info["dtype"] == "int16"


def test_info_json_anatomical(capsys, monkeypatch) -> None:
    code, out, _ = run_cli(["info", "--json", NIBABEL_DATA / "anatomical.nii"], capsys, monkeypatch)
    info = json.loads(out)
    assert code == 0
    assert info["shape"] == [33, 41, 25, 1, 1]
    assert info["num_frames"] == 1
    assert info["spacing_mm"] == [2.0, 2.0, 2.0]
    assert info["origin_mm"] == [32.0, -40.0, -16.0]
    assert info["orientation"] == "LAS"
    assert info["value_range"] == [-610.0, 30393.0]
    assert "phi" not in info


# --- bad input --------------------------------------------------------------------------


def valid_files(folder: Path) -> dict[str, Path]:
    """One small valid file per format, with noisy pixels so that cuts land in the data."""
    grey = volume("uint8", (64, 48), seed=1)
    files = {
        suffix: medfm.save(medfm.Image(volume(shape=(24, 20, 6)), oblique_affine()), folder / f"valid{suffix}")
        for suffix in GEOMETRY_SUFFIXES
    }
    for suffix in (".png", ".jpg", ".bmp", ".tiff"):
        files[suffix] = medfm.save(medfm.Image(grey), folder / f"valid{suffix}")
    return files


def assert_refused(path: Path, capsys, monkeypatch, reason: str | None = None) -> str:
    """``medfm.load`` and ``medfm convert`` both refuse ``path`` in one line; nothing is written."""
    with pytest.raises(UnreadableFileError) as caught:
        medfm.load(path)
    message = str(caught.value)
    assert "\n" not in message and path.name in message
    if reason:
        assert reason in message
    out_dir = path.parent / "out"
    out_dir.mkdir(exist_ok=True)
    code, out, err = run_cli(["convert", path, out_dir / "converted.nii.gz"], capsys, monkeypatch)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("medfm: error: ") and path.name in err
    assert list(out_dir.iterdir()) == [] and leftovers(path.parent) == []
    return message


BAD_CONTENT = {
    "empty": lambda data: b"",
    "text": lambda data: b"this is a note, not an image\n" * 20,
    "cut_to_10pc": lambda data: data[: len(data) // 10],
    "cut_to_half": lambda data: data[: len(data) // 2],
    "cut_to_80pc": lambda data: data[: len(data) * 8 // 10],
    "garbled_start": lambda data: bytes(b ^ 0x5A for b in data[:64]) + data[64:],
}


@pytest.mark.parametrize("damage", sorted(BAD_CONTENT))
@pytest.mark.parametrize("suffix", [*GEOMETRY_SUFFIXES, ".png", ".jpg", ".bmp", ".tiff"])
def test_damaged_file_is_refused_in_one_line(tmp_path: Path, suffix: str, damage: str, capsys, monkeypatch) -> None:
    data = valid_files(tmp_path)[suffix].read_bytes()
    bad = tmp_path / f"bad_{damage}{suffix}"
    bad.write_bytes(BAD_CONTENT[damage](data))
    assert_refused(bad, capsys, monkeypatch, "empty (0 bytes)" if damage == "empty" else None)


def nifti_with_shape(folder: Path, name: str, shape: tuple[int, ...], compress: bool = False) -> Path:
    """A valid small NIfTI whose header is then edited to claim ``shape``."""
    header = bytearray(medfm.save(medfm.Image(volume(shape=(24, 20, 6))), folder / "template.nii").read_bytes())
    struct.pack_into("<8h", header, 40, len(shape), *shape, *(1,) * (7 - len(shape)))
    path = folder / name
    path.write_bytes(gzip.compress(bytes(header)) if compress else bytes(header))
    (folder / "template.nii").unlink()
    return path


def test_zero_size_nifti_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    assert_refused(nifti_with_shape(tmp_path, "zero.nii", (24, 0, 6)), capsys, monkeypatch, "no voxels")


@pytest.mark.parametrize("compress", [False, True])
def test_nifti_claiming_more_data_than_it_holds(tmp_path: Path, compress: bool, capsys, monkeypatch) -> None:
    name = "more.nii.gz" if compress else "more.nii"
    path = nifti_with_shape(tmp_path, name, (24, 20, 60), compress)
    assert_refused(path, capsys, monkeypatch, None if compress else "header claims 24x20x60")


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz", "huge.nrrd", "huge.mha", "huge.png", "huge.tiff", "big.nii", "big.nii.gz"])
def test_huge_header_fails_fast_without_allocating(tmp_path: Path, name: str, capsys, monkeypatch) -> None:
    import resource

    side = 2000 if name.startswith("big") else 30000  # 2000^3 int16 is 16 GB: allocatable on some machines
    suffix = name.split(".", 1)[1]
    if suffix.startswith("nii"):
        path = nifti_with_shape(tmp_path, name, (side, side, side), compress=suffix == "nii.gz")
    elif suffix in ("nrrd", "mha"):
        data = valid_files(tmp_path)["." + suffix].read_bytes()
        key = b"sizes:" if suffix == "nrrd" else b"DimSize ="
        start = data.index(key)
        end = data.index(b"\n", start)
        path = tmp_path / name
        path.write_bytes(data[:start] + key + b" 100000 100000 100000" + data[end:])
    elif suffix == "png":
        data = bytearray(valid_files(tmp_path)[".png"].read_bytes())
        struct.pack_into(">II", data, 16, 100000, 100000)  # IHDR width, height
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
        path = tmp_path / name
        path.write_bytes(bytes(data))
    else:
        import tifffile

        data = bytearray(valid_files(tmp_path)[".tiff"].read_bytes())
        with tifffile.TiffFile(tmp_path / "valid.tiff") as tiff:
            tags = tiff.pages[0].tags
            for tag in ("ImageWidth", "ImageLength"):
                struct.pack_into("<I" if tags[tag].dtype == 4 else "<H", data, tags[tag].valueoffset, 60000)
        path = tmp_path / name
        path.write_bytes(bytes(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    message = assert_refused(path, capsys, monkeypatch)
    assert time.perf_counter() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB
    if suffix in ("nii", "nii.gz", "nrrd", "mha"):
        assert "header claims" in message


def test_non_image_with_image_suffix_and_unknown_content(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "notes.nrrd").write_text("NRRD0004\nthis header is nonsense\n")
    assert_refused(tmp_path / "notes.nrrd", capsys, monkeypatch)
    (tmp_path / "mystery.dat").write_bytes(b"\x00\x01\x02 nothing known" * 10)
    assert_refused(tmp_path / "mystery.dat", capsys, monkeypatch, "not a recognised image format")


def test_dicom_named_png_is_refused_without_a_raw_warning(tmp_path: Path, capsys, monkeypatch) -> None:
    import pydicom.data

    disguised = tmp_path / "dicom_as.png"
    disguised.write_bytes(Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_cli(["info", disguised], capsys, monkeypatch)
    assert (code, out) == (2, "")
    assert err == f"medfm: error: {disguised}: cannot read as png: not an image file Pillow can identify\n"
    assert [str(warning.message) for warning in caught] == []


def test_missing_file(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = run_cli(["info", tmp_path / "absent.nii.gz"], capsys, monkeypatch)
    assert code == 2 and err.strip().endswith("absent.nii.gz: no such file")


def test_non_utf8_file_name_still_prints(tmp_path: Path, capsys, monkeypatch) -> None:
    name = os.fsdecode(b"caf\xe9.png")
    (tmp_path / name).write_bytes(b"not a png")
    with pytest.raises(UnreadableFileError) as caught:
        medfm.load(os.fsencode(tmp_path) + b"/caf\xe9.png")
    assert "caf\\udce9.png" in str(caught.value)
    str(caught.value).encode("utf-8")  # printable as it is
    result = subprocess.run(
        [sys.executable, "-c", "from medfm.cli import main; main()", "info", os.fsencode(tmp_path) + b"/caf\xe9.png"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.decode("utf-8").count("\n") == 1
    assert b"caf\\udce9.png" in result.stderr


def test_float_image_to_png_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    image = medfm.Image(volume("float32", (8, 8)))
    with pytest.raises(MedfmError, match=r"PNG stores uint8 or uint16 pixels; this image is float32"):
        medfm.save(image, tmp_path / "float.png")
    source = medfm.save(image, tmp_path / "float.nii.gz")
    code, out, err = run_cli(["convert", source, tmp_path / "float.png"], capsys, monkeypatch)
    assert code == 2 and out == "" and "float.png" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.nii.gz"]


@pytest.mark.parametrize("name", ["out.xyz", "out", "out.nhdr", "out.mhd"])
def test_unwritable_output_name_is_refused(tmp_path: Path, name: str, capsys, monkeypatch) -> None:
    source = medfm.save(medfm.Image(volume()), tmp_path / "in.nii.gz")
    code, out, err = run_cli(["convert", source, tmp_path / name], capsys, monkeypatch)
    assert code == 2 and out == "" and name in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_writer_failing_midway_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def half_write(image: medfm.Image, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setitem(_FORMATS, "flaky", Format("flaky", (".flaky",), write=half_write))
    (tmp_path / "keep.flaky").write_bytes(b"old")
    with pytest.raises(MedfmError, match=r"keep\.flaky: cannot write as flaky: disk full"):
        medfm.save(medfm.Image(volume()), tmp_path / "keep.flaky")
    assert (tmp_path / "keep.flaky").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_read_only_folder_is_refused_in_one_line_naming_the_output(tmp_path: Path, capsys, monkeypatch) -> None:
    source = medfm.save(medfm.Image(volume()), tmp_path / "in.nii.gz")

    def read_only(*args, dir: str, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", os.path.join(dir, ".medfm-tmp-ab12cd34-out.nii.gz"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    code, out, err = run_cli(["convert", source, tmp_path / "out.nii.gz"], capsys, monkeypatch)
    assert code == 2 and out == ""
    assert err == f"medfm: error: {tmp_path / 'out.nii.gz'}: cannot write: Read-only file system\n"


@pytest.mark.parametrize("refusal", [OSError(errno.ENOSPC, "No space left on device"),
                                     OSError(errno.EACCES, "Permission denied", ".medfm-tmp-x-keep.flaky")],
                         ids=["full-disk", "error-naming-the-temporary-file"])
def test_disk_refusing_the_write_names_the_output(tmp_path: Path, refusal: OSError, monkeypatch) -> None:
    def half_write(image: medfm.Image, path: Path) -> None:
        path.write_bytes(b"partial")
        raise refusal

    monkeypatch.setitem(_FORMATS, "flaky", Format("flaky", (".flaky",), write=half_write))
    with pytest.raises(FileError) as caught:
        medfm.save(medfm.Image(volume()), tmp_path / "keep.flaky")
    assert str(caught.value) == f"{tmp_path / 'keep.flaky'}: cannot write: {refusal.strerror}"
    assert leftovers(tmp_path) == [] and not (tmp_path / "keep.flaky").exists()


def test_failed_rename_into_place_names_the_output(tmp_path: Path, monkeypatch) -> None:
    def refused(source, target):
        raise OSError(errno.EACCES, "Permission denied", source, None, target)

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(FileError, match=r"out\.nii\.gz: cannot write: Permission denied$"):
        medfm.save(medfm.Image(volume()), tmp_path / "out.nii.gz")
    assert leftovers(tmp_path) == []


def test_folder_that_cannot_be_created_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(FileError, match=r"new: cannot create the folder: Read-only file system$"):
        check_output_folder(tmp_path / "new", create=True)


@pytest.mark.parametrize(("raised", "code", "line"), [
    (OSError(errno.EROFS, "Read-only file system", "/out/.medfm-tmp-ab12_cd3-scan.nii.gz"), 2,
     "medfm: error: /out/scan.nii.gz: Read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device"), 2, "medfm: error: No space left on device"),
    (OSError(errno.EBADF, "Bad file descriptor"), 1, "medfm: internal error: OSError: [Errno 9] Bad file descriptor "
     "(set MEDFM_DEBUG=1 for the traceback)"),
], ids=["read-only", "full-disk", "not-the-users"])
def test_os_error_escaping_a_command_is_one_line(tmp_path: Path, raised: OSError, code: int, line: str,
                                                   capsys, monkeypatch) -> None:
    """The last resort in main(): an OS error about the user's files or disk is theirs to fix (exit 2),
    named by their own file's name; any other is medfm's."""
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.delenv("MEDFM_DEBUG", raising=False)
    monkeypatch.setattr("medfm.io.info.describe_path", fail)
    source = medfm.save(medfm.Image(volume()), tmp_path / "in.nii.gz")
    assert run_cli(["info", source], capsys, monkeypatch) == (code, "", line + "\n")


def test_output_folder_made_for_nothing_is_removed_again(tmp_path: Path) -> None:
    with pytest.raises(MedfmError, match="every input failed"):
        with output_folder(tmp_path / "new" / "deeper"):
            assert (tmp_path / "new" / "deeper").is_dir()
            raise MedfmError("every input failed")
    with output_folder(tmp_path / "quiet"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with output_folder(tmp_path / "kept"):
        pass
    with output_folder(tmp_path / "written" / "deeper") as folder:
        medfm.save(medfm.Image(volume()), folder / "one.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "written"]
    assert [p.name for p in (tmp_path / "written" / "deeper").iterdir()] == ["one.nii.gz"]


def test_nifti_with_a_nan_affine_is_refused_in_one_line(tmp_path: Path) -> None:
    path = medfm.save(medfm.Image(np.zeros((4, 4, 2), np.int16)), tmp_path / "nan.nii")
    data = bytearray(path.read_bytes())
    data[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]: the sform's first element
    path.write_bytes(bytes(data))
    with pytest.raises(MedfmError, match="non-finite") as caught:
        medfm.load(path)
    assert "\n" not in str(caught.value) and path.name in str(caught.value)
