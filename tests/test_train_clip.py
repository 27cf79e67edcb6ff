"""medfm-clip training smoke test on a generated cache: no shared data needed."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from medfm.models.registry import list_encoders
from medfm.errors import MedfmError
from medfm.train.clip_data import Sample, fill, load_cache, read_split_manifest
from medfm.train.clip import augment, sample_texts, train_clip
from clipdata import write_cache


def test_fill_fixes_articles():
    assert fill(["a {m} image of a {t}"], m=["endoscopy", "CT"], t=["polyp"]) == ["a CT image of a polyp", "an endoscopy image of a polyp"]


def test_augment_keeps_range_and_size_and_is_seeded():
    pixels = torch.randint(0, 256, (4, 3, 128, 128), dtype=torch.uint8)
    out = augment(pixels, 112, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 112, 112) and 0.0 <= out.min() and out.max() <= 1.0
    assert torch.equal(out, augment(pixels, 112, torch.Generator().manual_seed(0)))
    assert not torch.allclose(out, augment(pixels, 112, torch.Generator().manual_seed(1)))
    # crops, contrast and brightness keep a flat grey image flat, each at its own level
    flat = augment(torch.full((4, 3, 128, 128), 128, dtype=torch.uint8), 112, torch.Generator().manual_seed(0))
    levels = flat.flatten(1)
    assert torch.allclose(levels, levels[:, :1].expand_as(levels), atol=1e-5) and levels[:, 0].unique().numel() == 4


def test_same_class_texts_are_positives():
    samples = [Sample("d", "a", "1", "ct", "head", "L1", ["x"]), Sample("d", "b", "2", "ct", "head", "L1", ["y"]),
               Sample("d", "c", "3", "mri", "head", "L2", ["x"])]
    ids, positives = sample_texts(samples, np.arange(3), {"x": 0, "y": 1}, np.random.default_rng(0))
    assert ids.tolist() == [0, 1, 0]
    assert positives.tolist() == [[True, True, True], [True, True, False], [True, False, True]]


@pytest.fixture
def random_text_tower(monkeypatch):
    """A frozen-MiniLM stand-in: validation prompts get fixed random features (no 90 MB model in unit tests)."""
    monkeypatch.setattr("medfm.train.clip.MedfmClipEncoder.encode_text",
                        lambda self, texts: np.random.default_rng(len(texts)).normal(size=(len(texts), 256)).astype(np.float32))


@pytest.mark.parametrize("loss", ["clip", "siglip", "dhn-nce"])
@pytest.mark.usefixtures("random_text_tower")
def test_one_epoch_trains_checkpoints_and_resumes(tmp_path, loss):
    torch.set_num_threads(1)
    cache = tmp_path / "cache.pt"
    write_cache(cache)
    out = tmp_path / "run"
    weights = train_clip(tmp_path, out, epochs=1, loss=loss, batch_size=8, cache=cache)
    state = load_file(weights)
    assert "image_projection.weight" in state and not any(k.startswith("minilm") for k in state)
    with safe_open(weights, "pt") as handle:
        assert (handle.metadata()["loss"], handle.metadata()["captions"]) == (loss, "basic")
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history[0]["epoch"] == 0 and np.isfinite(history[0]["train_loss"])
    assert 0.0 <= history[0]["modality_accuracy"] <= 1.0
    before = torch.load(out / "checkpoint.pt", weights_only=True)["model"]["image_projection.weight"]
    train_clip(tmp_path, out, epochs=2, loss=loss, resume=True, batch_size=8, cache=cache)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]  # resumed at epoch 1, not from scratch
    assert not torch.equal(before, load_file(out / "medfm-clip-small.safetensors")["image_projection.weight"])
    assert list_encoders()["medfm-clip-small"]["family"] == "medfm_clip"


@pytest.mark.usefixtures("random_text_tower")
def test_training_lowers_the_contrastive_loss_on_a_tiny_set(tmp_path):
    """Six epochs on the two-class cache (three batches of 8 each): the epoch loss falls clearly."""
    torch.set_num_threads(1)
    write_cache(tmp_path / "cache.pt")
    train_clip(tmp_path, tmp_path / "run", epochs=6, batch_size=8, cache=tmp_path / "cache.pt")
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert np.mean(losses[-2:]) < 0.9 * np.mean(losses[:2])


@pytest.mark.usefixtures("random_text_tower")
def test_stop_after_ends_a_leg_that_resumes_and_the_run_writes_its_split_manifest(tmp_path):
    torch.set_num_threads(1)
    write_cache(tmp_path / "cache.pt")
    out = tmp_path / "run"
    train_clip(tmp_path, out, epochs=3, batch_size=8, cache=tmp_path / "cache.pt", stop_after=1)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 0
    train_clip(tmp_path, out, epochs=2, batch_size=8, cache=tmp_path / "cache.pt", resume=True)  # a shorter schedule
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [0, 1]
    cached = load_cache(tmp_path / "cache.pt")[1]
    listed = read_split_manifest(out / "split_manifest.csv")
    assert [(s.dataset, s.path, s.group, s.split, s.modality, s.region, s.label, s.caption, s.frame) for s in listed] == \
           [(s.dataset, s.path, s.group, s.split, s.modality, s.region, s.label, s.caption, s.frame) for s in cached]
    assert [s.path for s in read_split_manifest(out / "split_manifest.csv", "val")] == [s.path for s in cached if s.split == "val"]


def test_a_file_that_is_not_a_split_manifest_is_refused_in_one_line(tmp_path):
    (tmp_path / "other.csv").write_text("image,mask\na.png,b.png\n")
    with pytest.raises(MedfmError, match=r"other.csv: not a split manifest from `medfm train clip --manifest-only`"):
        read_split_manifest(tmp_path / "other.csv")


def test_the_cli_is_the_one_entry_and_passes_only_what_was_given(tmp_path, monkeypatch, capsys):
    import medfm.train.clip
    from clitools import run_cli

    assert not hasattr(medfm.train.clip, "main")  # no second argparse entry point with its own defaults
    calls = []
    monkeypatch.setattr(medfm.train.clip, "train_clip", lambda **options: calls.append(options) or tmp_path / "w.safetensors")
    code, out, err = run_cli(["train", "clip", "--out", str(tmp_path), "--cache", str(tmp_path / "c.pt")], capsys)
    assert code == 0, err
    assert calls == [{"resume": False, "out": tmp_path, "cache": tmp_path / "c.pt"}]  # epochs, data...: the library's


def test_data_defaults_to_the_shared_data_folder_whatever_the_working_directory(tmp_path, monkeypatch):
    from pathlib import Path

    import medfm
    from medfm.errors import MedfmError
    from medfm.paths import SHARED_DATA_ENV, shared_data_dir

    monkeypatch.delenv(SHARED_DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert shared_data_dir() == Path(medfm.__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data of the repository
    monkeypatch.setenv(SHARED_DATA_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(MedfmError, match="elsewhere: data folder not found"):
        train_clip(out=tmp_path / "run")


def test_sample_texts_pairs_captions_as_often_as_asked():
    samples = [Sample("d", str(i), str(i), "ct", "head", "L", ["t"], caption=f"c{i}") for i in range(50)]
    index = {"t": 0, **{f"c{i}": i + 1 for i in range(50)}}
    rng = np.random.default_rng(0)
    assert (sample_texts(samples, np.arange(50), index, rng, caption_share=1.0)[0] > 0).all()
    assert (sample_texts(samples, np.arange(50), index, rng, caption_share=0.0)[0] == 0).all()
    with pytest.raises(MedfmError, match=r"caption share must be within \[0, 1\]; got 1.5"):
        train_clip(out=Path("unused"), caption_share=1.5)


def test_training_on_a_cache_with_the_prompts_never_loads_minilm(tmp_path, monkeypatch):
    """The cache holds the validation's zero-shot prompts, so an epoch's evaluation needs no text model."""
    from medfm.train.clip_data import evaluation_prompts

    torch.set_num_threads(1)
    write_cache(tmp_path / "cache.pt", extra_texts=evaluation_prompts())

    def no_minilm(self, *args, **kwargs):
        raise AssertionError("MiniLM loaded")

    monkeypatch.setattr("medfm.models.encoders.medfm_clip.MiniLM.__init__", no_minilm)
    train_clip(tmp_path, tmp_path / "run", epochs=1, batch_size=8, cache=tmp_path / "cache.pt")
    record = json.loads((tmp_path / "run" / "history.jsonl").read_text())
    assert 0.0 <= record["region_accuracy"] <= 1.0 and record["caption_share"] == 0.5
    with pytest.raises(AssertionError, match="MiniLM loaded"):  # a text the cache lacks still goes to MiniLM
        from medfm.models.encoders.base import EncoderInfo
        from medfm.models.encoders.medfm_clip import MedfmClipEncoder, build_model

        config = {"name": "medfm-clip-small", **list_encoders()["medfm-clip-small"]}
        MedfmClipEncoder(build_model(config), EncoderInfo("x", 256, has_text=True), text_features={}).encode_text(["unseen"])


def test_known_text_features_give_the_same_embeddings_as_the_text_tower(monkeypatch):
    from medfm.models.encoders.base import EncoderInfo
    from medfm.models.encoders.medfm_clip import MedfmClipEncoder, build_model

    features = torch.nn.functional.normalize(torch.randn(2, 384), dim=1)
    monkeypatch.setattr("medfm.models.encoders.medfm_clip.MiniLM.__init__", lambda self: torch.nn.Module.__init__(self))
    monkeypatch.setattr("medfm.models.encoders.medfm_clip.MiniLM.forward", lambda self, texts: features[[int(t) for t in texts]])
    config = {"name": "medfm-clip-small", **list_encoders()["medfm-clip-small"]}
    model = build_model(config)
    known = MedfmClipEncoder(model, EncoderInfo("x", 256, has_text=True), text_features={"0": features[0], "1": features[1]})
    fresh = MedfmClipEncoder(model, EncoderInfo("x", 256, has_text=True))
    assert np.allclose(known.encode_text(["1", "0"]), fresh.encode_text(["1", "0"]), atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the refusal is for machines without one")
def test_a_cuda_device_on_a_machine_without_one_is_refused_in_one_line(tmp_path):
    write_cache(tmp_path / "cache.pt")
    with pytest.raises(MedfmError, match=r"device 'cuda': this machine has no CUDA GPU \(torch sees none\); use --device cpu"):
        train_clip(tmp_path, tmp_path / "run", epochs=1, cache=tmp_path / "cache.pt", device="cuda")
    with pytest.raises(MedfmError, match=r"device must be cpu, cuda or cuda:N; got 'gpu0'"):
        train_clip(tmp_path, tmp_path / "run", epochs=1, cache=tmp_path / "cache.pt", device="gpu0")


@pytest.mark.usefixtures("random_text_tower")
def test_float16_weights_halve_the_file_and_embed_as_the_float32_ones(tmp_path):
    from medfm.models.encoders.medfm_clip import build_medfm_clip

    torch.set_num_threads(1)
    write_cache(tmp_path / "cache.pt")
    out = tmp_path / "run"
    full = train_clip(tmp_path, out, epochs=1, batch_size=8, cache=tmp_path / "cache.pt")
    (tmp_path / "float32.safetensors").write_bytes(full.read_bytes())
    half = train_clip(tmp_path, out, epochs=1, batch_size=8, cache=tmp_path / "cache.pt", resume=True, float16=True)
    assert len((out / "history.jsonl").read_text().splitlines()) == 1  # a finished run: only the weights were rewritten
    with safe_open(half, "pt") as handle:
        assert handle.metadata()["dtype"] == "float16"
        assert handle.get_tensor("image_projection.weight").dtype == torch.float16
    assert half.stat().st_size < 0.55 * (tmp_path / "float32.safetensors").stat().st_size
    config = {"name": "medfm-clip-small", **list_encoders()["medfm-clip-small"]}
    planes = [np.random.default_rng(i).integers(0, 255, (64, 80), dtype=np.uint8) for i in range(3)]
    a = build_medfm_clip(config, tmp_path / "float32.safetensors").encode_planes(planes)
    b = build_medfm_clip(config, half).encode_planes(planes)
    assert np.abs(a - b).max() < 5e-3 and not np.array_equal(a, b)
