"""Video clips (MP4, MOV, AVI, MKV, MPEG, GIF) through PyAV: frames on the T axis.

A clip reads as ``(W, H, 1, T, C)``: columns, rows, one slice, frames, and 3 channels
(RGB), or 1 when every frame is grey (R = G = B everywhere, as in most ultrasound).
Like photographs, videos carry no patient geometry: pixels get a nominal 1 mm spacing
and ``metadata["spacing_known"]`` is False.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, UnreadableFileError
from medfm.io.formats import Format, register_format
from medfm.io.image import Image
from medfm.io.limits import check_decoded_size, decode_limits
from medfm.io.raster import integer_pixels

#: Frame rate given to clips whose image carries none.
DEFAULT_FPS = 25.0


def _check_size(path: Path, frames: int, height: int, width: int) -> None:
    check_decoded_size(path, frames * height * width * 3, None, f"video of {frames} frames of {width}x{height}")


def _is_grey(rgb: np.ndarray) -> bool:
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _decode(path: Path, container, stream) -> tuple[np.ndarray, bool]:
    """All frames as ``(T, rows, columns, 3)`` uint8, and whether every frame is grey."""
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise UnreadableFileError(path, f"video stream has no frame size ({width}x{height})")
    expected = stream.frames
    _check_size(path, max(expected, 1), height, width)
    max_frames = max(decode_limits().max_bytes // (height * width * 3), 1)
    capacity = expected if expected > 0 else min(64, max_frames)  # unknown count (MPEG-PS): grow as needed
    pixels = np.empty((capacity, height, width, 3), np.uint8)
    grey = True
    count = 0
    for frame in container.decode(stream):
        if count == capacity:
            _check_size(path, count + 1, height, width)
            capacity = min(2 * capacity, max_frames)
            pixels = np.concatenate([pixels, np.empty((capacity - count, height, width, 3), np.uint8)])
        # Forcing the stream's size keeps one grid if a clip changes resolution midway.
        pixels[count] = frame.to_ndarray(width=width, height=height, format="rgb24")
        grey = grey and _is_grey(pixels[count])
        count += 1
    if count == 0:
        raise UnreadableFileError(path, "video holds no decodable frames")
    if expected > 0 and count < expected:
        raise UnreadableFileError(path, f"video is truncated or corrupt: decoded {count} of the {expected} frames it announces")
    return pixels[:count], grey


def _ends_with_gif_trailer(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b";"


def read_video(path: Path) -> list[Image]:
    """Every frame of the first video stream; see the module docstring for the layout.

    Containers that announce their frame count (MP4, MOV, MKV, AVI) and GIFs missing their
    end marker are reported as truncated; MPEG program streams carry no count, so a cut
    one reads as far as its data goes.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise UnreadableFileError(path, "file holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            pixels, grey = _decode(path, container, stream)
            codec = stream.codec_context.name
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
    except av.error.FFmpegError as exc:
        raise UnreadableFileError(path, f"not a readable video ({exc.strerror or type(exc).__name__})") from None
    if codec == "gif" and not _ends_with_gif_trailer(path):
        raise UnreadableFileError(path, "GIF is truncated: it lacks the end-of-file marker")
    num_frames = pixels.shape[0]
    fps = float(rate) if rate else (num_frames / duration if duration else DEFAULT_FPS)
    if grey:
        pixels = np.ascontiguousarray(pixels[..., :1])
    metadata = {
        "spacing_known": False,
        "fps": fps,
        "duration_s": duration or num_frames / fps,
        "codec": codec,
        "num_frames": num_frames,
    }
    # (T, rows, columns, C) -> (I, J, K=1, T, C), a view.
    return [Image(pixels.transpose(2, 1, 0, 3)[:, :, None], metadata=metadata)]


def _frames(image: Image, what: str) -> np.ndarray:
    """``(T, rows, columns, C)`` uint8 frames of a 2D clip, or a one-line refusal."""
    if not image.is_2d:
        raise MedfmError(f"{what} holds 2D frames; this image has shape {image.shape} (I, J, K, T, C): write .nii.gz")
    if image.num_channels not in (1, 3):
        raise MedfmError(f"{what} holds grey or RGB frames; this image has {image.num_channels} channels")
    frames = image.array[:, :, 0].transpose(2, 1, 0, 3)
    return integer_pixels(frames, (np.uint8,), what)


def _rate(image: Image) -> Fraction:
    fps = image.metadata.get("fps") or DEFAULT_FPS
    return Fraction(fps).limit_denominator(1001)


def _write_mp4(image: Image, path: Path) -> None:
    import av
    from av.video.frame import VideoFrame

    frames = _frames(image, "MP4 video")
    _, rows, columns, channels = frames.shape
    pad = ((0, rows % 2), (0, columns % 2), (0, 0))
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=_rate(image), options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = columns + columns % 2, rows + rows % 2, "yuv420p"
        for frame in frames:
            frame = np.pad(frame, pad, mode="edge") if (rows | columns) % 2 else frame
            source = VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., 0] if channels == 1 else frame), format="gray" if channels == 1 else "rgb24")
            container.mux(stream.encode(source.reformat(format="yuv420p")))
        container.mux(stream.encode())


def _palette_frame(frame: np.ndarray):
    """An RGB ``(rows, columns, 3)`` frame as a GIF frame with its own 256-colour palette."""
    from av.video.frame import VideoFrame
    from PIL import Image as PILImage

    quantised = PILImage.fromarray(frame).quantize(256)
    rgb = np.asarray(quantised.getpalette(rawmode="RGB"), np.uint8).reshape(-1, 3)
    argb = np.zeros((256, 4), np.uint8)
    argb[:, 0] = 255  # opaque
    argb[: len(rgb), 1:] = rgb
    return VideoFrame.from_ndarray((np.asarray(quantised), argb), format="pal8")


def _write_gif(image: Image, path: Path) -> None:
    import av
    from av.video.frame import VideoFrame

    frames = _frames(image, "GIF")
    _, rows, columns, channels = frames.shape
    with av.open(str(path), "w", format="gif") as container:
        stream = container.add_stream("gif", rate=_rate(image))
        stream.width, stream.height, stream.pix_fmt = columns, rows, "gray" if channels == 1 else "pal8"
        for frame in frames:
            source = VideoFrame.from_ndarray(np.ascontiguousarray(frame[..., 0]), format="gray") if channels == 1 else _palette_frame(frame)
            container.mux(stream.encode(source))
        container.mux(stream.encode())


def write_video(image: Image, path: Path) -> None:
    """Write a clip ``(W, H, 1, T, C)`` (C = 1 or 3, values 0-255) as MP4 or GIF.

    MP4 is H.264 in yuv420p (lossy, crf 18), which needs even frame sizes: an odd width
    or height is padded by one pixel, repeating the last column or row. GIF keeps grey
    frames exactly and quantises each RGB frame to its own 256-colour palette; it stores
    frame delays in 1/100 s, so the frame rate is rounded. The rate is
    ``metadata["fps"]``, else 25.
    """
    import av

    suffix = path.name.lower().rsplit(".", 1)[-1]
    if suffix not in ("mp4", "gif"):
        raise MedfmError(f"medfm writes video as .mp4 (H.264) or .gif, not .{suffix}")
    try:
        (_write_gif if suffix == "gif" else _write_mp4)(image, path)
    except av.error.FFmpegError as exc:
        raise MedfmError(f"cannot encode {suffix.upper()}: {exc.strerror or type(exc).__name__}") from None


def _sniff(head: bytes) -> bool:
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide")  # MP4, MOV (ISO base media)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska, WebM
        or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG program stream, elementary stream
        or head[:6] in (b"GIF87a", b"GIF89a")
    )


VIDEO = register_format(
    Format("video", (".mp4", ".mov", ".avi", ".mkv", ".mpeg", ".mpg", ".gif"), read_video, write_video, _sniff)
)
