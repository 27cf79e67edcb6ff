"""SAM 2.1 checkpoints: official-format round trip, SAM2ImagePredictor parity, refusals.

The model is sam2's own Hiera-tiny (its packaged config, random weights), saved as the
official ``{"model": state_dict}`` ``.pt`` file. Skips when the optional ``sam2`` package
is not installed (scripts/setup.sh installs it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sam2", reason="sam2 not installed: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0")
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

from medfm.errors import MedfmError  # noqa: E402
from medfm.models.encoders.planes import to_rgb_uint8  # noqa: E402
from medfm.models.registry import create_segmenter, list_segmenters  # noqa: E402
from medfm.models.segmenters import Prompt, Scribble  # noqa: E402
from medfm.models.segmenters.sam import build_sam_model  # noqa: E402
from medfm.models.segmenters.sam2 import build_sam2_model  # noqa: E402

TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
# sam2 1.1.0 scripts its input transforms with torch.jit, which torch 2.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A random SAM 2.1 Hiera-tiny and its checkpoint in the official format."""
    torch.manual_seed(0)
    model = build_sam2_model(TINY_CONFIG)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


@pytest.fixture(scope="module")
def loaded(tiny):
    """The checkpoint loaded by name, with the test plane set (encoded once for the module)."""
    segmenter = create_segmenter("sam2.1-hiera-tiny", checkpoint=tiny[1])
    segmenter.set_image(_plane())
    return segmenter


def _plane() -> np.ndarray:
    rng = np.random.default_rng(0)
    plane = rng.normal(0, 1, (90, 120)).astype(np.float32)  # not square: exercises the resize back
    plane[30:60, 40:80] += 4
    return plane


def test_shipped_configs_name_sam2_packaged_configs() -> None:
    from hydra import compose

    names = [name for name, config in list_segmenters().items() if config["family"] == "sam2"]
    assert {"sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus", "sam2.1-hiera-large"} <= set(names)
    for name in names:
        assert compose(config_name=list_segmenters()[name]["config"]).model.image_size == 1024


def test_checkpoint_round_trip_matches_sam2_image_predictor(tiny, loaded) -> None:
    model, checkpoint = tiny
    assert loaded.info.name == "sam2.1-hiera-tiny" and len(loaded.info.weights_sha256) == 64
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(to_rgb_uint8(_plane()))
    # one click: three proposals, the best by predicted IoU
    click = loaded.predict(Prompt(points=[(60, 45)], point_labels=[1]))
    logits, scores, _ = predictor.predict(np.array([[60, 45]]), np.array([1]), multimask_output=True, return_logits=True)
    best = int(scores.argmax())
    np.testing.assert_allclose(click.logits, logits[best], atol=1e-4)
    assert click.score == pytest.approx(float(scores[best]), abs=1e-5)
    assert np.array_equal(click.mask, click.logits > 0) and click.mask.shape == (90, 120)
    # a box: one mask
    box = loaded.predict(Prompt(boxes=[(40, 30, 79, 59)]))
    logits, scores, _ = predictor.predict(box=np.array([40, 30, 79, 59]), multimask_output=False, return_logits=True)
    np.testing.assert_allclose(box.logits, logits[0], atol=1e-4)
    assert box.score == pytest.approx(float(scores[0]), abs=1e-5)
    # points with a box
    both = loaded.predict(Prompt(points=[(60, 45), (5, 5)], point_labels=[1, 0], boxes=[(40, 30, 79, 59)]))
    logits, _, _ = predictor.predict(np.array([[60, 45], [5, 5]]), np.array([1, 0]), box=np.array([40, 30, 79, 59]),
                                     multimask_output=False, return_logits=True)
    np.testing.assert_allclose(both.logits, logits[0], atol=1e-4)


def test_mask_input_and_scribbles_reach_the_model(loaded) -> None:
    box = Prompt(boxes=[(40, 30, 79, 59)])
    first = loaded.predict(box)
    refined = loaded.predict(Prompt(boxes=box.boxes, mask_input=first.logits))
    assert not np.allclose(first.logits, refined.logits)
    as_bool = loaded.predict(Prompt(boxes=box.boxes, mask_input=first.mask))
    assert as_bool.logits.shape == (90, 120) and np.isfinite(as_bool.score)
    stroke = loaded.predict(Prompt(scribbles=[Scribble(points=[(45, 35), (75, 55)])]))
    assert stroke.logits.shape == (90, 120) and np.isfinite(stroke.score)


def test_image_size_override_reaches_the_model(tiny, loaded, tmp_path: Path) -> None:
    config = {"family": "sam2", "kind": "segmenter", "config": TINY_CONFIG, "image_size": 256}
    (tmp_path / "sam2-256.json").write_text(json.dumps(config))
    small = create_segmenter(str(tmp_path / "sam2-256.json"), tiny[1])  # weights do not depend on the input size
    model = small.predictor.model
    assert model.image_size == 256 and small.mask_size == (64, 64)  # 1024 and (256, 256) by default
    seen = []
    hook = model.image_encoder.register_forward_hook(lambda module, inputs, output: seen.append(
        (tuple(inputs[0].shape), tuple(output["vision_features"].shape))))
    try:
        small.set_image(_plane())
    finally:
        hook.remove()
    assert seen == [((1, 3, 256, 256), (1, 256, 16, 16))]  # the plane is resized to 256, not 1024
    prompt = Prompt(points=[(60, 45)], point_labels=[1], mask_input=np.zeros((90, 120), bool))
    prediction = small.predict(prompt)
    assert prediction.logits.shape == (90, 120) and np.isfinite(prediction.logits).all()
    # same weights, same prompt: the 256 input sees a coarser image than the default 1024 one
    assert not np.allclose(prediction.logits, loaded.predict(prompt).logits, atol=1e-3)


def test_checkpoint_of_another_architecture_is_refused_in_one_line(tiny, tmp_path: Path) -> None:
    sam1 = build_sam_model({"encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
                            "encoder_global_attn_indexes": [0], "image_size": 256})
    torch.save(sam1.state_dict(), tmp_path / "sam_vit_tiny.pth")
    with pytest.raises(MedfmError, match=r"not a checkpoint of sam2.1-hiera-tiny .SAM 2 format.: .*missing keys") as caught:
        create_segmenter("sam2.1-hiera-tiny", tmp_path / "sam_vit_tiny.pth")
    assert "\n" not in str(caught.value)
    with pytest.raises(MedfmError, match=r"not a checkpoint of sam2.1-hiera-small .SAM 2 format.") as caught:
        create_segmenter("sam2.1-hiera-small", tiny[1])
    assert "\n" not in str(caught.value)
    with pytest.raises(MedfmError, match="needs a checkpoint: the official SAM 2.1 checkpoint sam2.1_hiera_large.pt"):
        create_segmenter("sam2.1-hiera-large")
