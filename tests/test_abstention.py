"""Answers that can say "none of these": zero-shot and search abstain below a calibrated similarity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)

from medfm.errors import MedfmError
from medfm.io import Image, save
from medfm.models.registry import abstention_threshold, create_encoder, list_encoders
from medfm.paths import shared_data_dir
from medfm.tasks.classify import OTHER, classify
from medfm.tasks.search import build_index, search


@pytest.fixture
def pictures(tmp_path: Path) -> list[Path]:
    paths = []
    for name, value in (("bright", 230), ("dark", 20)):
        save(Image(np.full((32, 32), value, np.uint8)), tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    return paths


def test_zero_shot_reports_similarity_and_abstains_when_no_label_fits(pictures: list[Path]) -> None:
    encoder = FakeEncoder()
    fitting = classify(pictures, encoder, labels=["bright", "dark"], abstain_below=0.5)
    unrelated = classify(pictures, encoder, labels=["polyp", "fundus photograph"], abstain_below=0.5)
    assert [r["prediction"] for r in fitting] == ["bright", "dark"] and not any(r["abstained"] for r in fitting)
    assert [r["prediction"] for r in unrelated] == [OTHER, OTHER] and all(r["abstained"] for r in unrelated)
    for result in fitting + unrelated:
        assert result["ood_score"] == pytest.approx(1 - result["similarity"])
    assert min(r["similarity"] for r in fitting) > max(r["similarity"] for r in unrelated)
    assert unrelated[0]["provenance"].parameters["abstain_below"] == 0.5
    plain = classify(pictures, encoder, labels=["polyp", "fundus photograph"])
    assert "abstained" not in plain[0] and plain[0]["prediction"] != OTHER  # softmax alone always names a label


def test_search_drops_hits_below_the_threshold_and_keeps_the_best_score(pictures: list[Path], tmp_path: Path) -> None:
    encoder = FakeEncoder()
    build_index([str(p) for p in pictures], encoder, str(tmp_path / "index"), progress=False)
    from medfm.index import open_index

    with open_index(str(tmp_path / "index")) as index:
        found = search(index, encoder, text="bright", k=2, abstain_below=0.5)
        missing = search(index, encoder, text="an endoscopy polyp", k=2, abstain_below=0.5)
        everything = search(index, encoder, text="an endoscopy polyp", k=2)
    assert [Path(hit.path).name for hit in found][:1] == ["bright.png"]
    assert missing == [] and missing.best_score == pytest.approx(everything[0].score) and everything[0].score < 0.5


def test_the_shipped_encoder_carries_calibrated_thresholds_for_its_own_weights_only() -> None:
    config = list_encoders()["medfm-clip-small"]
    sha = config["weights"]["sha256"]
    assert 0 < abstention_threshold("medfm-clip-small", sha, "zero_shot") < abstention_threshold("medfm-clip-small", sha, "search") < 1
    with pytest.raises(MedfmError, match="no calibrated zero-shot abstention threshold"):
        abstention_threshold("medfm-clip-small", "0" * 64, "zero_shot")


@pytest.mark.usefixtures("fake_models")
def test_cli_abstains_with_an_explicit_threshold_and_refuses_an_uncalibrated_model(pictures: list[Path], capsys) -> None:
    code, out, err = run_cli(["classify", *map(str, pictures), "--labels", "polyp,fundus", "--model", "fake-clip",
                              "--abstain-threshold", "0.5", "--json"], capsys)
    assert code == 0, err
    assert [r["prediction"] for r in json.loads(out)] == [OTHER, OTHER]
    code, out, err = run_cli(["classify", str(pictures[0]), "--labels", "polyp,fundus", "--model", "fake-clip", "--abstain"], capsys)
    assert code == 2 and "no calibrated zero-shot abstention threshold" in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("fake_models")
def test_cli_search_says_nothing_is_similar_enough(pictures: list[Path], tmp_path: Path, capsys) -> None:
    index = str(tmp_path / "index")
    assert run_cli(["index", "build", "--model", "fake-clip", "--index", index, *map(str, pictures), "--no-progress"], capsys)[0] == 0
    code, out, err = run_cli(["search", "--index", index, "--text", "an endoscopy polyp", "--abstain-threshold", "0.5"], capsys)
    assert code == 0 and out.strip() == "" and "no indexed case is similar enough" in err


@pytest.mark.usefixtures("fake_models")
def test_probes_do_not_take_the_zero_shot_threshold(pictures: list[Path]) -> None:
    from medfm.models.probe import LinearProbe, Probe

    encoder = create_encoder("fake-clip")
    from medfm.models.encoders.base import model_record

    probe = Probe(LinearProbe().fit(np.eye(2, 32), ["a", "b"]), model_record(encoder.info))
    with pytest.raises(MedfmError, match="a probe has its own operating point"):
        classify(pictures, encoder, probe=probe, abstain_below=0.5)


SHARED = shared_data_dir()


@pytest.mark.integration
@pytest.mark.skipif(not (SHARED / "medpix2_image_text_train").exists(), reason="needs ../shared/data (the project datasets)")
def test_held_out_images_asked_without_their_modality_score_lower() -> None:
    from medfm.eval.cls_metrics import roc_auc
    from medfm.train.abstention import zero_shot_scores
    from medfm.train.clip_data import collect, read_plane

    test = [sample for sample in collect(SHARED) if sample.split == "test"][::8]
    encoder = create_encoder("medfm-clip-small")
    inside, outside = zero_shot_scores(test, encoder.encode_planes([read_plane(SHARED, s) for s in test]), encoder, "modality")
    labels = np.r_[np.ones(len(inside)), np.zeros(len(outside))].astype(int)
    assert roc_auc(np.r_[inside, outside], labels) > 0.85
    threshold = abstention_threshold("medfm-clip-small", encoder.info.weights_sha256, "zero_shot")
    assert (inside >= threshold).mean() > 0.9 and (outside < threshold).mean() > 0.4
