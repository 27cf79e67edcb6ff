"""Smoke tests of interactive training on generated shapes (no shared data)."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from medfm.models.segmenters.interactive_net import PROMPT_CHANNELS, InteractiveNet
from medfm.train.interactive import SIZE, augment, build_cache, first_prompt, generate_shape, train


def test_generated_shapes_are_pictures_with_an_object():
    picture, mask = generate_shape(np.random.default_rng(3))
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and 30 < mask.sum() < SIZE * SIZE * 0.8


def test_first_prompts_and_augmentation_keep_the_object():
    rng = np.random.default_rng(0)
    _, mask = generate_shape(rng)
    for _ in range(30):
        prompt = first_prompt(mask, rng)
        assert prompt["box"] is not None or prompt["points"] or prompt["positive"] is not None
        for (x, y), label in zip(prompt["points"], prompt["labels"]):
            assert mask[int(y), int(x)] == bool(label)
    pictures = torch.rand(4, 3, SIZE, SIZE)
    masks = torch.from_numpy(np.stack([mask] * 4).astype(np.float32))[:, None]
    out_pictures, out_masks = augment(pictures, masks, rng)
    assert out_pictures.shape == pictures.shape and out_masks.shape == masks.shape
    assert (out_masks.flatten(1).sum(1) >= 16).all()


def test_decoder_takes_cached_features_and_prompt_maps():
    net = InteractiveNet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1)).eval()
    features = net.encode(torch.rand(2, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4]
    assert net.decode(features, torch.zeros(2, PROMPT_CHANNELS, 64, 64)).shape == (2, 1, 32, 32)


def test_training_runs_checkpoints_and_resumes(tmp_path):
    torch.set_num_threads(1)
    cache = build_cache(None, tmp_path / "cache.npz", shapes=12)
    assert cache["pictures"].shape == (12, SIZE, SIZE, 3) and not cache["is_val"].any()
    out = tmp_path / "run"
    train(out, minutes=0.03, resume=False, cache_path=tmp_path / "cache.npz", data_root=None, batch_size=2, log=lambda _: None)
    first = torch.load(out / "checkpoint.pt", weights_only=False)
    assert first["step"] >= 1
    train(out, minutes=0.06, resume=True, cache_path=tmp_path / "cache.npz", data_root=None, batch_size=2, log=lambda _: None)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] > first["step"]
    weights = load_file(out / "medfm-interactive.safetensors")
    assert set(weights) == set(InteractiveNet().state_dict())



def test_training_steps_lower_the_loss_on_a_tiny_batch():
    """Twenty steps on four generated shapes: the training loss falls and the box Dice on that batch rises."""
    from monai.losses import DiceCELoss

    from medfm.train.interactive import training_step, validate

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shapes = [generate_shape(rng) for _ in range(4)]
    batch = {"pictures": np.stack([picture for picture, _ in shapes]), "masks": np.stack([mask for _, mask in shapes]),
             "sources": np.array(["shapes"] * 4), "is_val": np.ones(4, bool)}
    pictures = torch.from_numpy(batch["pictures"]).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(batch["masks"].astype(np.float32))[:, None]
    net = InteractiveNet(widths=(8, 16, 16, 32), blocks=(1, 1, 1, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    before = validate(net, batch)["shapes/box"]
    losses = [training_step(net, optimizer, DiceCELoss(sigmoid=True), pictures, masks, rng) for _ in range(20)]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1
    assert validate(net, batch)["shapes/box"] > before + 0.3



def _fake_data(root, images: int = 40):
    """The 2D datasets' layout (manifests with their group columns) with tiny generated images; no volumes."""
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    specs = {"hc18_fetal_head_us": "subject_group", "kvasir_seg_polyp": None, "ph2_dermoscopy": None, "fundus_vessels": "subject"}
    for folder, group_column in specs.items():
        (root / folder).mkdir(parents=True)
        lines = ["image,mask" + (f",{group_column}" if group_column else "")]
        for index in range(images):
            picture, mask = generate_shape(rng, size=32)
            PILImage.fromarray(picture).save(root / folder / f"image{index}.png")
            PILImage.fromarray(mask.astype(np.uint8) * 255).save(root / folder / f"mask{index}.png")
            lines.append(f"image{index}.png,mask{index}.png" + (f",group{index // 2}" if group_column else ""))
        (root / folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    (root / "volumes_3d_smoke").mkdir()
    (root / "volumes_3d_smoke" / "manifest.csv").write_text("file,label_or_mask\n")


def test_manifest_only_writes_the_split_that_training_holds_out(tmp_path, capsys):
    import csv

    from clitools import run_cli

    data = tmp_path / "data"
    _fake_data(data)
    code, out, err = run_cli(["train", "interactive", "--out", str(tmp_path / "run"), "--manifest-only", "--data", str(data)], capsys)
    assert code == 0, err
    with open(tmp_path / "run" / "val_manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert f"{len(rows)} validation images" in out and not (tmp_path / "run" / "checkpoint.pt").exists()
    assert rows and {row["dataset"] for row in rows} <= {"hc18", "kvasir", "ph2"}  # vessels always train
    hc18_groups = {int(row["image"].rsplit("image", 1)[1].split(".")[0]) // 2 for row in rows if row["dataset"] == "hc18"}
    hc18_images = [row for row in rows if row["dataset"] == "hc18"]
    assert hc18_images and len(hc18_images) == 2 * len(hc18_groups)  # a subject group is held out whole
    cache = build_cache(data, tmp_path / "cache.npz", shapes=0)
    assert [row["dataset"] for row in rows] == cache["sources"][cache["is_val"]].tolist()
    before = (tmp_path / "run" / "val_manifest.csv").read_bytes()
    run_cli(["train", "interactive", "--out", str(tmp_path / "run"), "--manifest-only", "--data", str(data)], capsys)
    assert (tmp_path / "run" / "val_manifest.csv").read_bytes() == before


def test_manifest_from_a_relative_data_folder_opens_from_anywhere(tmp_path, capsys, monkeypatch):
    """The card's command passes ``--data ../shared/data``: the manifest must not resolve it against its own folder."""
    from pathlib import Path

    from clitools import run_cli

    from medfm.eval.protocols.interactive import read_manifest

    _fake_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "interactive", "--out", "run", "--manifest-only", "--data", "data"], capsys)
    assert code == 0, err
    rows = read_manifest(tmp_path / "run" / "val_manifest.csv")
    assert rows and all(Path(row["image"]).is_file() and Path(row["mask"]).is_file() for row in rows)


def test_manifest_only_without_the_data_is_a_one_line_error(tmp_path, capsys):
    from clitools import run_cli

    code, _, err = run_cli(["train", "interactive", "--out", str(tmp_path / "run"), "--manifest-only", "--data", str(tmp_path / "none")], capsys)
    assert code == 2 and "none: data folder not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "val_manifest.csv").exists()
