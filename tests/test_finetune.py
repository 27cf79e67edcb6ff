"""``medfm finetune`` on generated discs and pictures: adapter files, resume after SIGKILL, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from killtools import kill_after_checkpoint, step_of
from PIL import Image as PILImage
from segdata import write_discs

from medfm.errors import MedfmError
from medfm.models.adapters.file import read_adapter
from medfm.models.registry import create_encoder, create_segmenter, sha256_of
from medfm.train.finetune import finetune

TINY = {"batch_size": 2, "max_steps": 2, "checkpoint_seconds": 1e9}


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_discs(tmp_path_factory.mktemp("discs"), count=8, size=40)


def write_labelled_pictures(folder: Path) -> Path:
    """Bright and dark noise pictures with a ``kind`` column: a two-class manifest."""
    rng = np.random.default_rng(0)
    rows = ["image,kind"]
    for n in range(10):
        kind = "bright" if n % 2 else "dark"
        pixels = rng.normal(180 if n % 2 else 60, 20, (32, 32)).clip(0, 255).astype(np.uint8)
        PILImage.fromarray(pixels).save(folder / f"p{n}.png")
        rows.append(f"p{n}.png,{kind}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


@pytest.fixture(scope="module")
def labelled_pictures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled_pictures(tmp_path_factory.mktemp("pictures"))


@pytest.mark.parametrize("method", ["lora", "dd-adapter", "full"])
def test_finetune_writes_an_adapter_that_loads_over_its_base(discs, tmp_path, method):
    out = tmp_path / f"{method}.safetensors"
    summary = finetune("medfm-interactive", discs, out, method=method, rank=4, **TINY)
    tensors, metadata = read_adapter(out)
    base = create_segmenter("medfm-interactive")
    assert metadata["base_model"] == "medfm-interactive" and metadata["base_sha256"] == base.info.weights_sha256
    assert (metadata["method"], metadata["rank"]) == (method, "4")
    assert summary["steps"] == 2 and summary["train_images"] + summary["val_images"] == 8
    assert sum(t.numel() for t in tensors.values()) >= summary["trainable_parameters"] if method == "full" else \
        sum(t.numel() for t in tensors.values()) == summary["trainable_parameters"]
    if method != "full":
        assert out.stat().st_size < 0.1 * sha_file_size(base)
    assert not (tmp_path / f".{out.name}.partial").exists()
    assert create_segmenter("medfm-interactive", adapter=out).info.weights_sha256 == sha256_of(out)


def sha_file_size(segmenter) -> int:
    from medfm.models.registry import WEIGHTS_DIR

    return (WEIGHTS_DIR / "medfm-interactive.safetensors").stat().st_size


def test_finetune_cli_and_segment_with_the_adapter(discs, tmp_path, capsys):
    out = tmp_path / "a.safetensors"
    code, stdout, err = run_cli(["finetune", "medfm-interactive", "--data", str(discs), "--method", "dd-adapter", "--rank", "2",
                                 "--batch-size", "2", "--max-steps", "1", "-o", str(out)], capsys)
    assert code == 0, err
    assert json.loads(stdout)["method"] == "dd-adapter"
    image = next((discs.parent / "images").iterdir())
    code, _, err = run_cli(["segment", str(image), "--box", "5,5,30,30", "--adapter", str(out), "-o", str(tmp_path / "m.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "m.png").exists()


def test_finetune_an_encoder_with_a_classification_head(labelled_pictures, tmp_path, capsys):
    out = tmp_path / "clip.safetensors"
    summary = finetune("medfm-clip-small", labelled_pictures, out, method="lora", rank=2, label_column="kind", **TINY)
    tensors, metadata = read_adapter(out)
    assert json.loads(metadata["labels"]) == ["bright", "dark"]
    assert any(key.startswith("classification_head.") for key in tensors)
    assert 0 <= summary["validation_best"]["accuracy"] <= 1
    encoder = create_encoder("medfm-clip-small", adapter=out)
    assert encoder.info.weights_sha256 == sha256_of(out)
    vectors = encoder.encode_planes([np.zeros((32, 32), np.uint8)])
    assert vectors.shape == (1, encoder.info.embed_dim) and np.isclose(np.linalg.norm(vectors), 1, atol=1e-4)
    code, _, err = run_cli(["index", "build", str(labelled_pictures.parent / "p0.png"), "--index", str(tmp_path / "index"),
                            "--adapter", str(out), "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["classify", str(labelled_pictures.parent / "p1.png"), "--labels", "bright,dark",
                                 "--adapter", str(out), "--json"], capsys)
    assert code == 0, err


def test_finetune_a_timm_checkpoint(labelled_pictures, tmp_path):
    """timm backbones adapt through the same path (its own eval transform, a classification head)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "resnet18.safetensors"))
    out = tmp_path / "timm.safetensors"
    finetune("timm-resnet18", labelled_pictures, out, method="lora", rank=2, label_column="kind",
             checkpoint=tmp_path / "resnet18.safetensors", **{**TINY, "max_steps": 1})
    encoder = create_encoder("timm-resnet18", tmp_path / "resnet18.safetensors", adapter=out)
    assert encoder.encode_planes([np.zeros((32, 32), np.uint8)]).shape == (1, 512)
    with pytest.raises(MedfmError, match="has no identified weights"):
        finetune("timm-resnet18", labelled_pictures, tmp_path / "random.safetensors", label_column="kind", **TINY)


def test_encoders_need_a_label_column(labelled_pictures, tmp_path):
    with pytest.raises(MedfmError, match="needs --label-column"):
        finetune("medfm-clip-small", labelled_pictures, tmp_path / "x.safetensors", **TINY)
    assert not list(tmp_path.iterdir()) or not (tmp_path / "x.safetensors").exists()
    with pytest.raises(MedfmError, match="fine-tuning an encoder takes a CSV manifest with --label-column, not a folder"):
        finetune("medfm-clip-small", labelled_pictures.parent, tmp_path / "x.safetensors", label_column="kind", **TINY)


@pytest.mark.parametrize("args, message", [
    (["--method", "prefix"], "unknown fine-tuning method 'prefix'; choose one of: lora, dd-adapter, vpt, full"),
    (["--budget-min", "0"], "--budget-min must be above 0 minutes; got 0.0"),
    (["--rank", "0"], "--rank must be at least 1; got 0"),
    (["--method", "vpt"], "--method vpt needs transformer blocks on tokens"),
    (["--data", "EMPTY"], "empty.csv: the manifest has no rows"),
    (["--data", "MISSING"], "missing.csv: not found (DATA is a CSV manifest or a folder of saved annotations)"),
])
def test_bad_input_is_one_line_and_leaves_nothing(discs, tmp_path, capsys, args, message):
    empty = tmp_path / "empty.csv"
    empty.write_text("image,mask\n")
    data = {"EMPTY": str(empty), "MISSING": str(tmp_path / "missing.csv")}
    args = [data.get(arg, arg) for arg in args]
    out = tmp_path / "a.safetensors"
    command = ["finetune", "medfm-interactive", *([] if "--data" in args else ["--data", str(discs)]), *args,
               "--max-steps", "1", "--batch-size", "2", "-o", str(out)]
    code, stdout, err = run_cli(command, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]


def test_unknown_base_and_existing_output_are_refused(discs, tmp_path, capsys):
    code, _, err = run_cli(["finetune", "no-such-model", "--data", str(discs), "-o", str(tmp_path / "a.safetensors")], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err and "medfm-interactive" in err
    (tmp_path / "b.safetensors").write_bytes(b"keep")
    code, _, err = run_cli(["finetune", "medfm-interactive", "--data", str(discs), "-o", str(tmp_path / "b.safetensors")], capsys)
    assert code == 2 and "already exists" in err and (tmp_path / "b.safetensors").read_bytes() == b"keep"


def test_a_killed_finetuning_resumes_from_its_checkpoint(discs, tmp_path):
    out = tmp_path / "lora.safetensors"
    work = tmp_path / ".lora.safetensors.partial"
    script = (f"import torch; torch.set_num_threads(1)\nfrom medfm.train.finetune import finetune\n"
              f"finetune('medfm-interactive', {str(discs)!r}, {str(out)!r}, method='lora', rank=2, batch_size=2, "
              f"budget_minutes=30, checkpoint_seconds=0)")
    kill_after_checkpoint(["-c", script], work / "checkpoint.pt", ready=lambda path: path.is_file() and step_of(path) >= 1)
    assert not out.exists()
    with pytest.raises(MedfmError, match="an interrupted fine-tuning of this adapter is there; pass --resume"):
        finetune("medfm-interactive", discs, out, method="lora", rank=2, batch_size=2, max_steps=50)
    steps_done = step_of(work / "checkpoint.pt")
    summary = finetune("medfm-interactive", discs, out, method="lora", rank=2, batch_size=2, resume=True,
                       max_steps=steps_done + 1, checkpoint_seconds=1e9)
    assert summary["resumed_at_steps"] == [steps_done] and summary["steps"] == steps_done + 1
    assert out.exists() and not work.exists()
    with pytest.raises(MedfmError, match="no interrupted fine-tuning to resume"):
        finetune("medfm-interactive", discs, tmp_path / "other.safetensors", resume=True)


@pytest.mark.parametrize("method", ["lora", "dd-adapter"])
def test_finetune_a_sam_checkpoint(discs, tmp_path, method):
    """A tiny random SAM in the official checkpoint format (see test_segment_sam) adapts and loads back."""
    from medfm.models.segmenters.sam import build_sam_model

    torch.manual_seed(0)
    architecture = {"encoder_embed_dim": 32, "encoder_depth": 1, "encoder_num_heads": 2,
                    "encoder_global_attn_indexes": [0], "image_size": 128}
    torch.save(build_sam_model(architecture).state_dict(), tmp_path / "tiny_sam.pth")
    config = tmp_path / "tiny-sam.json"
    config.write_text(json.dumps({"family": "sam", "kind": "segmenter", "architecture": architecture}))
    out = tmp_path / "sam.safetensors"
    summary = finetune(str(config), discs, out, method=method, rank=2, checkpoint=tmp_path / "tiny_sam.pth", **TINY)
    assert summary["base_model"] == "tiny-sam" and {"box_dice", "click_dice"} <= set(summary["validation_best"])
    adapted = create_segmenter(str(config), tmp_path / "tiny_sam.pth", adapter=out)
    trained = {key for key in read_adapter(out)[0]}
    assert trained and all(("lora_" in key) if method == "lora" else (".adapter." in key) for key in trained)
    adapted.set_image(np.zeros((40, 40), np.uint8))
    from medfm.models.segmenters.prompt import Prompt

    assert adapted.predict(Prompt(boxes=[(5, 5, 30, 30)])).mask.shape == (40, 40)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_dd_sam2_adapts_a_sam2_checkpoint(discs, tmp_path):
    """DD-SAM2's setting: DD-Adapters after every Hiera block of a random SAM 2.1 Hiera-tiny in the official format."""
    pytest.importorskip("sam2", reason="sam2 not installed (scripts/setup.sh installs it)")
    from medfm.models.segmenters.sam2 import build_sam2_model

    torch.manual_seed(0)
    sam2_config = "configs/sam2.1/sam2.1_hiera_t.yaml"
    torch.save({"model": build_sam2_model(sam2_config, 256).state_dict()}, tmp_path / "sam2.1_tiny.pt")
    config = tmp_path / "tiny-sam2.json"
    config.write_text(json.dumps({"family": "sam2", "kind": "segmenter", "config": sam2_config, "image_size": 256}))
    out = tmp_path / "dd-sam2.safetensors"
    summary = finetune(str(config), discs, out, method="dd-adapter", rank=2, checkpoint=tmp_path / "sam2.1_tiny.pt", **TINY)
    assert summary["base_model"] == "tiny-sam2" and {"box_dice", "click_dice"} <= set(summary["validation_best"])
    trained = set(read_adapter(out)[0])
    blocks = {key.split(".adapter.")[0] for key in trained}
    assert blocks == {f"image_encoder.trunk.blocks.{i}" for i in range(12)}  # Hiera-tiny: 1 + 2 + 7 + 2 blocks
    adapted = create_segmenter(str(config), tmp_path / "sam2.1_tiny.pt", adapter=out)
    adapted.set_image(np.zeros((40, 40), np.uint8))
    from medfm.models.segmenters.prompt import Prompt

    assert adapted.predict(Prompt(boxes=[(5, 5, 30, 30)])).mask.shape == (40, 40)


def test_two_processes_take_the_steps_one_process_takes_with_the_same_global_batch(labelled_pictures, tmp_path):
    """Classification has no per-sample randomness, so each step's loss (averaged over the ranks) must equal the
    single process's: the ranks share the global batch and average their gradients."""
    losses: dict[int, list[float]] = {1: [], 2: []}
    for workers in (1, 2):
        finetune("medfm-clip-small", labelled_pictures, tmp_path / f"w{workers}.safetensors", method="lora", rank=2,
                 label_column="kind", batch_size=4, max_steps=4, checkpoint_seconds=1e9, workers=workers,
                 on_step=lambda step, loss, workers=workers: losses[workers].append(loss))
    assert len(losses[1]) == len(losses[2]) == 4
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-5)
    assert len(set(np.round(losses[1], 6))) > 1  # the steps changed the model


@pytest.mark.parametrize("method", ["dd-adapter", "full"])
def test_finetune_in_two_processes_writes_the_adapter_once(discs, tmp_path, method):
    """medfm-interactive: per-rank prompts, and with full fine-tuning BatchNorm over both ranks' samples (each
    rank runs the decoder equally often, or the ranks would wait for each other forever)."""
    out = tmp_path / "a.safetensors"
    summary = finetune("medfm-interactive", discs, out, method=method, rank=2, batch_size=4, max_steps=3,
                       checkpoint_seconds=1e9, workers=2)
    assert summary["processes"] == 2 and summary["steps"] == 3
    assert create_segmenter("medfm-interactive", adapter=out).info.weights_sha256 == sha256_of(out)
    assert not (tmp_path / f".{out.name}.partial").exists()


def test_workers_that_do_not_divide_the_batch_are_refused_before_anything_starts(discs, tmp_path):
    with pytest.raises(MedfmError, match="--workers 3 does not divide the batch of 4"):
        finetune("medfm-interactive", discs, tmp_path / "a.safetensors", batch_size=4, max_steps=1, workers=3)
    assert not list(tmp_path.iterdir())
