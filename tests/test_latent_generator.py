"""Latent generators (issue 14): MONAI's AutoencoderKL fitted first, the U-Net generating its scaled latents; sampling,
translation and editing through the decoder; resume from the autoencoder stage after SIGKILL; all with tiny networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from test_generators import SIZE, TINY, killed_training, write_classes

import medfm
from medfm.errors import MedfmError
from medfm.models.registry import create_generator
from medfm.tasks.generate import edit_file, generate, translate_file
from medfm.train.generator import train_generator

pytestmark = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")


@pytest.fixture(scope="module")
def latent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("latent")
    train_generator(write_classes(root / "data", per_class=4), root / "L", size=SIZE, latent=True, network=TINY, max_steps=4,
                    batch_size=4)
    return root / "L"


def test_a_latent_generator_folder_holds_its_autoencoder(latent_dir: Path) -> None:
    assert sorted(p.name for p in latent_dir.iterdir()) == ["autoencoder.safetensors", "card.md", "config.json", "ema.safetensors"]
    config = json.loads((latent_dir / "config.json").read_text())
    latent = config["latent"]
    assert latent["factor"] == 4 and latent["autoencoder"]["latent_channels"] == 4 and latent["scale_factor"] > 0
    assert config["training"]["autoencoder"]["steps"] == 4 and config["training"]["steps"] == 4
    assert "## Latent space" in (latent_dir / "card.md").read_text()
    generator = create_generator(latent_dir)
    assert generator.sample_shape == (4, SIZE // 4, SIZE // 4)
    # the U-Net works on the 8x8 latents: its first convolution takes the 4 latent channels
    assert generator.network.conv_in.conv.in_channels == 4


def test_latent_samples_translations_and_edits_are_images_of_the_generators_size(latent_dir: Path, tmp_path: Path) -> None:
    result = generate(latent_dir, tmp_path, 2, steps=2, seed=4)
    first = medfm.load(result["images"][0]["file"])
    assert first.shape[:2] == (SIZE, SIZE) and first.provenance.synthetic
    again = generate(latent_dir, tmp_path / "again" if (tmp_path / "again").mkdir() is None else None, 1, steps=2, seed=4)
    np.testing.assert_array_equal(medfm.load(again["images"][0]["file"]).array, first.array)
    kept = translate_file(latent_dir, result["images"][0]["file"], tmp_path / "t.png", source="bright", target="dark",
                          strength=0.0, steps=4)
    assert kept["ssim_to_source"] == pytest.approx(1.0)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[5:14, 9:20] = 255  # not aligned to the 4-pixel latent cells
    PILImage.fromarray(mask).save(tmp_path / "mask.png")
    edit_file(latent_dir, result["images"][0]["file"], tmp_path / "mask.png", tmp_path / "e.png", class_="dark", steps=2)
    before, after = first.array[:, :, 0, 0, 0].T, medfm.load(tmp_path / "e.png").array[:, :, 0, 0, 0].T
    np.testing.assert_array_equal(after[mask == 0], before[mask == 0])  # outside the region, the source exactly


def test_a_damaged_or_missing_autoencoder_is_refused(latent_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "L"
    copy.mkdir()
    for name in ("config.json", "card.md", "ema.safetensors"):
        (copy / name).write_bytes((latent_dir / name).read_bytes())
    with pytest.raises(MedfmError, match="autoencoder.safetensors: the generator's autoencoder weights are missing"):
        create_generator(copy)
    weights = bytearray((latent_dir / "autoencoder.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "autoencoder.safetensors").write_bytes(bytes(weights))
    with pytest.raises(MedfmError, match="autoencoder.safetensors: does not match its recorded sha256"):
        create_generator(copy)


def test_latent_training_requests_that_cannot_work_are_refused(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=2)
    with pytest.raises(MedfmError, match=r"--size must be a multiple of 8 \(the U-Net halves it 1 times, over latents 4x smaller\)"):
        train_generator(data, tmp_path / "G", size=36, latent=True, network=TINY, max_steps=1)
    with pytest.raises(MedfmError, match="--latent and --masks do not go together"):
        train_generator(data, tmp_path / "G", size=SIZE, latent=True, masks=True, network=TINY, max_steps=1)
    assert not (tmp_path / "G").exists() and not (tmp_path / ".G.partial").exists()


def test_a_run_killed_while_its_autoencoder_trains_resumes(tmp_path: Path) -> None:
    data = write_classes(tmp_path / "data", per_class=2)
    out = tmp_path / "L"
    done_before = killed_training(data, out, "autoencoder_checkpoint.pt", latent=True)
    summary = train_generator(data, out, size=SIZE, latent=True, network=TINY, batch_size=2, resume=True,
                              max_steps=done_before + 2)
    assert summary["autoencoder"]["steps"] == done_before + 2 and summary["steps"] == done_before + 2
    assert summary["resumed_at_steps"] == [0]
    assert (out / "autoencoder.safetensors").exists() and not (tmp_path / ".L.partial").exists()


def test_a_monai_latent_diffusion_checkpoint_folder_samples_through_its_autoencoder(tmp_path: Path) -> None:
    """MONAI's 2D latent-diffusion tutorial saves an AutoencoderKL and a DiffusionModelUNet with torch.save; a config.json
    in GEN_DIR's form (``latent``: the autoencoder's arguments, file, sha256 and scale factor) makes them a generator."""
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

    from medfm.models.generators.sampling import _noises, ddim_sample, sample
    from medfm.models.registry import sha256_of

    torch.manual_seed(0)
    autoencoder_arguments = {"channels": [8, 8], "num_res_blocks": 1, "attention_levels": [False, False], "latent_channels": 3,
                             "norm_num_groups": 4, "with_encoder_nonlocal_attn": False, "with_decoder_nonlocal_attn": False}
    autoencoder = AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, **autoencoder_arguments)
    torch.save(autoencoder.state_dict(), tmp_path / "autoencoder.pt")
    torch.save(DiffusionModelUNet(spatial_dims=2, in_channels=3, out_channels=3, **TINY).state_dict(), tmp_path / "unet.pt")
    (tmp_path / "config.json").write_text(json.dumps({
        "name": "monai-ldm", "kind": "generator", "family": "medfm_generator", "method": "ddpm", "condition": "none",
        "size": SIZE, "channels": 1, "network": TINY, "pixel_range": [0, 1],
        "weights": {"file": "unet.pt", "sha256": sha256_of(tmp_path / "unet.pt")},
        "latent": {"autoencoder": autoencoder_arguments, "factor": 2, "scale_factor": 0.5,
                   "weights": {"file": "autoencoder.pt", "sha256": sha256_of(tmp_path / "autoencoder.pt")}}}))
    generator = create_generator(tmp_path)
    assert generator.sample_shape == (3, SIZE // 2, SIZE // 2)
    images = sample(generator, [None, None], 3, 1.0, [0, 1])
    latents = ddim_sample(generator, _noises(generator, [0, 1]), [None, None], 3, 1.0)
    with torch.no_grad():
        expected = autoencoder.eval().decode(latents / 0.5).clamp(0.0, 1.0)  # the tutorial's decode: latents over the scale
    assert images.shape == (2, 1, SIZE, SIZE) and torch.allclose(images, expected, atol=1e-5)
