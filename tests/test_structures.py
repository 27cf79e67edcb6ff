"""Structure names coded with SNOMED CT and one palette: the server's sessions, PNG/NIfTI label maps
(their provenance) and DICOM SEG take both from medfm.structures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.io import Image, load
from medfm.io.label_maps import save_segmentation
from medfm.models.segmenters import SegmenterInfo
from medfm.structures import PALETTE, default_color, rgb, term, terminology
from medfm.tasks.segment import segmentation_provenance
from servertools import make_client, make_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("structures")
    return {"root": root, **make_data(root)}


@pytest.fixture(scope="module")
def client(data: dict):
    with make_client(data["root"], data["url"]) as client:
        yield client


def test_the_terms_are_pydicoms_snomed_codes_with_their_seg_category():
    from pydicom.sr.codedict import codes

    liver, lesion = term(codes.SCT.Liver.value), term(codes.SCT.Lesion.value)
    assert (liver.code, liver.meaning, liver.category_code) == ("10200004", "Liver", codes.SCT.AnatomicalStructure.value)
    assert lesion.category_code == codes.SCT.MorphologicallyAbnormalStructure.value
    assert all(t.scheme == "SCT" for t in terminology().values()) and len(terminology()) > 30
    with pytest.raises(MedfmError, match="'123' is not in medfm's SNOMED CT list"):
        term("123")
    assert default_color(1) == PALETTE[0] and default_color(17) == PALETTE[0] and default_color(2) == PALETTE[1]


def test_the_api_serves_the_one_palette_and_the_terms(client):
    answer = client.get("/api/terminology").json()
    assert answer["palette"] == list(PALETTE)
    assert {"code": "10200004", "scheme": "SCT", "meaning": "Liver",
            "category": {"code": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}} in answer["terms"]


def test_a_new_structure_takes_the_palette_colour_and_a_code_names_it(client, data):
    session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
    plane = client.post(f"/api/sessions/{session}/prompts", json={"k": 2, "label": 3, "box": [16, 16, 32, 32]}).json()
    assert plane["labels"]["3"]["color"] == PALETTE[2]
    labels = client.post(f"/api/sessions/{session}/labels", json={"label": 3, "code": "10200004"}).json()["labels"]
    assert labels["3"]["name"] == "Liver" and labels["3"]["code"]["code"] == "10200004"
    kept = client.post(f"/api/sessions/{session}/labels", json={"label": 3, "name": "left lobe"}).json()["labels"]["3"]
    assert kept["name"] == "left lobe" and kept["code"]["code"] == "10200004"  # a new name keeps the code
    bad = client.post(f"/api/sessions/{session}/labels", json={"label": 3, "code": "999"})
    assert bad.status_code == 400 and "SNOMED CT" in bad.json()["detail"]
    assert client.post(f"/api/sessions/{session}/labels", json={"label": 3, "code": "12ab"}).status_code == 400
    client.post(f"/api/sessions/{session}/labels", json={"label": 3, "color": "#102030"})
    saved = client.post(f"/api/sessions/{session}/save", json={"name": "coded"}).json()
    file = Path(data["root"], "annotations", str(data["disc"]), "coded", f"v{saved['version']:04d}.nii.gz")
    (structure,) = load(file).provenance.structures  # the NIfTI carries name, colour and code
    assert structure["label_name"] == "left lobe" and structure["color"] == "#102030" and structure["code"]["code"] == "10200004"
    reopened = client.post("/api/sessions", json={"image_id": data["disc"], "annotation": {"name": "coded", "version": saved["version"]}})
    assert reopened.json()["labels"]["3"]["code"]["meaning"] == "Liver"
    cleared = client.post(f"/api/sessions/{session}/labels", json={"label": 3, "code": ""}).json()["labels"]["3"]
    assert "code" not in cleared and cleared["name"] == "left lobe"


def test_a_dicom_seg_carries_the_code_and_the_colour(client, data):
    import highdicom as hd

    session = client.post("/api/sessions", json={"image_id": data["ct"]}).json()["session"]
    client.post(f"/api/sessions/{session}/prompts", json={"k": 1, "box": [8, 8, 24, 24], "code": "52988006"})
    client.post(f"/api/sessions/{session}/prompts", json={"k": 1, "label": 2, "box": [2, 2, 7, 7]})
    saved = client.post(f"/api/sessions/{session}/save", json={"name": "ct-coded", "format": "dicom-seg"}).json()
    seg = hd.seg.segread(Path(data["root"], "annotations", str(data["ct"]), "ct-coded", f"v{saved['version']:04d}.dcm"))
    coded, plain = seg.SegmentSequence
    assert coded.SegmentLabel == "Lesion" and coded.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert coded.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal structure
    assert plain.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # no code: as before
    for segment, colour in ((coded, PALETTE[0]), (plain, PALETTE[1])):
        shown = hd.color.CIELabColor.from_dicom_value(tuple(segment.RecommendedDisplayCIELabValue)).to_rgb()
        assert np.abs(np.subtract(shown, rgb(colour))).max() <= 2


def test_label_maps_from_the_cli_path_carry_the_palette_colours(tmp_path):
    labels = np.zeros((20, 20, 1), np.uint8)
    labels[2:8, 2:8] = 1
    labels[10:15, 10:15] = 2
    structures = [{"label": 1, "label_name": "a", "planes": []}, {"label": 2, "label_name": "b", "planes": []}]
    image = Image(labels, provenance=segmentation_provenance(Image(labels.astype(np.float32)), SegmenterInfo("m", None), [], structures))
    back = load(save_segmentation(image, tmp_path / "labels.png")).provenance
    assert [s["color"] for s in back.structures] == [PALETTE[0], PALETTE[1]]
