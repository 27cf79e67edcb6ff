"""Every input the fuzz campaign (benchmarks/fuzz_campaign.py) found gives an image or a clean one-line MedfmError.

Each file under tests/fuzz_corpus/ is a reproducer named ``KIND-HASH.SUFFIX`` (the suffix
picks the reader), mutated from a seed that medfm writes or a test file that pydicom
ships. They are read in a child process under the campaign's memory limit, so that a
reproducer of a memory blow-up fails here as it did there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = sorted((Path(__file__).parent / "fuzz_corpus").iterdir())
#: The campaign's default address-space allowance per worker (benchmarks/fuzz_campaign.py --memory-mb).
MEMORY_BYTES = 1024 * 2**20
#: Reproducers whose refusal must give this reason (the true one, not just any one line).
REASONS = {
    # A 45x10 image whose 16-byte JPEG-LS codestream declares 24074x41005 pixels: libjpeg spent
    # tens of seconds filling a gigabyte (tests/test_dicom_decoding.py has it killed at its time limit).
    "hang-01d5d70a7b24.dcm": "the JPEG-LS Lossy (Near-Lossless) Image Compression codestream of frame 1 declares 24074x41005 pixels, "
                             "more than the header's 10x45",
    # An enhanced CT whose per-frame functional groups tag is damaged and whose Number of Frames
    # is 2**31 - 1: it was listing two billion frames before any size check.
    "memory-f6b421282def.dcm": "header claims 70368744144896 bytes of pixel data (2147483647 frame(s) of 512x512x1, 1 bits) "
                               "but the file holds 64",
    # A TIFF strip whose byte count says 4 GB: tifffile allocated it before reading.
    "memory-ceb3a7bb1f97.tiff": "cannot read as tiff: page 1 has a strip or tile of 4278190320 bytes at byte 272, past the end of "
                                "the 190-byte file: it is truncated or damaged",
    # A MetaImage whose zlib header asks for a preset dictionary: SimpleITK's MetaIO looped forever.
    "hang-f8967dbb6c49.mha": "MetaImage compressed data has a damaged zlib header",
}

READ_UNDER_LIMITS = """
import json, sys
import medfm
from medfm.errors import MedfmError
from medfm.io.fuzzing import limit_address_space

limit_address_space(int(sys.argv[1]))
results = {}
for name in sys.argv[2:]:
    try:
        results[name] = "image of %d voxels" % medfm.load(name).array.size
    except MedfmError as exc:
        results[name] = "MedfmError: " + str(exc)
    except BaseException as exc:
        results[name] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def outcomes() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", READ_UNDER_LIMITS, str(MEMORY_BYTES), *map(str, CORPUS)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_the_corpus_is_there() -> None:
    assert CORPUS


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_reproducer_gives_an_image_or_a_one_line_error(outcomes: dict[str, str], path: Path) -> None:
    outcome = outcomes[str(path)]
    if outcome.startswith("image of "):
        assert not outcome.startswith("image of 0 ")
        return
    assert outcome.startswith("MedfmError: "), outcome
    assert "\n" not in outcome and path.name in outcome
    assert "too large to fit in memory" not in outcome  # header checks refuse before allocating


@pytest.mark.parametrize("name", sorted(REASONS))
def test_reproducer_is_refused_for_its_true_reason(outcomes: dict[str, str], name: str) -> None:
    path = Path(__file__).parent / "fuzz_corpus" / name
    assert outcomes[str(path)] == f"MedfmError: {path}: {REASONS[name]}"
