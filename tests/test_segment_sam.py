"""SAM-family checkpoints: official-format round trip, SamPredictor parity, MedSAM conventions, refusals.

Models are tiny SAM architectures (one ViT block, 256-pixel input) built with
segment-anything's own classes and random weights, saved as official ``.pth`` state dicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor, sam_model_registry

from medfm.errors import MedfmError
from medfm.models.encoders.planes import to_rgb_uint8
from medfm.models.registry import create_segmenter, list_segmenters
from medfm.models.segmenters import Prompt, Scribble, SegmenterInfo
from medfm.models.segmenters.sam import SamSegmenter, build_sam_model

TINY = {"encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2, "encoder_global_attn_indexes": [0], "image_size": 256}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[torch.nn.Module, Path, Path]:
    """A random tiny SAM, its official-format checkpoint and a config file naming its architecture."""
    torch.manual_seed(0)
    model = build_sam_model(TINY)
    folder = tmp_path_factory.mktemp("sam")
    torch.save(model.state_dict(), folder / "tiny_sam.pth")
    (folder / "tiny-sam.json").write_text(json.dumps({"family": "sam", "kind": "segmenter", "architecture": TINY}))
    return model, folder / "tiny_sam.pth", folder / "tiny-sam.json"


def _plane() -> np.ndarray:
    rng = np.random.default_rng(0)
    plane = rng.normal(0, 1, (90, 120)).astype(np.float32)  # not square: exercises SAM's resize and padding
    plane[30:60, 40:80] += 4
    return plane


def test_shipped_configs_build_the_official_architectures() -> None:
    for name, registry_key in (("sam-vit-b", "vit_b"), ("sam-vit-l", "vit_l"), ("sam-vit-h", "vit_h"), ("medsam", "vit_b")):
        with torch.device("meta"):  # shapes only: no memory, no time
            ours = build_sam_model(list_segmenters()[name]["architecture"]).state_dict()
            official = sam_model_registry[registry_key]().state_dict()
        assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in official.items()}


def test_checkpoint_round_trip_matches_the_in_memory_model_and_sam_predictor(tiny) -> None:
    model, checkpoint, config = tiny
    loaded = create_segmenter(str(config), checkpoint)
    assert loaded.info.name == "tiny-sam" and len(loaded.info.weights_sha256) == 64
    plane = _plane()
    predictor = SamPredictor(model)
    predictor.set_image(to_rgb_uint8(plane))
    loaded.set_image(plane)
    # one click: SAM's three proposals, the best by predicted IoU
    click = loaded.predict(Prompt(points=[(60, 45)], point_labels=[1]))
    logits, scores, _ = predictor.predict(np.array([[60, 45]]), np.array([1]), multimask_output=True, return_logits=True)
    best = int(scores.argmax())
    np.testing.assert_allclose(click.logits, logits[best], atol=1e-4)
    assert click.score == pytest.approx(float(scores[best]), abs=1e-5)
    assert np.array_equal(click.mask, logits[best] > 0) and click.mask.shape == (90, 120)
    # points with a box: one mask
    both = loaded.predict(Prompt(points=[(60, 45), (5, 5)], point_labels=[1, 0], boxes=[(40, 30, 79, 59)]))
    logits, _, _ = predictor.predict(np.array([[60, 45], [5, 5]]), np.array([1, 0]), box=np.array([40, 30, 79, 59]),
                                     multimask_output=False, return_logits=True)
    np.testing.assert_allclose(both.logits, logits[0], atol=1e-4)


def test_mask_input_and_scribbles_reach_the_model(tiny) -> None:
    model, _, _ = tiny
    segmenter = SamSegmenter(model, SegmenterInfo("tiny"))
    segmenter.set_image(_plane())
    box = Prompt(boxes=[(40, 30, 79, 59)])
    first = segmenter.predict(box)
    refined = segmenter.predict(Prompt(boxes=box.boxes, mask_input=first.logits))
    assert not np.allclose(first.logits, refined.logits)
    stroke = segmenter.predict(Prompt(scribbles=[Scribble(points=[(45, 35), (75, 55)])]))
    assert stroke.logits.shape == (90, 120) and np.isfinite(stroke.score)


def test_medsam_preprocessing_matches_its_reference_and_takes_boxes_only(tiny) -> None:
    model, _, _ = tiny
    medsam = SamSegmenter(model, SegmenterInfo("tiny-medsam"), preprocessing="medsam", boxes_only=True)
    plane = _plane()
    medsam.set_image(plane)
    prediction = medsam.predict(Prompt(boxes=[(40, 30, 79, 59)]))
    # MedSAM_Inference.py: 1024x1024 resize (here the tiny model's 256), min-max to [0, 1], no pixel_mean/std;
    # box scaled by size / (W, H); low-resolution logits resized straight to (H, W)
    from PIL import Image as PILImage

    pixels = np.asarray(PILImage.fromarray(to_rgb_uint8(plane)).resize((256, 256), PILImage.BICUBIC), np.float32)
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min())
    with torch.no_grad():
        embedding = model.image_encoder(torch.from_numpy(pixels).permute(2, 0, 1)[None])
        box = torch.tensor([[40 * 256 / 120, 30 * 256 / 90, 79 * 256 / 120, 59 * 256 / 90]])
        sparse, dense = model.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        low, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        expected = torch.nn.functional.interpolate(low, (90, 120), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(prediction.logits, expected, atol=1e-4)
    with pytest.raises(MedfmError, match="takes box prompts only"):
        medsam.predict(Prompt(points=[(60, 45)], point_labels=[1]))


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tiny, tmp_path: Path) -> None:
    _, checkpoint, config = tiny
    with pytest.raises(MedfmError, match=r"not a checkpoint of sam-vit-b .segment-anything format.: .*missing keys") as caught:
        create_segmenter("sam-vit-b", checkpoint)
    assert "\n" not in str(caught.value)
    other = dict(TINY, encoder_embed_dim=64)
    (tmp_path / "wider.json").write_text(json.dumps({"family": "sam", "kind": "segmenter", "architecture": other}))
    with pytest.raises(MedfmError, match="tensors of another shape"):
        create_segmenter(str(tmp_path / "wider.json"), checkpoint)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MedfmError, match="cannot read as a checkpoint"):
        create_segmenter(str(config), tmp_path / "junk.pth")


def test_unknown_model_and_missing_checkpoint_are_refused() -> None:
    with pytest.raises(MedfmError, match=r"unknown model 'sam-vit-z'; choose one of: .*medsam.*sam-vit-b"):
        create_segmenter("sam-vit-z")
    with pytest.raises(MedfmError, match="needs a checkpoint: the official segment-anything checkpoint"):
        create_segmenter("sam-vit-h")
