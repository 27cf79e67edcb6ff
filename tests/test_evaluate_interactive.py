"""The simulated-interaction protocol, checked with a scripted segmenter on generated files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from fakesegmenter import fake_segmenter  # noqa: F401  (the fixture)
from medfm.errors import MedfmError
from medfm.models.segmenters.base import Prediction, Segmenter, SegmenterInfo
from medfm.eval.protocols.interactive import evaluate_interactive, format_table
from medfm.eval.protocols.interaction import centre_click, corrective_click, jittered_box
from medfm.models.segmenters.prompt import mask_box


class ThresholdSegmenter(Segmenter):
    """Predicts ``plane > 100`` inside the box, or grows a disk by 5 pixels per click."""

    def __init__(self) -> None:
        super().__init__(SegmenterInfo("threshold"))

    def _encode(self, plane):
        return plane

    def _decode(self, plane, prompt, shape):
        if prompt.boxes:
            x0, y0, x1, y1 = (int(v) for v in prompt.boxes[0])
            mask = np.zeros(shape, bool)
            mask[y0 : y1 + 1, x0 : x1 + 1] = plane[y0 : y1 + 1, x0 : x1 + 1] > 100
        else:
            yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
            x, y = prompt.points[0]
            mask = (xx - x) ** 2 + (yy - y) ** 2 <= (5 * len(prompt.points)) ** 2
        return Prediction(mask, np.where(mask, 1.0, -1.0).astype(np.float32), 1.0)


def test_clicks_follow_the_deepest_error():
    truth = np.zeros((40, 60), bool)
    truth[10:30, 10:50] = True
    assert centre_click(truth) == (29.0, 19.0) or centre_click(truth) == (30.0, 20.0)
    assert corrective_click(truth, truth) is None
    x, y, label = corrective_click(truth, np.zeros_like(truth))
    assert label == 1 and truth[int(y), int(x)]
    too_big = np.ones_like(truth)
    x, y, label = corrective_click(truth, too_big)
    assert label == 0 and not truth[int(y), int(x)]
    assert mask_box(truth) == (10, 10, 49, 29)
    box = jittered_box(truth, np.random.default_rng(0))
    assert (box >= 0).all() and box[2] <= 59 and box[3] <= 39


def test_protocol_reports_dice_and_noc_per_dataset(tmp_path):
    yy, xx = np.mgrid[0:64, 0:96]
    rows = ["image,mask,dataset"]
    for index, radius in enumerate((6, 12, 18)):
        mask = (xx - 48) ** 2 + (yy - 32) ** 2 <= radius**2
        PILImage.fromarray(np.where(mask, 200, 20).astype(np.uint8)).save(tmp_path / f"i{index}.png")
        PILImage.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"m{index}.png")
        rows.append(f"i{index}.png,m{index}.png,{'a' if index < 2 else 'b'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    report = evaluate_interactive(ThresholdSegmenter(), tmp_path / "manifest.csv", max_clicks=5)
    assert set(report["datasets"]) == {"a", "b"} and report["all"]["images"] == 3
    assert report["all"]["box_dice"] == pytest.approx(1.0)
    assert len(report["all"]["click_dice"]) == 5
    # a disk of radius 5k matches the radius-6 object at once, the radius-12 one on the 2nd click
    assert report["datasets"]["a"]["noc@80"] == pytest.approx(1.5)
    assert "NoC@90" in format_table(report)
    assert evaluate_interactive(ThresholdSegmenter(), tmp_path / "manifest.csv", limit=1)["all"]["images"] == 2


@pytest.mark.parametrize(("max_clicks", "header", "last_click"), [(2, "2 clicks", 1), (1, None, 0), (10, "5 clicks", 4)])
def test_table_names_the_clicks_its_dice_is_after(max_clicks, header, last_click, tmp_path):
    yy, xx = np.mgrid[0:64, 0:96]
    mask = (xx - 48) ** 2 + (yy - 32) ** 2 <= 12**2
    PILImage.fromarray(np.where(mask, 200, 20).astype(np.uint8)).save(tmp_path / "i.png")
    PILImage.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    (tmp_path / "manifest.csv").write_text("image,mask,dataset\ni.png,m.png,a\n")
    report = evaluate_interactive(ThresholdSegmenter(), tmp_path / "manifest.csv", max_clicks=max_clicks)
    assert len(report["all"]["click_dice"]) == max_clicks  # --max-clicks counts the first click too
    head, row = format_table(report).splitlines()[:2]
    assert head.split()[3:5] == ["1", "click"]
    if header is None:
        assert "clicks" not in head and len(row.split()) == 6
    else:
        assert header in head and "5 clicks" not in head.replace(header, "")
        assert float(row.split()[4]) == pytest.approx(report["datasets"]["a"]["click_dice"][last_click], abs=1e-3)


def test_manifest_without_mask_column_is_refused(tmp_path):
    (tmp_path / "bad.csv").write_text("image,label\na.png,1\n")
    with pytest.raises(MedfmError, match="needs columns image and mask"):
        evaluate_interactive(ThresholdSegmenter(), tmp_path / "bad.csv")


@pytest.mark.usefixtures("fake_segmenter")
def test_cli_writes_the_results_it_prints(tmp_path, capsys):
    import json

    from clitools import run_cli

    yy, xx = np.mgrid[0:40, 0:50]
    mask = (xx - 25) ** 2 + (yy - 20) ** 2 <= 64
    PILImage.fromarray(np.where(mask, 200, 0).astype(np.uint8)).save(tmp_path / "i.png")
    PILImage.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    (tmp_path / "manifest.csv").write_text("image,mask,dataset\ni.png,m.png,discs\n")
    code, out, err = run_cli(["evaluate", "interactive", str(tmp_path / "manifest.csv"), "--model", "fake-threshold",
                              "--results", str(tmp_path / "out" / "results.json"), "--json", "--mkdir"], capsys)
    assert code == 0, err
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written == json.loads(out) and written["datasets"]["discs"]["box_dice"] == pytest.approx(1.0)
    code, _, err = run_cli(["evaluate", "interactive", str(tmp_path / "none.csv"), "--model", "fake-threshold",
                            "--results", str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "none.csv: cannot read the manifest" in err and not (tmp_path / "bad.json").exists()
