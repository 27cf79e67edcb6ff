"""Image–mask pair generators (issue 14): training on a manifest's masks, samples written with their label maps and a
manifest that `medfm train seg` reads, and `medfm evaluate synthetic --task seg`; all with tiny networks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder
from PIL import Image as PILImage
from test_generators import SIZE, TINY, write_classes

import medfm
from medfm.errors import MedfmError
from medfm.models.generators import Generator
from medfm.models.generators.pixels import split_mask
from medfm.tasks.generate import generate, translate_file
from medfm.train.generator import train_generator
from medfm.train.seg_data import read_cases
from medfm.train.synthetic_eval import evaluate_synthetic

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


def write_pairs(root: Path, count: int = 12, side: int = 40) -> Path:
    """Grey discs on noise (side×side, a grid other than the generator's) with label maps: 1 the disc, 2 its core;
    ``manifest.csv`` (image, mask, split) holds out the last third."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    rows = []
    for n in range(count):
        cy, cx, radius = rng.integers(14, side - 14), rng.integers(14, side - 14), rng.integers(7, 12)
        distance = np.hypot(yy - cy, xx - cx)
        labels = np.where(distance < radius / 2, 2, np.where(distance < radius, 1, 0)).astype(np.uint8)
        pixels = np.clip(60 * labels + rng.normal(50, 10, (side, side)), 0, 255).astype(np.uint8)
        PILImage.fromarray(pixels).save(root / f"image{n}.png")
        PILImage.fromarray(labels).save(root / f"mask{n}.png")
        rows.append([f"image{n}.png", f"mask{n}.png", "train" if n < 2 * count // 3 else "test"])
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mask", "split"], *rows])
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pairs")
    train_generator(write_pairs(root / "data"), root / "P", condition="none", masks=True, size=SIZE, network=TINY,
                    max_steps=6, batch_size=4)
    return root / "P"


def test_the_mask_channel_holds_each_label_at_its_own_level(pair_dir: Path) -> None:
    config = json.loads((pair_dir / "config.json").read_text())
    assert config["mask_labels"] == [1, 2] and config["channels"] == 1
    assert "quality" not in config and "edit gate" not in (pair_dir / "card.md").read_text()  # pairs are never edited
    assert "Image–mask pairs" in (pair_dir / "card.md").read_text()
    levels = np.array([[0.0, 0.24], [0.26, 0.74], [0.76, 1.0]])  # labels 0, 1, 2 at grey 0, 1/2, 1; rounded between
    image, labels = split_mask(np.stack([np.full((3, 2), 0.3), levels]), [1, 2])
    np.testing.assert_array_equal(labels, [[0, 0], [1, 1], [2, 2]])
    assert image.shape == (1, 3, 2) and (image == 0.3).all()


class ExactPair(torch.nn.Module):
    """The exact rectified-flow velocity toward one image–mask pair: the image grey 0 (-1 inside the network), the
    mask channel label 2 on the left half (+1) and background on the right (-1)."""

    def forward(self, x, timesteps):
        t = (timesteps / 999).clamp(min=1e-3)[:, None, None, None]
        target = -torch.ones_like(x)
        target[:, 1, :, : x.shape[-1] // 2] = 1.0
        return (x - target) / t


def test_generate_writes_images_masks_and_a_manifest_that_train_seg_reads(tmp_path: Path) -> None:
    exact = Generator(ExactPair(), {"name": "pair", "method": "flow", "condition": "none", "size": 8, "channels": 1,
                                    "mask_labels": [1, 2]})
    result = generate(exact, tmp_path, 2, steps=4, seed=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.csv", "masks"]
    mask = medfm.load(result["images"][0]["mask"])
    assert mask.provenance.synthetic and dict(mask.provenance.parameters)["seed"] == 3
    expected = np.zeros((8, 8), np.uint8)
    expected[:, :4] = 2
    np.testing.assert_array_equal(mask.array[:, :, 0, 0, 0].T, expected)  # (columns, rows) stored
    np.testing.assert_array_equal(medfm.load(result["images"][1]["file"]).array, 0)
    cases = read_cases(tmp_path / "manifest.csv")
    assert [Path(c.image).name for c in cases] == ["pair_0000_uncond.png", "pair_0001_uncond.png"]
    assert [Path(c.masks[0]).parent.name for c in cases] == ["masks", "masks"]


def test_a_trained_pair_generator_samples_label_maps_it_learnt(pair_dir: Path, tmp_path: Path) -> None:
    result = generate(pair_dir, tmp_path, 3, steps=2)
    for item in result["images"]:
        assert medfm.load(item["file"]).shape[:2] == (SIZE, SIZE)
        assert set(np.unique(medfm.load(item["mask"]).array)) <= {0, 1, 2}


def test_pair_generators_refuse_what_they_cannot_do(pair_dir: Path, tmp_path: Path) -> None:
    PILImage.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(MedfmError, match="translation takes an image generator; 'P' makes image–mask pairs"):
        translate_file(pair_dir, tmp_path / "grey.png", tmp_path / "t.png", source="a", target="b")
    data = write_pairs(tmp_path / "data", count=3)
    PILImage.fromarray(np.zeros((20, 20), np.uint8)).save(data.parent / "mask1.png")
    with pytest.raises(MedfmError, match=r"mask1.png: the mask is 20x20 but its image is 40x40"):
        train_generator(data, tmp_path / "G", condition="none", masks=True, size=SIZE, network=TINY, max_steps=1)
    with pytest.raises(MedfmError, match="image–mask pairs come from a CSV manifest"):
        train_generator(data.parent, tmp_path / "G", condition="none", masks=True, size=SIZE, network=TINY, max_steps=1)
    assert not (tmp_path / "G").exists()


def test_evaluate_synthetic_seg_trains_both_segmenters_on_the_same_real_images(pair_dir: Path, tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "data")
    result = evaluate_synthetic(pair_dir, data, FakeEncoder(), task="seg", per_class=5, steps=2, n_boot=40, workers=1,
                                max_steps=2)
    assert result["n_train"] == {"real": 8, "synthetic": 5} and result["n_heldout"] == {"real": 4}
    segmenter = result["segmenter"]
    real, augmented = segmenter["training"]["real_only"], segmenter["training"]["real_plus_synthetic"]
    # the synthetic pairs join real images' groups: both trainings hold out the same real images
    assert real["train_images"] + real["val_images"] == 8 and augmented["train_images"] + augmented["val_images"] == 13
    assert augmented["val_images"] - real["val_images"] == 5 - (augmented["train_images"] - real["train_images"])
    for metric in ("dice", "hd95", "dice label 1", "dice label 2"):
        assert metric in segmenter["difference"]
    difference = segmenter["real_plus_synthetic"]["dice"]["value"] - segmenter["real_only"]["dice"]["value"]
    assert segmenter["difference"]["dice"]["value"] == pytest.approx(difference)
    assert result["frd"]["n_synthetic"] == 5 and result["frd"]["n_real"] == 4
    assert {s["nearest_training_line"] for s in result["memorisation"]["samples"]} <= set(range(2, 10))


def test_evaluate_synthetic_seg_bad_input(pair_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_pairs(tmp_path / "data")
    images = write_classes(tmp_path / "classes", per_class=3)
    train_generator(images, tmp_path / "C", size=SIZE, network=TINY, max_steps=1, batch_size=2)
    with pytest.raises(MedfmError, match="makes images without masks; --task seg needs an image–mask pair generator"):
        evaluate_synthetic(tmp_path / "C", data, FakeEncoder(), task="seg")
    PILImage.fromarray(np.full((40, 40), 3, np.uint8)).save(data.parent / "mask0.png")
    with pytest.raises(MedfmError, match=r"mask0.png: label value 3 is not one the generator 'P' makes \(1, 2\)"):
        evaluate_synthetic(pair_dir, data, FakeEncoder(), task="seg", max_steps=1)
    code, _, err = run_cli(["evaluate", "synthetic", str(pair_dir), "--task", "seg", "--data", str(data),
                            "--budget-min", "0"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--budget-min must be above 0" in err
    code, _, err = run_cli(["evaluate", "synthetic", str(pair_dir), "--task", "seg", "--data", str(data),
                            "--per-class", "2"], capsys)  # refused before anything is trained
    assert code == 2 and err.strip() == ("medfm: error: precision and recall with k=3 need more than 3 images in each set; "
                                         "got 4 real and 2 synthetic")


def test_cli_trains_a_pair_generator_and_evaluates_it_for_segmentation(pair_dir: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    data = write_pairs(tmp_path / "data")
    code, out, err = run_cli(["train", "generator", str(data), "--condition", "none", "--masks", "--size", str(SIZE),
                              "--network", json.dumps(TINY), "--max-steps", "1", "-o", str(tmp_path / "G")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "G" / "config.json").read_text())["mask_labels"] == [1, 2]
    report = tmp_path / "seg.html"
    code, out, err = run_cli(["evaluate", "synthetic", str(pair_dir), "--task", "seg", "--data", str(data), "--per-class",
                              "4", "--steps", "2", "--n-boot", "20", "--workers", "1",
                              "--max-steps", "1", "--report", str(report)], capsys)
    assert code == 0, err
    assert "real + synthetic" in out and "dice" in out and "near-copies" in out
    assert "training the segmenter on real plus synthetic (12 images)" in err
    page = report.read_text()
    assert "Downstream segmenter" in page and "Memorisation" in page


def test_the_workbench_catalogues_a_pair_generators_images_with_their_masks_as_draft_versions(pair_dir: Path,
                                                                                            tmp_path: Path) -> None:
    from servertools import make_client, wait_for_job

    (tmp_path / "generators").mkdir()
    (tmp_path / "generators" / "P").symlink_to(pair_dir, target_is_directory=True)
    with make_client(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}") as client:
        job = wait_for_job(client, client.post("/api/generate", json={"generator": "P", "n": 2, "steps": 2}).json()["job"])
        assert job["state"] == "done", str(job)
        catalogued = client.get("/api/images").json()["images"]
        assert len(catalogued) == 2 and all(image["synthetic"] for image in catalogued)  # the masks are no images
        for image in job["result"]["images"]:
            assert image["mask_version"] == 1
            (annotation,) = client.get(f"/api/images/{image['image_id']}/annotations").json()["annotations"]
            (version,) = annotation["versions"]
            assert (annotation["name"], version["status"], version["author"]) == ("generated-mask", "draft", "P")
            file = client.get(f"/api/images/{image['image_id']}/annotations/generated-mask/1/file")
            (tmp_path / "saved.nii.gz").write_bytes(file.content)
            name = client.get(f"/api/images/{image['image_id']}").json()["name"]
            (mask,) = (tmp_path / "generated").glob(f"*/masks/{name}")
            np.testing.assert_array_equal(medfm.load(tmp_path / "saved.nii.gz").array[..., 0, 0, 0],
                                          medfm.load(mask).array[..., 0, 0, 0])
