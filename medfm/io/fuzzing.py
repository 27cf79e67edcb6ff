"""Seed files and mutations for fuzzing the readers.

Shared by the CI fuzz test (``tests/test_fuzz_readers.py``, which draws mutations with
Hypothesis) and the long campaign (``benchmarks/fuzz_campaign.py``, which draws them with
:func:`random_mutations`). A mutation is a tuple; :func:`mutate` applies a list of them.
Seeds are small valid files written by medfm's own writers, plus DICOM test files that
pydicom ships (compressed and enhanced objects medfm does not write).
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import numpy as np

#: Values that header fields (sizes, offsets, counts) are set to: limits of 1, 2 and 4-byte integers.
EXTREMES = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
#: Mutations reach this far into a file (positions wrap modulo the file's length).
MAX_POSITION = 1 << 20
#: Dimensions, offsets, counts and lengths mostly live in a file's first bytes.
HEADER_BYTES = 512

#: pydicom's test files used as seeds: transfer syntaxes and objects medfm reads but does not write.
PYDICOM_SEEDS = {
    "rle.dcm": "MR_small_RLE.dcm",
    "jpeg2000.dcm": "JPEG2000.dcm",
    "jpeg_ls.dcm": "JPEGLSNearLossless_08.dcm",
    "jpeg_baseline_ybr.dcm": "SC_rgb_small_odd_jpeg.dcm",
    "deflated.dcm": "image_dfl.dcm",
    "enhanced.dcm": "liver_1frame.dcm",
    "multiframe_rle.dcm": "rtdose_rle.dcm",
}


def seed_files(folder: Path) -> dict[str, bytes]:
    """Small valid files by name (the suffix selects the reader), written under ``folder``."""
    import pydicom.data

    import medfm
    from medfm.io.synthetic import phantom, write_dicom_series

    rng = np.random.default_rng(0)
    volume = phantom((12, 10, 4))
    grey = rng.integers(0, 256, (16, 12), dtype=np.uint8)
    clip = medfm.Image(rng.integers(0, 256, (16, 12, 1, 3, 1), dtype=np.uint8), metadata={"fps": 5.0})
    images = {
        "seed.png": medfm.Image(grey),
        "seed.jpg": medfm.Image(grey),
        "seed.bmp": medfm.Image(grey),
        "seed.tiff": medfm.Image(volume),
        "seed.nii": medfm.Image(volume, np.diag([0.8, 0.8, 2.5, 1.0])),
        "seed.nii.gz": medfm.Image(volume),
        "seed.nrrd": medfm.Image(volume),
        "seed.mha": medfm.Image(volume),
        "seed.npz": medfm.Image(volume),
        "seed.mp4": clip,
        "seed.gif": clip,
    }
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {name: medfm.save(image, folder / name).read_bytes() for name, image in images.items()}
    seeds["seed.dcm"] = write_dicom_series(volume[:, :, :1], folder / "dicom")[0].read_bytes()
    shipped = Path(pydicom.data.DATA_ROOT) / "test_files"
    for name, source in PYDICOM_SEEDS.items():
        seeds[name] = shutil.copyfile(shipped / source, folder / name).read_bytes()
    return seeds


def suffix_of(name: str) -> str:
    """The suffix a fuzzed copy of seed ``name`` keeps, so that the same reader opens it."""
    return name[name.index("."):]


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    """Apply mutations in order; positions wrap modulo the current length.

    ``("flip", position, bit)``, ``("truncate", fraction kept)``, ``("insert", position, bytes)``,
    ``("overwrite", position, bytes)``, ``("field", position, value, width, "little"|"big")``.
    """
    buffer = bytearray(data)
    for kind, *args in mutations:
        size = max(len(buffer), 1)
        if kind == "flip":
            position, bit = args
            if buffer:
                buffer[position % size] ^= 1 << bit
        elif kind == "truncate":
            del buffer[int(len(buffer) * args[0]):]
        elif kind == "insert":
            position, chunk = args
            buffer[position % size:position % size] = chunk
        elif kind == "overwrite":
            position, chunk = args
            start = position % size
            buffer[start:start + len(chunk)] = chunk
        else:
            position, value, width, order = args
            start = position % size
            buffer[start:start + width] = (value % (1 << (8 * width))).to_bytes(width, order)
    return bytes(buffer)


def random_mutations(rng: np.random.Generator, max_count: int = 4) -> list[tuple]:
    """One to ``max_count`` mutations of the kinds :func:`mutate` applies, drawn from ``rng``."""
    mutations: list[tuple] = []
    for _ in range(int(rng.integers(1, max_count + 1))):
        kind = int(rng.integers(5))
        if kind == 0:
            mutations.append(("flip", int(rng.integers(MAX_POSITION)), int(rng.integers(8))))
        elif kind == 1:
            mutations.append(("truncate", float(rng.random())))
        elif kind in (2, 3):
            chunk = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
            mutations.append(("insert" if kind == 2 else "overwrite", int(rng.integers(MAX_POSITION)), chunk))
        else:
            mutations.append((
                "field", int(rng.integers(HEADER_BYTES)), EXTREMES[int(rng.integers(len(EXTREMES)))],
                (1, 2, 4)[int(rng.integers(3))], ("little", "big")[int(rng.integers(2))],
            ))
    return mutations


def limit_address_space(extra_bytes: int) -> None:
    """Let this process map at most ``extra_bytes`` beyond what it maps now, and have readers
    refuse (from headers) images over a quarter of that, as a server's limits would.

    A ``MemoryError`` after this means a reader allocated more than its header check allowed.
    """
    os.environ["MEDFM_MAX_DECODED_BYTES"] = str(extra_bytes // 4)
    with open("/proc/self/statm") as handle:
        used = int(handle.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + extra_bytes, resource.RLIM_INFINITY))
