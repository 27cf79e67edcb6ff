"""Conditional generators (issue 14): training, resume after SIGKILL, sampling, translation, editing,
the synthetic marks on every output and the catalog's synthetic filter, all with tiny networks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from killtools import kill_after_checkpoint, step_of
from PIL import Image as PILImage

import medfm
from medfm.errors import MedfmError
from medfm.models.generators.sampling import ancestral_sample
from medfm.models.registry import create_generator
from medfm.provenance import SYNTHETIC_NOTE
from medfm.tasks.generate import edit_file, generate, translate_file
from medfm.train.generator import train_generator

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")

SIZE = 32
TINY = {"channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1, "norm_num_groups": 8,
        "num_head_channels": 8}


def write_classes(root: Path, per_class: int = 6) -> Path:
    """Two classes of 32x32 grey PNGs: bright discs on dark, and dark discs on bright."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for n in range(per_class):
        disc = (xx - 16) ** 2 + (yy - 16) ** 2 < (5 + n % 4) ** 2
        bright = np.clip(disc * 180 + rng.normal(40, 12, (SIZE, SIZE)), 0, 255).astype(np.uint8)
        for name, pixels in (("bright", bright), ("dark", 255 - bright)):
            (root / name).mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(pixels).save(root / name / f"{n}.png")
    return root


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generator")
    train_generator(write_classes(root / "data"), root / "G", size=SIZE, network=TINY, max_steps=30, batch_size=4)
    return root / "G"


def test_training_writes_a_complete_generator_folder(gen_dir: Path) -> None:
    assert sorted(p.name for p in gen_dir.iterdir()) == ["card.md", "config.json", "ema.safetensors"]
    assert not (gen_dir.parent / ".G.partial").exists()
    config = json.loads((gen_dir / "config.json").read_text())
    assert (config["kind"], config["method"], config["condition"], config["classes"]) == ("generator", "flow", "class", ["bright", "dark"])
    assert config["training"]["steps"] == 30 and config["training"]["images_per_condition"] == {"bright": 6, "dark": 6}
    assert config["quality"]["image"]["threshold"] > 0 and config["quality"]["region"]["threshold"] > 0
    generator = create_generator(gen_dir)
    assert generator.weights_sha256 == config["weights"]["sha256"]
    assert "Every image it makes is synthetic" in (gen_dir / "card.md").read_text()


def test_damaged_weights_are_refused(gen_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "G"
    copy.mkdir()
    for name in ("config.json", "card.md"):
        (copy / name).write_bytes((gen_dir / name).read_bytes())
    weights = bytearray((gen_dir / "ema.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "ema.safetensors").write_bytes(bytes(weights))
    with pytest.raises(MedfmError, match="sha256"):
        create_generator(copy)


def test_generate_spreads_over_classes_and_marks_every_file(gen_dir: Path, tmp_path: Path) -> None:
    result = generate(gen_dir, tmp_path, 4, steps=3, seed=7)
    assert [i["condition"] for i in result["images"]] == ["bright", "dark", "bright", "dark"]
    assert [i["seed"] for i in result["images"]] == [7, 8, 9, 10]
    first = Path(result["images"][0]["file"])
    image = medfm.load(first)
    assert image.shape[:2] == (SIZE, SIZE) and image.provenance.synthetic
    assert image.provenance.kind == "generation" and image.provenance.weights_sha256 == result["weights_sha256"]
    assert dict(image.provenance.parameters) == {"class": "bright", "seed": 7, "steps": 3, "guidance": 2.0, "method": "flow"}
    assert PILImage.open(first).text["Description"] == SYNTHETIC_NOTE
    again = generate(gen_dir, tmp_path / "again" if (tmp_path / "again").mkdir() is None else None, 1, steps=3, seed=7)
    np.testing.assert_array_equal(medfm.load(again["images"][0]["file"]).array, image.array)


def test_dicom_and_nifti_outputs_carry_the_synthetic_marks(gen_dir: Path, tmp_path: Path) -> None:
    import nibabel as nib
    import pydicom

    dicom = Path(generate(gen_dir, tmp_path, 1, class_=1, steps=2, suffix=".dcm")["images"][0]["file"])
    ds = pydicom.dcmread(dicom)
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and "SYNTHETIC" in ds.DerivationDescription
    assert medfm.load(dicom).provenance.parameters["class"] == "dark"
    nifti = Path(generate(gen_dir, tmp_path, 1, class_="dark", steps=2, suffix=".nii.gz")["images"][0]["file"])
    assert nib.load(nifti).header["descrip"].item().decode().startswith("SYNTHETIC")
    assert medfm.load(nifti).provenance.synthetic


def test_translation_keeps_the_image_at_tau_zero_and_moves_it_at_one(gen_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "bright.png"
    generate(gen_dir, tmp_path, 1, class_="bright", steps=3)
    (tmp_path / os.listdir(tmp_path)[0]).rename(source)
    kept = translate_file(gen_dir, source, tmp_path / "kept.png", source="bright", target="dark", strength=0.0, steps=4)
    np.testing.assert_array_equal(medfm.load(tmp_path / "kept.png").array, medfm.load(source).array)
    assert kept["ssim_to_source"] == pytest.approx(1.0)
    translate_file(gen_dir, source, tmp_path / "moved.png", source="bright", target="dark", strength=1.0, steps=4)
    assert dict(medfm.load(tmp_path / "moved.png").provenance.parameters)["to"] == "dark"


class ExactVelocity(torch.nn.Module):
    """The exact rectified-flow velocity ``(x_t - x*) / t`` of a data set with one image per class: class 0 all
    black (-1), class 1 all white (+1); ``x*`` is their mean without a condition."""

    def forward(self, x, timesteps, class_labels=None):
        t = (timesteps / 999).clamp(min=1e-3)[:, None, None, None]
        target = torch.tensor([-1.0, 1.0, 0.0])[class_labels][:, None, None, None]
        return (x - target) / t


def exact_generator():
    from medfm.models.generators import Generator

    return Generator(ExactVelocity(), {"name": "exact", "method": "flow", "condition": "class", "classes": ["black", "white"],
                                       "size": 8, "channels": 1})


def test_sampling_and_translation_reach_the_class_of_an_exact_flow() -> None:
    from medfm.models.generators.sampling import sample, translate

    generator = exact_generator()
    images = sample(generator, ["black", "white", None], steps=5, guidance=1.0, seeds=[0, 1, 2])
    np.testing.assert_allclose(images[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(images[1], 1.0, atol=1e-5)
    np.testing.assert_allclose(images[2], 0.5, atol=1e-5)
    guided = sample(generator, ["white"], steps=5, guidance=1.5, seeds=[0])  # past the class: clipped white
    np.testing.assert_allclose(guided, 1.0, atol=1e-5)
    black = torch.zeros(1, 1, 8, 8)
    np.testing.assert_allclose(translate(generator, black, "black", "white", 1.0, 10, 1.0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(translate(generator, black, "black", "white", 0.0, 10, 1.0), black)


def test_inpainting_an_exact_flow_fills_the_region_with_the_class() -> None:
    from medfm.models.generators.sampling import inpaint

    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 1
    edited = inpaint(exact_generator(), torch.zeros(1, 1, 8, 8), mask, ["white"], steps=6, guidance=1.0, seed=0)
    np.testing.assert_allclose(edited[mask.bool()], 1.0, atol=1e-4)
    np.testing.assert_array_equal(edited[~mask.bool()], 0.0)


def test_edit_keeps_the_known_region_and_reports_the_gate(gen_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    PILImage.fromarray(np.full((SIZE, SIZE), 60, np.uint8)).save(source)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:20, 10:24] = 255
    PILImage.fromarray(mask).save(tmp_path / "mask.png")
    result = edit_file(gen_dir, source, tmp_path / "mask.png", tmp_path / "edited.png", class_="bright", steps=4)
    edited = np.asarray(PILImage.open(tmp_path / "edited.png"))
    assert (edited[mask == 0] == 60).all()
    assert (edited[mask > 0] != 60).any()
    gate = result["quality_gate"]
    assert set(gate) == {"image", "region", "flagged"} and gate["image"]["threshold"] > 0
    assert medfm.load(tmp_path / "edited.png").provenance.synthetic


def test_a_flagged_edit_is_refused_without_output(gen_dir: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict"
    strict.mkdir()
    config = json.loads((gen_dir / "config.json").read_text())
    config["quality"]["image"]["threshold"] = 0.0  # every edit is then out of distribution
    (strict / "config.json").write_text(json.dumps(config))
    (strict / "ema.safetensors").write_bytes((gen_dir / "ema.safetensors").read_bytes())
    PILImage.fromarray(np.full((SIZE, SIZE), 60, np.uint8)).save(tmp_path / "source.png")
    PILImage.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(tmp_path / "mask.png")
    with pytest.raises(MedfmError, match=r"the edit is out of distribution \(image OOD score .*\); nothing written"):
        edit_file(strict, tmp_path / "source.png", tmp_path / "mask.png", tmp_path / "out.png", class_=0, steps=2,
                  refuse_flagged=True)
    assert not (tmp_path / "out.png").exists()
    flagged = edit_file(strict, tmp_path / "source.png", tmp_path / "mask.png", tmp_path / "out.png", class_=0, steps=2)
    assert flagged["quality_gate"]["flagged"] and (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args, message", [
    (["generate", "{G}", "-n", "2", "--class", "melanoma", "-o", "{out}"], "unknown class 'melanoma'"),
    (["generate", "{G}", "-n", "2", "--class", "5", "-o", "{out}"], "class index 5 is out of range"),
    (["generate", "{G}", "-n", "2", "--suffix", ".jpg", "-o", "{out}"], "written as .png"),
    (["translate", "{G}", "{big}", "--from", "bright", "--to", "dark", "-o", "{out}/t.png"], "is 40x40 with 1 channel(s)"),
    (["translate", "{G}", "{rgb}", "--from", "bright", "--to", "dark", "-o", "{out}/t.png"], "with 3 channel(s)"),
    (["translate", "{G}", "{grey}", "--from", "bright", "--to", "dark", "--strength", "1.5", "-o", "{out}/t.png"], "[0, 1]"),
    (["translate", "{G}", "{grey}", "--from", "bright", "--to", "night", "-o", "{out}/t.png"], "unknown class 'night'"),
    (["edit", "{G}", "{grey}", "--mask", "{big}", "--class", "dark", "-o", "{out}/e.png"], "the mask is 40x40"),
    (["edit", "{G}", "{grey}", "--mask", "{empty}", "--class", "dark", "-o", "{out}/e.png"], "the mask is empty"),
    (["generate", "{out}/missing", "-n", "2", "-o", "{out}"], "unknown model '{out}/missing'; choose one of: medfm-gen-fetal-us-64, medfm-gen-fetal-us-pairs-64, medfm-gen-medpix-ct-mr-64"),
], ids=["class-name", "class-index", "format", "size", "channels", "tau", "target", "mask-shape", "empty-mask", "unknown-generator"])
def test_bad_requests_fail_in_one_line_and_write_nothing(gen_dir: Path, tmp_path: Path, capsys, args, message) -> None:
    PILImage.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "big.png")
    PILImage.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "rgb.png")
    PILImage.fromarray(np.full((SIZE, SIZE), 90, np.uint8)).save(tmp_path / "grey.png")
    PILImage.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "empty.png")
    (tmp_path / "out").mkdir()
    names = {"G": gen_dir, "out": tmp_path / "out", **{n: tmp_path / f"{n}.png" for n in ("big", "rgb", "grey", "empty")}}
    code, _, err = run_cli([a.format(**names) for a in args], capsys)
    assert code == 2 and message.format(**names) in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_ddpm_generator_samples_and_refuses_translation(gen_dir: Path, tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=3)
    train_generator(data, tmp_path / "D", size=SIZE, method="ddpm", network=TINY, max_steps=3, batch_size=2)
    result = generate(tmp_path / "D", tmp_path, 2, steps=2)
    assert medfm.load(result["images"][0]["file"]).provenance.parameters["method"] == "ddpm"
    with pytest.raises(MedfmError, match="needs a flow generator"):
        translate_file(tmp_path / "D", result["images"][0]["file"], tmp_path / "t.png", source="bright", target="dark")
    generator = create_generator(tmp_path / "D")  # the ancestral baseline: seeded, its step noise included
    generator.config["scheduler"] = {"num_train_timesteps": 20}  # every training timestep is walked: keep them few
    first = ancestral_sample(generator, ["bright"], 1.0, [5])
    assert first.shape == (1, 1, SIZE, SIZE) and 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    torch.testing.assert_close(ancestral_sample(generator, ["bright"], 1.0, [5]), first, rtol=0, atol=0)
    assert not torch.equal(ancestral_sample(generator, ["bright"], 1.0, [6]), first)
    with pytest.raises(MedfmError, match="ancestral sampling needs a DDPM generator; .* was trained with flow"):
        ancestral_sample(create_generator(gen_dir), ["bright"], 1.0, [5])


def test_text_generator_from_a_manifest(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=3)
    rows = ["image,caption"] + [f"{c}/{n}.png,a {c} disc" for c in ("bright", "dark") for n in range(3)]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    train_generator(data / "manifest.csv", tmp_path / "T", condition="text", column="caption", size=SIZE, network=TINY,
                    max_steps=2, batch_size=2)
    generator = create_generator(tmp_path / "T")
    assert generator.classes == ["a bright disc", "a dark disc"]
    result = generate(generator, tmp_path, 1, condition="a very dark disc", steps=2)
    assert medfm.load(result["images"][0]["file"]).provenance.parameters["condition"] == "a very dark disc"


def test_bad_training_requests(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=2)
    with pytest.raises(MedfmError, match="multiple of 2"):
        train_generator(data, tmp_path / "G", size=33, network=TINY, max_steps=1)
    with pytest.raises(MedfmError, match="do not make a DiffusionModelUNet"):
        train_generator(data, tmp_path / "G", size=SIZE, network={**TINY, "colour": 1}, max_steps=1)
    with pytest.raises(MedfmError, match="no interrupted training to resume"):
        train_generator(data, tmp_path / "G", size=SIZE, network=TINY, resume=True)
    assert not any(p.name.startswith(".G") or p.name == "G" for p in tmp_path.iterdir())


def killed_training(data: Path, out: Path, checkpoint: str, **options) -> int:
    """The step at which a tiny generator training of ``data`` into ``out`` (with ``options``) was SIGKILLed, as soon
    as its build folder held ``checkpoint``."""
    script = (f"import torch; torch.set_num_threads(1)\n"
              f"from medfm.train.generator import train_generator\n"
              f"train_generator({str(data)!r}, {str(out)!r}, size={SIZE}, network={TINY!r}, batch_size=2, "
              f"checkpoint_seconds=0.0, budget_minutes=30, **{options!r})\n")
    kill_after_checkpoint(["-c", script], out.parent / f".{out.name}.partial" / checkpoint)
    assert not out.exists()
    return step_of(out.parent / f".{out.name}.partial" / checkpoint)


def test_training_resumes_after_sigkill(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=2)
    out = tmp_path / "G"
    done_before = killed_training(data, out, "checkpoint.pt")
    summary = train_generator(data, out, size=SIZE, network=TINY, batch_size=2, resume=True, max_steps=done_before + 2)
    assert summary["resumed_at_steps"] == [done_before] and summary["steps"] == done_before + 2
    assert (out / "ema.safetensors").exists() and not (tmp_path / ".G.partial").exists()


def test_catalog_flags_synthetic_images_and_leaves_them_out_of_exports(gen_dir: Path, tmp_path: Path, capsys) -> None:
    from medfm.catalog import ingest, open_catalog

    generate(gen_dir, tmp_path / "images" if (tmp_path / "images").mkdir() is None else None, 1, steps=2)
    generate(gen_dir, tmp_path / "images", 1, steps=2, seed=5, suffix=".dcm")
    PILImage.fromarray(np.full((SIZE, SIZE), 90, np.uint8)).save(tmp_path / "images" / "real.png")
    rows = ["image,diagnosis"] + [f"{p.name},x" for p in sorted((tmp_path / "images").iterdir())]
    (tmp_path / "images" / "manifest.csv").write_text("\n".join(rows) + "\n")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest(tmp_path / "images", url, progress=False)
    with open_catalog(url) as store:
        synthetic = sorted(Path(r.source_path).name for r in store.query(synthetic=True))
        real = [Path(r.source_path).name for r in store.query(synthetic=False)]
        tags = {Path(r.source_path).name: r.tags for r in store.query()}
    assert synthetic == ["G_0000_bright.dcm", "G_0000_bright.png"] and real == ["real.png"]
    assert tags["G_0000_bright.png"] == {"diagnosis": "x", "synthetic": "true"}  # the manifest's labels keep the mark
    code, out, _ = run_cli(["catalog", "export", "--catalog", url, "-o", str(tmp_path / "m.csv")], capsys)
    assert code == 0 and "1 images" in out
    code, out, _ = run_cli(["catalog", "export", "--catalog", url, "--include-synthetic", "-o", str(tmp_path / "all.csv")], capsys)
    assert code == 0 and "3 images" in out


def test_radiomic_features_of_colour_images_are_those_of_their_luminance() -> None:
    from medfm.eval.radiomics_features import FRD_FEATURE_CLASSES, LUMINANCE_WEIGHTS, extract
    from medfm.io.image import Image

    rgb = np.random.default_rng(1).integers(0, 256, (24, 24, 1, 1, 3)).astype(np.float32)
    grey = (rgb @ np.asarray(LUMINANCE_WEIGHTS, np.float32))[..., None]
    names, colour_values = extract(Image(rgb, np.eye(4)), None, tuple(FRD_FEATURE_CLASSES), Path("rgb"))
    _, grey_values = extract(Image(grey, np.eye(4)), None, tuple(FRD_FEATURE_CLASSES), Path("grey"))
    np.testing.assert_allclose(colour_values, grey_values)
    assert len(names) > 300


def test_cli_trains_and_generates(tmp_path: Path, capsys) -> None:
    data = write_classes(tmp_path / "data", per_class=2)
    code, _, err = run_cli(["train", "generator", str(data), "--condition", "shape", "-o", str(tmp_path / "G")], capsys)
    assert code == 2 and "--condition must be one of class, text, none" in err
    code, out, err = run_cli(["train", "generator", str(data), "--size", str(SIZE), "--network", json.dumps(TINY),
                              "--batch-size", "2", "--max-steps", "2", "-o", str(tmp_path / "G")], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 2
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(["generate", str(tmp_path / "G"), "-n", "2", "--steps", "2", "--seed", "3",
                              "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert [image["seed"] for image in json.loads(out)["images"]] == [3, 4]
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
