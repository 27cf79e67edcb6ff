"""Domain routers: `medfm train router` on generated planes, the folder answering `ask`, the shipped router and its
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)

from medfm.errors import MedfmError
from medfm.io import Image, save
from medfm.models.registry import (
    DEFAULT_ENCODER,
    create_encoder,
    create_router,
    list_encoders,
    question_abstention,
    list_routers,
    router_for,
)
from medfm.models.router import route_with
from medfm.tasks.ask import ask, routing_model
from medfm.tasks.domains import MODALITIES, REGIONS, threshold_for
from medfm.train.router import train_router


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def _plane(rng: np.random.Generator, modality: str, region: str, size: int = 96) -> np.ndarray:
    """"ct" planes are smooth blobs, "mri" planes fine stripes; "head" planes show them inside a small disc on black,
    "chest" planes over the whole field (planes are windowed by their own range: brightness alone would not tell)."""
    y, x = np.mgrid[:size, :size]
    if modality == "ct":
        cy, cx = rng.integers(25, 70, 2)
        pattern = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 18.0**2))
    else:
        pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(rng.uniform(0, np.pi)) + y * np.sin(rng.uniform(0, np.pi))) / 4)
    plane = 60 + 120 * pattern + rng.normal(0, 6, (size, size))
    if region == "head":
        plane[(y - size / 2) ** 2 + (x - size / 2) ** 2 > (size / 4) ** 2] = 0
    return plane.clip(0, 255).astype(np.uint8)


def _manifest(folder: Path, per_pair: int = 8, validation: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = ["image,modality,region,split"]
    for modality in ("ct", "mri"):
        for region in ("head", "chest"):
            for n in range(per_pair + validation):
                name = f"{modality}-{region}-{n}.png"
                save(Image(_plane(rng, modality, region).T), folder / name)
                rows.append(f"{name},{modality},{region},{'val' if n >= per_pair else 'train'}")
    rows.append("ct-head-0.png,ct,,train")  # no region: only in the modality fit
    volume = np.stack([_plane(rng, "mri", "chest").T for _ in range(5)], axis=2)
    save(Image(volume), folder / "volume.nii.gz")
    rows.append("volume.nii.gz,mri,chest,train")  # a volume: read through the planes ask reads
    (folder / "router.csv").write_text("\n".join(rows) + "\n")
    return folder / "router.csv"


def test_training_learns_each_axis_and_the_folder_answers_ask(tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path)
    model = tmp_path / "router"
    code, out, err = run_cli(["train", "router", str(manifest), "-o", str(model)], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["validated_on"] == "val"
    assert summary["modality"]["train_planes"] == 34 and summary["region"]["train_planes"] == 33
    assert summary["modality"]["val_accuracy"] == 1.0 and summary["region"]["val_accuracy"] == 1.0
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "router" and config["classes"] == {"modality": ["ct", "mri"], "region": ["chest", "head"]}
    assert set(config["input_sizes"].values()) <= {112, 224}
    router = create_router(model)
    rng = np.random.default_rng(5)
    planes = [_plane(rng, "mri", "chest"), _plane(rng, "ct", "head")]
    probabilities = router.probabilities(planes)
    assert probabilities["modality"].argmax(1).tolist() == [1, 0] and probabilities["region"].argmax(1).tolist() == [0, 1]
    assert np.allclose(probabilities["region"].sum(1), 1.0)
    image = save(Image(planes[0].T), tmp_path / "new.png")
    code, out, err = run_cli(["ask", str(image), "What imaging modality is this?", "--router", str(model), "--json",
                              "--abstain-threshold", "-1"], capsys)  # stripes are like no medical label
    assert code == 0, err
    answer = json.loads(out)
    assert answer["answer"] == MODALITIES["mri"] and answer["method"] == "domain router"
    assert set(answer["probabilities"]) == {MODALITIES["ct"], MODALITIES["mri"]} and answer["confidence"] > 0.5
    assert answer["provenance"]["parameters"]["router_sha256"] == config["weights"]["sha256"]
    assert ask([image], "Is this the chest?", router.encoder, router=router)["answer"] == "yes"
    assert ask([image, image], "Which body region is shown?", router.encoder, router=router)["answer"] == REGIONS["chest"]
    # a question the router has no axis for stays zero-shot
    assert ask([image], "Is it bright or dark?", router.encoder, router=router)["method"] == "zero-shot closed question"
    with pytest.raises(MedfmError, match="not over the weights of 'fake-clip'"):
        routing_model(FakeEncoder("fake-clip"), model)


def test_bad_manifests_and_folders_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "columns.csv").write_text("image,modality,split\na.png,ct,train\n")
    rows = "image,modality,region,split\n" + "".join(f"p{n}.png,ct,head,train\n" for n in range(3))
    for n in range(3):
        save(Image(np.full((32, 32), 10 * n, np.uint8)), tmp_path / f"p{n}.png")
    (tmp_path / "one-class.csv").write_text(rows)
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    (tmp_path / "broken.csv").write_text(rows.replace("p2.png,ct,head", "broken.png,mri,chest"))
    (tmp_path / "cased.csv").write_text(rows.replace("p2.png,ct,head", "p2.png,MRI,chest"))
    for manifest, message in (("columns.csv", "no column 'region'"), ("one-class.csv", "labels are all 'ct'"),
                              ("broken.csv", "broken.png"), ("absent.csv", "cannot read the manifest"),
                              ("cased.csv", "cased.csv: modality label 'MRI' is written 'mri' in medfm's keys")):
        code, _, err = run_cli(["train", "router", str(tmp_path / manifest), "-o", str(tmp_path / "out")], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    (tmp_path / "out").mkdir()
    with pytest.raises(MedfmError, match="already exists"):
        train_router(tmp_path / "one-class.csv", tmp_path / "out")


def test_the_shipped_router_serves_the_default_encoder_and_refuses_other_weights() -> None:
    encoder = create_encoder(DEFAULT_ENCODER)
    router = router_for(encoder)
    assert router is not None and router.encoder is encoder and router.info.name == "medfm-router-small"
    config = list_routers()["medfm-router-small"]
    assert router.info.weights_sha256 == config["weights"]["sha256"]
    assert set(router.classes["modality"]) == set(MODALITIES) and set(router.classes["region"]) == set(REGIONS)
    rng = np.random.default_rng(0)
    probabilities = router.probabilities([_plane(rng, "ct", "head"), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)])
    assert all(p.shape == (2, len(router.classes[axis])) and np.allclose(p.sum(1), 1.0) for axis, p in probabilities.items())
    with pytest.raises(MedfmError, match="retrain it"):
        route_with({"name": "stale", **config, "encoder_sha256": "0" * 64}, None, encoder)


def test_question_abstention_gives_each_axis_its_calibrated_threshold() -> None:
    calibrated = list_encoders()[DEFAULT_ENCODER]["abstention"]
    sha = list_encoders()[DEFAULT_ENCODER]["weights"]["sha256"]
    assert question_abstention(True, None, DEFAULT_ENCODER, sha) == {"default": calibrated["zero_shot"],
                                                                     "region": calibrated["zero_shot_region"]}
    assert question_abstention(True, 0.3, DEFAULT_ENCODER, sha) == 0.3  # the user's number holds for every axis
    assert question_abstention(False, None, DEFAULT_ENCODER, sha) is None
    with pytest.raises(MedfmError, match="no calibrated zero-shot abstention threshold"):
        question_abstention(True, None, DEFAULT_ENCODER, "0" * 64)
    assert threshold_for({"default": 0.3, "region": 0.2}, "region") == 0.2
    assert threshold_for({"default": 0.3, "region": 0.2}, "presence") == 0.3 and threshold_for(0.4, "region") == 0.4


def test_the_server_answers_modality_questions_with_the_router_shipped_for_its_encoder(tmp_path: Path, fake_models) -> None:  # noqa: F811
    import shutil

    from servertools import make_client, make_data

    from medfm.models import registry

    real_configs = Path(registry.__file__).parent / "configs"
    for name in ("medfm-clip-small", "medfm-router-small"):
        shutil.copy(real_configs / f"{name}.json", registry.CONFIG_DIR)
    registry.reload_configs()
    data = make_data(tmp_path)
    with make_client(tmp_path, data["url"], encoder="medfm-clip-small") as client:
        body = {"image_ids": [data["disc"]], "question": "What imaging modality is this?", "abstain": False}
        answer = client.post("/api/ask", json=body)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["method"] == "domain router" and result["answer"] in MODALITIES.values()
        assert result["provenance"]["parameters"]["router"] == "medfm-router-small"
        presence = client.post("/api/ask", json={**body, "question": "Is there a polyp?"}).json()
        assert presence["method"] == "zero-shot closed question"
        # abstaining, each question reads the threshold calibrated for its label set
        calibrated = list_encoders()["medfm-clip-small"]["abstention"]
        for question, key in (("What imaging modality is this?", "zero_shot"), ("Which body region is shown?", "zero_shot_region"),
                              ("Is there a polyp?", "zero_shot")):
            answer = client.post("/api/ask", json={**body, "question": question, "abstain": True}).json()
            assert answer["provenance"]["parameters"]["abstain_below"] == calibrated[key], question
        assert calibrated["zero_shot_region"] != calibrated["zero_shot"]
