"""Labelled crops from a box table (BCCD's cell types for the probe benchmark)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.paths import shared_data_dir
from medfm.train.box_crops import BoxCrop, cut, read_box_crops


def test_boxes_become_labelled_crops_clipped_to_the_image(tmp_path):
    (tmp_path / "boxes.csv").write_text("image,label,xmin,ymin,xmax,ymax\n"
                                        "a.jpg,WBC,2,1,5,3\n"
                                        "a.jpg,RBC,8,6,12,20\n"
                                        "b.jpg,Platelets,4,4,4,9\n")  # no width: dropped
    crops = read_box_crops(tmp_path)
    assert crops == [BoxCrop("a.jpg", "WBC", (2, 1, 5, 3)), BoxCrop("a.jpg", "RBC", (8, 6, 12, 20))]
    plane = np.arange(100).reshape(10, 10)
    assert cut(plane, crops[0].box).tolist() == [[12, 13, 14], [22, 23, 24]]
    assert cut(plane, crops[1].box).shape == (4, 2)  # rows 6-9, columns 8-9


@pytest.mark.parametrize(("text", "message"), [
    ("image,label,xmin,ymin\na.jpg,WBC,1,2\n", "missing xmax, ymax"),
    ("image,label,xmin,ymin,xmax,ymax\n", "it has no rows"),
    ("image,label,xmin,ymin,xmax,ymax\na.jpg,WBC,1,x,3,4\n", "line 2: box corners must be numbers"),
])
def test_a_bad_box_table_is_one_line_naming_the_file(tmp_path, text, message):
    (tmp_path / "boxes.csv").write_text(text)
    with pytest.raises(MedfmError, match=f"boxes.csv: .*{message}"):
        read_box_crops(tmp_path)
    with pytest.raises(MedfmError, match="boxes.csv: cannot read the box table"):
        read_box_crops(tmp_path / "absent")


def test_bccd_boxes_give_the_three_cell_types():
    folder = shared_data_dir() / "bccd_blood_cells"
    if not (folder / "boxes.csv").is_file():
        pytest.skip(f"{folder} not present: the shared datasets are needed for this integration check")
    counts = Counter(crop.label for crop in read_box_crops(folder))
    assert set(counts) == {"RBC", "WBC", "Platelets"} and counts["WBC"] > 250 and counts["Platelets"] > 250
