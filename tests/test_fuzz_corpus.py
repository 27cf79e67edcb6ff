"""Every input the fuzz campaign (benchmarks/fuzz_campaign.py) found gives an image or a clean one-line MedfmError.

Each file under tests/fuzz_corpus/ is a minimised reproducer named ``KIND-HASH.SUFFIX``,
from a seed that medfm writes or a test file that pydicom ships; the suffix picks the reader.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import medfm
from medfm.errors import MedfmError

CORPUS = sorted((Path(__file__).parent / "fuzz_corpus").iterdir())


def test_the_corpus_is_there() -> None:
    assert CORPUS


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_reproducer_gives_an_image_or_a_one_line_error(path: Path) -> None:
    try:
        image = medfm.load(path)
    except MedfmError as exc:
        message = str(exc)
        assert "\n" not in message and path.name in message
        assert "too large to fit in memory" not in message  # header checks refuse before allocating
    else:
        assert image.array.size > 0
