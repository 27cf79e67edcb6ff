"""Progress bars: drawn on stderr for propagation, classify and the evaluations when stderr is
a terminal and they are asked for (the command line asks unless --no-progress); never into a
pipe or a log."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (fixture)
from fakesegmenter import ThresholdSegmenter, fake_segmenter  # noqa: F401  (fixture)
from PIL import Image as PILImage

from medfm.eval.protocols.degradation import degradation_curves
from medfm.eval.protocols.interactive import evaluate_interactive
from medfm.io.image import Image
from medfm.models.segmenters import Prompt
from medfm.progress import progress_bar
from medfm.tasks.segment import propagate


class Terminal(io.StringIO):
    """What a terminal receives."""

    def isatty(self) -> bool:
        return True


def sphere_volume() -> Image:
    grid = np.mgrid[:32, :32, :12]
    return Image((((grid[0] - 16) ** 2 + (grid[1] - 16) ** 2 + ((grid[2] - 6) * 3) ** 2) <= 100).astype(np.float32))


def write_case(folder) -> tuple:
    plane = np.zeros((40, 40), np.uint8)
    plane[10:30, 12:28] = 200
    PILImage.fromarray(plane).save(folder / "image.png")
    PILImage.fromarray((plane > 0).astype(np.uint8) * 255).save(folder / "mask.png")
    (folder / "manifest.csv").write_text("image,mask\nimage.png,mask.png\n")
    return folder / "image.png", folder / "manifest.csv"


@pytest.mark.parametrize("enabled", [True, False])
def test_the_bar_is_drawn_only_when_asked_and_only_on_a_terminal(enabled):
    with redirect_stderr(Terminal()) as terminal, progress_bar(enabled) as bar:
        bar.advance(bar.add_task("Working", total=2), 2)
    assert ("Working" in terminal.getvalue()) is enabled
    with redirect_stderr(io.StringIO()) as pipe, progress_bar(True) as bar:
        bar.advance(bar.add_task("Working", total=1))
    assert pipe.getvalue() == ""


def test_propagation_shows_its_progress():
    click = Prompt(boxes=[(8, 8, 24, 24)])
    with redirect_stderr(Terminal()) as terminal:
        quiet = propagate(sphere_volume(), ThresholdSegmenter(), {6: [click]})
    assert terminal.getvalue() == ""
    with redirect_stderr(Terminal()) as terminal:
        shown = propagate(sphere_volume(), ThresholdSegmenter(), {6: [click]}, progress=True)
    assert "Propagating" in terminal.getvalue()
    assert np.array_equal(shown.array, quiet.array)


def test_the_evaluations_show_their_progress(tmp_path):
    _, manifest = write_case(tmp_path)
    case = (np.full((16, 16), 200.0), 1.0)
    with redirect_stderr(Terminal()) as terminal:
        evaluate_interactive(ThresholdSegmenter(), manifest, max_clicks=1, progress=True)
        degradation_curves(lambda plane: 1.0, [case], lambda a, b: a, ["gaussian_noise"], [1], progress=True)
    assert "Simulating interaction" in terminal.getvalue() and "Corrupting and predicting" in terminal.getvalue()


@pytest.mark.parametrize("command", [
    ["classify", "{image}", "--labels", "bright,dark", "--model", "fake-clip"],
    ["segment", "{image}", "-o", "{out}", "--box", "12,10,27,29", "--propagate", "--model", "fake-threshold"],
    ["evaluate", "interactive", "{manifest}", "--model", "fake-threshold", "--max-clicks", "1"],
    ["evaluate", "robustness", "{manifest}", "--segmenter", "fake-threshold", "--corruptions", "gaussian_noise",
     "--severities", "1"],
])
@pytest.mark.usefixtures("fake_models", "fake_segmenter")
def test_commands_show_progress_unless_told_not_to(tmp_path, capsys, command):
    image, manifest = write_case(tmp_path)
    args = [part.format(image=image, manifest=manifest, out=tmp_path / "out.png") for part in command]
    with redirect_stderr(Terminal()) as terminal:
        code, _, _ = run_cli([*args, "--no-progress"], capsys)
    assert code == 0 and terminal.getvalue() == "", terminal.getvalue()
    with redirect_stderr(Terminal()) as terminal:
        code, _, _ = run_cli(args, capsys)
    assert code == 0 and "━" in terminal.getvalue()
