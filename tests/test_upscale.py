"""Super-resolution: the network, geometry, formats, training with resume after SIGKILL, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from killtools import kill_after_checkpoint, step_of

from medfm.errors import MedfmError
from medfm.io import load, save
from medfm.io.image import Image
from medfm.io.sidecar import sidecar_path
from medfm.models.registry import _create, create_upscaler
from medfm.tasks.upscale import bicubic, upscale_image
from medfm.train.upscale import train_upscaler

TINY = {"family": "medfm_upscale", "kind": "upscaler", "scale": 2, "frames": 3, "features": 4, "blocks": 1}
TINY_RECIPE = {"features": 4, "blocks": 1, "crop": 8, "crops_per_source": 4, "batch_size": 4}


def untrained(**changes) -> object:
    return _create("tiny", None, {"tiny": {**TINY, **changes}})


def textured(rows: int, columns: int, seed: int, channels: int = 1) -> np.ndarray:
    """Smooth random texture, ``(columns, rows, channels)`` uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((channels, rows // 4 + 1, columns // 4 + 1)).astype(np.float32)
    fine = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(rows, columns), mode="bilinear")[0]
    return (fine.numpy().transpose(2, 1, 0) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def stills(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stills")
    for n in range(8):
        save(Image(textured(40, 48, n)[:, :, None, None, :]), folder / f"img{n}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_model(stills, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny-sr"
    train_upscaler([stills], out, max_steps=3, **TINY_RECIPE)
    return out


def test_an_untrained_network_is_exactly_bicubic_and_training_writes_a_verified_folder(tiny_model):
    planes = np.random.default_rng(0).random((2, 10, 12)).astype(np.float32)
    stacked = np.stack([planes] * 3, axis=1)
    assert np.allclose(untrained().upscale_planes(stacked), np.clip(bicubic(planes, 2), 0, 1), atol=1e-6)
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["kind"] == "upscaler" and config["weights"]["dtype"] == "float16" and config["training"]["steps"] == 3
    assert (tiny_model / "card.md").is_file() and json.loads((tiny_model / "results.json").read_text())["sources"] >= 0
    model = create_upscaler(tiny_model)
    assert model.weights_sha256 == config["weights"]["sha256"] and model.scale == 2
    assert not list(tiny_model.parent.glob(".*partial"))


def test_damaged_weights_are_refused(tiny_model, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "weights.safetensors"):
        (copy / name).write_bytes((tiny_model / name).read_bytes())
    with open(copy / "weights.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(MedfmError, match="sha256"):
        create_upscaler(copy)


@pytest.mark.parametrize("scale", [2, 4])
def test_geometry_keeps_the_extent_in_plane_and_through_plane(scale):
    affine = np.array([[0.0, -0.7, 0.0, 10.0], [0.8, 0.0, 0.1, -5.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1]])
    volume = Image((np.random.default_rng(1).random((12, 10, 6)) * 1000 - 500).astype(np.int16), affine, modality="CT")
    for through, axes in ((False, (0, 1)), (True, (2,))):
        out = upscale_image(volume, untrained(), scale, through_plane=through)
        assert out.array.dtype == np.int16
        expected = [n * scale if axis in axes else n for axis, n in enumerate(volume.spatial_shape)]
        assert list(out.spatial_shape) == expected
        for axis in range(3):
            factor = scale if axis in axes else 1
            assert out.spacing[axis] == pytest.approx(volume.spacing[axis] / factor)
        # the grid's outer corner (voxel -0.5 along every axis) and centre are the same points of the patient
        for old_index, new_index in ((np.full(3, -0.5), np.full(3, -0.5)),
                                     ((np.array(volume.spatial_shape) - 1) / 2, (np.array(out.spatial_shape) - 1) / 2)):
            assert np.allclose(volume.affine @ [*old_index, 1], out.affine @ [*new_index, 1])
        assert out.provenance.synthetic and out.provenance.parameters["through_plane"] is through


def test_cli_upscales_a_colour_png_with_provenance_and_a_video_with_a_sidecar(tiny_model, tmp_path, capsys):
    source = tmp_path / "photo.png"
    save(Image(textured(30, 36, 3, channels=3)[:, :, None, None, :]), source)
    code, out, err = run_cli(["upscale", str(source), "--model", str(tiny_model), "--scale", "4", "-o", str(tmp_path)], capsys)
    assert code == 0, err
    written = load(tmp_path / "photo_x4.png")
    assert written.shape == (144, 120, 1, 1, 3) and written.array.dtype == np.uint8
    assert written.provenance.model == "tiny-sr" and written.provenance.parameters["passes"] == 2
    assert json.loads(out)["weights_sha256"] == written.provenance.weights_sha256

    clip = np.stack([textured(24, 32, 10 + t) for t in range(5)], axis=2)[:, :, None]  # (32, 24, 1, 5, 1)
    save(Image(clip, metadata={"fps": 10.0}), tmp_path / "clip.mp4")
    code, _, err = run_cli(["upscale", str(tmp_path / "clip.mp4"), "--model", str(tiny_model), "-o", str(tmp_path / "big.mp4")], capsys)
    assert code == 0, err
    video = load(tmp_path / "big.mp4")
    assert video.shape[:4] == (64, 48, 1, 5)
    record = json.loads(sidecar_path(tmp_path / "big.mp4").read_text())
    assert record["parameters"]["frames_fused"] == 3 and record["synthetic"] is True


def test_nifti_volume_output_carries_the_new_spacing(tiny_model, tmp_path, capsys):
    volume = Image((np.random.default_rng(2).random((16, 12, 4)) * 200).astype(np.int16), np.diag([0.9, 0.9, 3.0, 1.0]))
    save(volume, tmp_path / "ct.nii.gz")
    code, _, err = run_cli(["upscale", str(tmp_path / "ct.nii.gz"), "--model", str(tiny_model), "--through-plane",
                            "-o", str(tmp_path / "fine.nii.gz")], capsys)
    assert code == 0, err
    fine = load(tmp_path / "fine.nii.gz")
    assert fine.spatial_shape == (16, 12, 8) and fine.spacing == pytest.approx((0.9, 0.9, 1.5))
    assert fine.provenance.parameters["through_plane"] is True


@pytest.mark.parametrize("case", ["scale", "channels", "video", "through-plane"])
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(case, tiny_model, tmp_path, capsys):
    source, scale, extra = tmp_path / "in.png", "2", []
    if case == "scale":
        save(Image(textured(16, 16, 0)[:, :, None, None, :]), source)
        scale = "3"
    elif case == "channels":
        source = tmp_path / "in.nii.gz"
        save(Image(np.zeros((16, 16, 1, 1, 4), np.uint8)), source)
    elif case == "video":
        source = tmp_path / "broken.mp4"
        source.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    else:
        save(Image(textured(16, 16, 0)[:, :, None, None, :]), source)
        extra = ["--through-plane"]
    target = tmp_path / "out" / ("o.mp4" if case == "video" else "o.png")
    target.parent.mkdir()
    code, out, err = run_cli(["upscale", str(source), "--model", str(tiny_model), "--scale", scale, "-o", str(target), *extra], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("medfm: error:")
    assert {"scale": "--scale", "channels": "in.nii.gz: has 4 channels", "video": "broken.mp4",
            "through-plane": "in.png: --through-plane needs a volume"}[case] in err
    assert list(target.parent.iterdir()) == []


def test_training_resumes_after_sigkill(stills, tmp_path):
    out = tmp_path / "model"
    build = tmp_path / ".model.partial"
    script = ("import sys; from medfm.train.upscale import train_upscaler; "
              f"train_upscaler([{str(stills)!r}], {str(out)!r}, budget_minutes=30, checkpoint_seconds=0, "
              f"features=4, blocks=1, crop=8, crops_per_source=4, batch_size=4)")
    kill_after_checkpoint(["-c", script], build / "checkpoint.pt")
    assert not out.exists()
    done = step_of(build / "checkpoint.pt")
    with pytest.raises(MedfmError, match="pass --resume"):
        train_upscaler([stills], out, max_steps=done + 3)
    summary = train_upscaler([stills], out, resume=True, max_steps=done + 3)
    assert summary["steps"] == done + 3 and summary["resumed_at_steps"] == [done]
    assert json.loads((out / "config.json").read_text())["features"] == 4  # the first run's recipe
    assert not build.exists()


def test_shipped_card_reports_what_its_evaluation_wrote_for_the_shipped_weights():
    cards = Path(__file__).resolve().parents[1] / "medfm" / "models" / "cards"
    card, results = (cards / "medfm-upscale.md").read_text(), json.loads((cards / "medfm-upscale.results.json").read_text())
    assert "--results medfm/models/cards/medfm-upscale.results.json" in card
    model = create_upscaler()
    assert results["model"] == model.name == "medfm-upscale" and results["weights_sha256"] == model.weights_sha256
    held_out = card.split("### Through-plane")[0]  # the held-out table; the through-plane one has its own command
    rows = [line.strip("|").split("|") for line in held_out.splitlines() if line.startswith("| ") and "PSNR model" not in line]
    summaries = [*sorted(results["per_dataset"].items()), ("all", results["all"])]
    assert len(rows) == len(summaries)
    for cells, (_, summary) in zip(rows, summaries):
        cells = [cell.strip() for cell in cells]
        assert cells[1] == str(summary["planes"])
        assert cells[2:5] == [f"{summary['psnr'][m]:.2f}" for m in ("model", "bicubic", "lanczos")]
        assert cells[5] == f"{summary['psnr_gain_vs_bicubic_db']:+.2f}"
        assert cells[6:9] == [f"{summary['ssim'][m]:.4f}" for m in ("model", "bicubic", "lanczos")]
    assert f"{results['sources']} sources" in card and f"by {results['all']['psnr_gain_vs_bicubic_db']:.2f} dB" in card


def test_dicom_input_is_written_as_nifti_with_half_the_pixel_spacing(tiny_model, tmp_path, capsys):
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    code, out, err = run_cli(["upscale", source, "--model", str(tiny_model), "-o", str(tmp_path)], capsys)
    assert code == 0, err
    original, fine = load(source), load(tmp_path / "CT_small_x2.nii.gz")
    assert fine.spatial_shape == (256, 256, 1) and fine.array.dtype == original.array.dtype
    assert fine.spacing == pytest.approx((original.spacing[0] / 2, original.spacing[1] / 2, original.spacing[2]), rel=1e-6)
    assert np.allclose(fine.affine @ [-0.5, -0.5, 0, 1], original.affine @ [-0.5, -0.5, 0, 1])
