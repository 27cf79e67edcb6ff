"""scripts/clip_sweep.py: the bundle that carries both caption banks' caches to a GPU machine, and the ranking."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from medfm.train.clip_data import load_cache
from clipdata import write_cache

_SPEC = importlib.util.spec_from_file_location("clip_sweep", Path(__file__).parents[1] / "scripts" / "clip_sweep.py")
clip_sweep = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(clip_sweep)


def test_a_bundle_restores_both_caches_train_and_val_images_close(tmp_path):
    write_cache(tmp_path / "basic.pt")
    data = torch.load(tmp_path / "basic.pt", weights_only=True)
    data["pixels"][1, 0] = 7  # one colour image among the grey ones
    ramp = torch.arange(128, dtype=torch.uint8) * 2
    data["pixels"][3] = torch.stack([ramp.expand(128, 128), ramp.expand(128, 128).T, 255 - ramp.expand(128, 128)])  # colour
    samples = json.loads(data["samples"])
    samples[2]["split"] = "test"  # the bundle leaves the test split behind
    data["samples"] = json.dumps(samples)
    torch.save({**data, "captions": "basic"}, tmp_path / "basic.pt")
    torch.save({**data, "captions": "anatomy", "texts": data["texts"][:3], "text_features": data["text_features"][:3]},
               tmp_path / "anatomy.pt")
    clip_sweep.pack({"basic": tmp_path / "basic.pt", "anatomy": tmp_path / "anatomy.pt"}, tmp_path / "bundle.xz")
    caches = clip_sweep.unpack(tmp_path / "bundle.xz", tmp_path / "caches")
    for bank, texts in (("basic", data["texts"]), ("anatomy", data["texts"][:3])):
        pixels, restored, held_texts, features = load_cache(caches[bank], bank)
        kept = [i for i, s in enumerate(samples) if s["split"] != "test"]
        assert pixels.shape == data["pixels"][kept].shape and len(restored) == len(kept) == 39
        error = (pixels.float() - data["pixels"][kept].float()).abs()
        assert error.mean() < 1.5 and error[kept.index(3)].mean() < 1.5  # JPEG at quality 95, colour not subsampled
        assert (pixels[1, 0] < 20).float().mean() > 0.95 and (pixels[0, 0] == pixels[0, 1]).all()
        assert [s.path for s in restored] == [samples[i]["path"] for i in kept]
        assert held_texts == texts and torch.allclose(features, data["text_features"][:len(texts)], atol=1e-3)


def test_merge_ranks_every_shard_and_keeps_the_best_weights(tmp_path):
    for shard, scores in enumerate(([0.5, 0.7], [0.9])):
        results = []
        for i, score in enumerate(scores):
            weights = tmp_path / f"w{shard}{i}.safetensors"
            weights.write_bytes(f"{score}".encode())
            results.append({"name": f"r{shard}{i}", "score": score, "weights": str(weights)})
        (tmp_path / f"sweep-{shard}.json").write_text(json.dumps(results))
    clip_sweep.merge(tmp_path, tmp_path / "best", keep=2)
    ranked = json.loads((tmp_path / "best" / "sweep.json").read_text())["results"]
    assert [r["name"] for r in ranked] == ["r10", "r01", "r00"]
    assert sorted(p.name for p in (tmp_path / "best").glob("*.safetensors")) == ["rank1-r10.safetensors", "rank2-r01.safetensors"]
    assert (tmp_path / "best" / "rank1-r10.safetensors").read_bytes() == b"0.9"


def test_packing_caches_of_different_images_is_refused(tmp_path):
    write_cache(tmp_path / "a.pt")
    write_cache(tmp_path / "b.pt", n=42)
    data = torch.load(tmp_path / "b.pt", weights_only=True)
    torch.save({**data, "captions": "anatomy"}, tmp_path / "b.pt")
    with pytest.raises(SystemExit, match="b.pt: its images differ from the first cache's"):
        clip_sweep.pack({"basic": tmp_path / "a.pt", "anatomy": tmp_path / "b.pt"}, tmp_path / "bundle.xz")
