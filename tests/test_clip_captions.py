"""medfm-clip's caption banks: anatomy captions (body region and view) from small synthetic manifests."""

import csv

import pytest

from clipdata import write_cache
from medfm.errors import MedfmError
from medfm.tasks.domains import REGION_TEMPLATES, REGIONS
from medfm.train.clip_data import Sample, anatomy_templates, collect, fundus, hc18, load_cache, medpix, pocus


def _manifest(root, name, rows):
    (root / name).mkdir(parents=True)
    with open(root / name / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _hc18_and_fundus(root):
    _manifest(root, "hc18_fetal_head_us", [{"image": f"images/{i:03d}_HC.jpg", "subject_group": f"{i:03d}"} for i in range(12)])
    _manifest(root, "fundus_vessels", [{"image": f"{i}.png", "dataset": "CHASE_DB1", "subject": str(i // 2), "eye": "LR"[i % 2]}
                                       for i in range(4)] + [{"image": "21.png", "dataset": "DRIVE", "subject": "21", "eye": ""}])


def test_fetal_head_ultrasound_is_called_head_in_words_shared_with_other_modalities():
    fetal = anatomy_templates(Sample("hc18_fetal_head_us", "a.jpg", "1", "ultrasound", "head", "hc18:fetal_head", []))
    assert {"head ultrasound", "ultrasound of the head", "imaging of the head", "head sonography"} <= set(fetal)
    brain = anatomy_templates(Sample("medpix2_image_text_train", "b.png", "2", "ct", "head", "medpix:CT:head:axial", [], view="axial view"))
    assert {"head CT", "CT of the head, axial view", "head CT, axial view"} <= set(brain)
    assert "imaging of the head" in set(fetal) & set(brain)  # one caption for both: a positive pair when drawn together
    assert not any("," in t for t in fetal)  # no view recorded: no view caption
    assert all("head" in t for t in fetal + brain)


@pytest.mark.parametrize("region", list(REGIONS))
def test_anatomy_captions_are_not_the_zero_shot_prompts(region):
    # Validation asks "a scan of the head"...: training on those exact texts would flatter it.
    prompts = {template.format(word) for template in REGION_TEMPLATES for word in REGIONS.values()}
    sample = Sample("d", "p", "g", "ultrasound", region, "l", [], view="convex probe")
    assert anatomy_templates(sample) and not set(anatomy_templates(sample)) & prompts


def test_readers_take_the_view_from_the_metadata(tmp_path):
    _manifest(tmp_path, "medpix2_image_text_train", [
        {"image": f"images/{i}.png", "case_id": "MPX1", "modality": "CT", "modality_detail": "CT w/contrast", "plane": plane,
         "location": "Brain", "location_category": "Head", "caption": "a mass", "case_title": "Glioma"}
        for i, plane in enumerate(["Axial", "Lateral", "NOS - Not specified"])])
    assert [s.view for s in medpix(tmp_path)] == ["axial view", "lateral view", ""]
    _manifest(tmp_path, "pocus_lung_ultrasound_video", [
        {"file": f"{i}.jpg", "type": "image", "label": "regular", "decoded_frames": "1", "split_group": "7", "probe": probe}
        for i, probe in enumerate(["convex", "linear", ""])])
    assert [s.view for s in pocus(tmp_path)] == ["convex probe", "linear probe", ""]
    _hc18_and_fundus(tmp_path)
    assert [s.view for s in fundus(tmp_path)] == ["left eye", "right eye", "left eye", "right eye", ""]
    assert {s.view for s in hc18(tmp_path)} == {""}  # HC18's manifest records no plane


def test_the_anatomy_bank_adds_captions_and_keeps_the_splits(tmp_path, monkeypatch):
    monkeypatch.setattr("medfm.train.clip_data.READERS", (hc18, fundus))
    _hc18_and_fundus(tmp_path)
    basic, anatomy = collect(tmp_path), collect(tmp_path, "anatomy")
    assert [(s.path, s.split) for s in basic] == [(s.path, s.split) for s in anatomy]
    assert {s.split for s in basic} == {"train", "val", "test"}
    for plain, rich in zip(basic, anatomy, strict=True):
        assert set(plain.templates) < set(rich.templates)
        assert set(rich.templates) - set(plain.templates) == set(anatomy_templates(rich))
    left = next(s for s in anatomy if s.view == "left eye")
    assert "fundus photograph of the retina, left eye" in left.templates
    assert "head ultrasound" not in basic[0].templates and "head ultrasound" in anatomy[0].templates
    with pytest.raises(MedfmError, match="captions must be one of basic, anatomy; got 'rich'"):
        collect(tmp_path, "rich")


def test_a_cache_of_another_caption_bank_is_refused_in_one_line(tmp_path):
    write_cache(tmp_path / "cache.pt")  # written without a bank name, as caches before the choice were: basic
    assert len(load_cache(tmp_path / "cache.pt", "basic")[1]) == 40
    with pytest.raises(MedfmError, match=r"cache.pt: holds the 'basic' caption bank, not 'anatomy'; give another --cache"):
        load_cache(tmp_path / "cache.pt", "anatomy")


def test_training_checks_the_cache_bank_and_the_cli_passes_the_choice(tmp_path, monkeypatch, capsys):
    import medfm.train.clip
    from clitools import run_cli

    write_cache(tmp_path / "cache.pt")
    with pytest.raises(MedfmError, match="holds the 'basic' caption bank, not 'anatomy'"):
        medfm.train.clip.train_clip(tmp_path, tmp_path / "run", epochs=1, batch_size=8, cache=tmp_path / "cache.pt", captions="anatomy")
    with pytest.raises(MedfmError, match="captions must be one of basic, anatomy; got 'all'"):
        medfm.train.clip.train_clip(tmp_path, tmp_path / "run", cache=tmp_path / "cache.pt", captions="all")
    calls = []
    monkeypatch.setattr(medfm.train.clip, "train_clip", lambda **options: calls.append(options) or tmp_path / "w.safetensors")
    code, _, err = run_cli(["train", "clip", "--out", str(tmp_path), "--captions", "anatomy", "--loss", "dhn-nce"], capsys)
    assert code == 0, err
    assert calls == [{"resume": False, "out": tmp_path, "captions": "anatomy", "loss": "dhn-nce"}]
