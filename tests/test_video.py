"""Video clips: PyAV-written MP4/GIF/AVI/MKV in, medfm round trips, bad files refused."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest

import medfm
from medfm.errors import MedfmError, UnreadableFileError
from medfm.io import video
from medfm.paths import shared_data_dir

POCUS = shared_data_dir() / "pocus_lung_ultrasound_video"


def moving_frames(num_frames: int = 12, rows: int = 48, columns: int = 64, colour: bool = False) -> np.ndarray:
    """``(T, rows, columns, 3)`` uint8: a bright square sliding right over a smooth ramp."""
    ramp = np.linspace(30, 200, columns).astype(np.uint8)
    frames = np.repeat(np.broadcast_to(ramp, (num_frames, rows, columns))[..., None], 3, axis=-1)
    for t in range(num_frames):
        frames[t, 10:26, 4 + 2 * t : 20 + 2 * t] = 240
    if colour:
        frames[..., 0] = 220  # a red cast on every frame
    return frames


def write_with_pyav(path: Path, frames: np.ndarray, fps: int = 15, codec: str = "libx264") -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def as_rows_columns(image: medfm.Image) -> np.ndarray:
    """``(T, rows, columns, C)`` from an image's ``(I, J, 1, T, C)`` array."""
    return image.array[:, :, 0].transpose(2, 1, 0, 3)


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "libx264")])
def test_reads_grey_clip_as_one_channel_frames(tmp_path: Path, suffix: str, codec: str) -> None:
    frames = moving_frames()
    path = write_with_pyav(tmp_path / f"clip{suffix}", frames, fps=15, codec=codec)
    image = medfm.load(path)
    assert image.shape == (64, 48, 1, 12, 1)
    assert image.array.dtype == np.uint8
    assert image.metadata["num_frames"] == 12
    assert image.metadata["fps"] == pytest.approx(15)
    assert image.metadata["duration_s"] == pytest.approx(12 / 15, abs=0.1)
    assert image.metadata["spacing_known"] is False
    assert image.spacing == (1.0, 1.0, 1.0)
    assert np.abs(as_rows_columns(image)[..., 0].astype(int) - frames[..., 0]).mean() < 4


def test_colour_clip_keeps_three_channels(tmp_path: Path) -> None:
    frames = moving_frames(colour=True)
    image = medfm.load(write_with_pyav(tmp_path / "colour.mp4", frames))
    assert image.shape == (64, 48, 1, 12, 3)
    assert image.metadata["codec"] == "h264"
    assert np.abs(as_rows_columns(image).astype(int) - frames).mean() < 6


def test_mp4_round_trip_keeps_frames_size_fps_and_values(tmp_path: Path) -> None:
    frames = moving_frames(num_frames=10)[..., :1]
    source = medfm.Image(frames.transpose(2, 1, 0, 3)[:, :, None], metadata={"fps": 12.0})
    back = medfm.load(medfm.save(source, tmp_path / "out.mp4"))
    assert back.shape == source.shape
    assert back.metadata["fps"] == pytest.approx(12)
    assert back.metadata["num_frames"] == 10
    assert np.abs(back.array.astype(int) - source.array).mean() < 3


def test_mp4_pads_odd_sizes_by_one_pixel(tmp_path: Path) -> None:
    frames = moving_frames(num_frames=3, rows=31, columns=45, colour=True)
    source = medfm.Image(frames.transpose(2, 1, 0, 3)[:, :, None])
    back = medfm.load(medfm.save(source, tmp_path / "odd.mp4"))
    assert back.shape == (46, 32, 1, 3, 3)
    assert back.metadata["fps"] == pytest.approx(video.DEFAULT_FPS)
    assert np.abs(back.array[:45, :31].astype(int) - source.array).mean() < 6


def test_gif_round_trip_is_exact_for_grey_and_close_for_colour(tmp_path: Path) -> None:
    grey = medfm.Image(moving_frames(num_frames=6)[..., :1].transpose(2, 1, 0, 3)[:, :, None], metadata={"fps": 10.0})
    back = medfm.load(medfm.save(grey, tmp_path / "grey.gif"))
    assert back.shape == grey.shape
    np.testing.assert_array_equal(back.array, grey.array)
    assert back.metadata["fps"] == pytest.approx(10)
    assert back.metadata["codec"] == "gif"

    colour = medfm.Image(moving_frames(num_frames=6, colour=True).transpose(2, 1, 0, 3)[:, :, None])
    back = medfm.load(medfm.save(colour, tmp_path / "colour.gif"))
    assert back.shape == colour.shape
    assert np.abs(back.array.astype(int) - colour.array).mean() < 3


def test_identical_frames_are_all_kept(tmp_path: Path) -> None:
    still = np.full((5, 20, 30, 1), 90, np.uint8)
    source = medfm.Image(still.transpose(2, 1, 0, 3)[:, :, None])
    for name in ("still.gif", "still.mp4"):
        assert medfm.load(medfm.save(source, tmp_path / name)).num_frames == 5


def test_single_frame_gif(tmp_path: Path) -> None:
    source = medfm.Image(np.arange(12 * 8, dtype=np.uint8).reshape(12, 8))
    back = medfm.load(medfm.save(source, tmp_path / "one.gif"))
    assert back.shape == (12, 8, 1, 1, 1)
    np.testing.assert_array_equal(back.array, source.array)


def test_sniffs_a_video_without_a_known_suffix(tmp_path: Path) -> None:
    path = write_with_pyav(tmp_path / "clip.mp4", moving_frames(num_frames=4))
    renamed = path.rename(tmp_path / "clip.bin")
    assert medfm.io.detect_format(renamed).name == "video"
    assert medfm.load(renamed).num_frames == 4


@pytest.mark.parametrize(
    ("image", "name", "message"),
    [
        (medfm.Image(np.zeros((8, 8, 4), np.uint8)), "volume.mp4", "holds 2D frames"),
        (medfm.Image(np.zeros((8, 8, 1, 2, 4), np.uint8)), "rgba.gif", "grey or RGB"),
        (medfm.Image(np.zeros((8, 8, 1, 2), np.float32) + 0.5), "float.mp4", "stores uint8"),
        (medfm.Image(np.zeros((8, 8, 1, 2), np.uint8)), "clip.avi", r"as \.mp4 \(H\.264\) or \.gif"),
    ],
)
def test_writer_refuses_what_it_cannot_store(tmp_path: Path, image: medfm.Image, name: str, message: str) -> None:
    with pytest.raises(MedfmError, match=message) as caught:
        medfm.save(image, tmp_path / name)
    assert "\n" not in str(caught.value) and name in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_mp4_is_a_one_line_error(tmp_path: Path, keep: float) -> None:
    data = write_with_pyav(tmp_path / "whole.mp4", moving_frames(num_frames=30, colour=True)).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(UnreadableFileError, match="cut.mp4") as caught:
        medfm.load(cut)
    assert "\n" not in str(caught.value)


def test_truncated_gif_and_garbage_are_one_line_errors(tmp_path: Path) -> None:
    grey = medfm.Image(moving_frames(num_frames=6)[..., :1].transpose(2, 1, 0, 3)[:, :, None])
    data = medfm.save(grey, tmp_path / "whole.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.mov").write_text("not a video at all\n")
    (tmp_path / "empty.mkv").write_bytes(b"")
    for name, reason in [("cut.gif", "truncated"), ("text.mov", "not a readable video"), ("empty.mkv", "empty")]:
        with pytest.raises(UnreadableFileError, match=reason) as caught:
            medfm.load(tmp_path / name)
        assert "\n" not in str(caught.value) and name in str(caught.value)


def test_clip_over_the_memory_cap_fails_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_with_pyav(tmp_path / "clip.mp4", moving_frames(num_frames=12))
    monkeypatch.setenv("MEDFM_MAX_DECODED_BYTES", str(10 * 64 * 48 * 3))
    with pytest.raises(UnreadableFileError, match=r"12 frames of 64x48 would decode to .* over the .* limit \(MEDFM_MAX_DECODED_BYTES\)"):
        medfm.load(path)


def test_clip_without_a_frame_count_grows_past_the_first_guess(tmp_path: Path) -> None:
    frames = moving_frames(num_frames=70, rows=16, columns=96)
    path = write_with_pyav(tmp_path / "clip.mpg", frames, fps=25, codec="mpeg1video")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # MPEG program streams announce no count
    image = medfm.load(path)
    assert image.num_frames == 70
    assert image.metadata["codec"] == "mpeg1video"


@pytest.mark.integration
def test_reads_a_pocus_clip_with_the_frame_count_pyav_reports() -> None:
    manifest = POCUS / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"real data absent: {manifest}")
    with open(manifest, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["type"] == "video" and row["file"].endswith(".mp4")]
    row = min(rows, key=lambda r: int(r["decoded_frames"]))
    path = POCUS / row["file"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, width, height, rate = stream.frames, stream.codec_context.width, stream.codec_context.height, stream.average_rate
    image = medfm.load(path)
    assert image.num_frames == frames == int(row["decoded_frames"])
    assert image.spatial_shape == (width, height, 1)
    assert image.metadata["fps"] == pytest.approx(float(rate))
    assert image.num_channels in (1, 3)


def test_video_to_nifti_keeps_the_frame_interval(tmp_path: Path) -> None:
    import nibabel as nib

    path = write_with_pyav(tmp_path / "clip.mp4", moving_frames(num_frames=6), fps=12)
    medfm.save(medfm.load(path), tmp_path / "clip.nii.gz")
    header = nib.load(tmp_path / "clip.nii.gz").header
    assert header.get_xyzt_units() == ("mm", "sec")
    assert header.get_zooms()[3] == pytest.approx(1 / 12)
    assert medfm.load(tmp_path / "clip.nii.gz").metadata["frame_interval_s"] == pytest.approx(1 / 12)
