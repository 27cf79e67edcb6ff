"""Choose medfm-clip's recipe on the validation split: train a grid of recipes, rank them, keep the best weights.

Each recipe is one ``medfm.train.clip.train_clip`` run (the same function as ``medfm train clip``) on a
prepared cache; its last epoch's validation measures (zero-shot modality and body region, MedPix
caption→image recall@10) go into ``OUT/sweep.json``, ranked by their mean. The test split is never read.

A GPU machine often holds no copy of the datasets, so ``pack`` first squeezes the caches of both caption
banks into one small file (train and val images only, as JPEG, lzma) that ``unpack``
restores there. Shards of the grid run side by side on one GPU; ``merge`` ranks them all:

    python scripts/clip_sweep.py pack --cache basic=runs/clip-basic.pt --cache anatomy=runs/clip-anatomy.pt -o bundle.xz
    python scripts/clip_sweep.py unpack --bundle bundle.xz -o runs/sweep/caches
    python scripts/clip_sweep.py run --caches runs/sweep/caches --device cuda --shard 0/2 -o runs/sweep &
    python scripts/clip_sweep.py run --caches runs/sweep/caches --device cuda --shard 1/2 -o runs/sweep; wait
    python scripts/clip_sweep.py merge --runs runs/sweep -o runs/sweep-best
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import lzma
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from medfm.train.clip import train_clip
from medfm.train.clip_data import load_cache

#: The recipes tried: every combination of these values, the short schedules first.
GRID = {
    "epochs": (28, 80, 160),
    "loss": ("clip", "dhn-nce", "siglip"),
    "captions": ("basic", "anatomy"),
    "caption_share": (0.5, 0.8),
}
#: Validation measures whose mean ranks the recipes.
RANKED_BY = ("modality_accuracy", "region_accuracy", "text_to_image_recall@10")


def pack(caches: dict[str, Path], out: Path, quality: int = 95) -> None:
    """Both banks' caches → one lzma file with the train and val images once, each a JPEG of ``quality``
    (grey planes as one channel, colour not subsampled): a device call carries 64 MiB with the repository, and the lossless
    planes alone would take about 55 MB."""
    from PIL import Image

    banks, order, pixels = {}, None, None
    for bank, path in caches.items():
        cached, samples, texts, features = load_cache(path, bank)
        keep = [i for i, s in enumerate(samples) if s.split in ("train", "val")]
        places = [(samples[i].dataset, samples[i].path, samples[i].frame) for i in keep]
        if order is None:
            order, pixels = places, cached[keep]
        elif places != order:
            raise SystemExit(f"{path}: its images differ from the first cache's")
        banks[bank] = {"samples": json.dumps([asdict(samples[i]) for i in keep]), "texts": texts,
                       "text_features": features.half()}
    jpegs = []
    for plane in pixels.permute(0, 2, 3, 1).numpy():
        grey = (plane == plane[..., :1]).all()
        buffer = io.BytesIO()
        Image.fromarray(plane[..., 0] if grey else plane).save(buffer, format="JPEG", quality=quality, subsampling=0)
        jpegs.append(buffer.getvalue())
    buffer = io.BytesIO()
    torch.save({"jpegs": jpegs, "banks": banks}, buffer)
    out.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
    print(json.dumps({"bundle": str(out), "megabytes": round(out.stat().st_size / 2**20, 1), "images": len(jpegs),
                      "jpeg_quality": quality}))


def unpack(bundle: Path, folder: Path) -> dict[str, Path]:
    """The bundle → one cache file per bank in ``folder``, in :func:`medfm.train.clip_data.build_cache`'s format."""
    from PIL import Image

    data = torch.load(io.BytesIO(lzma.decompress(bundle.read_bytes())), weights_only=True)
    planes = [np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")) for jpeg in data["jpegs"]]
    pixels = torch.from_numpy(np.stack(planes)).permute(0, 3, 1, 2).contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    caches = {}
    for bank, held in data["banks"].items():
        caches[bank] = folder / f"cache-{bank}.pt"
        torch.save({"pixels": pixels, "samples": held["samples"], "texts": held["texts"],
                    "text_features": held["text_features"].float(), "captions": bank}, caches[bank])
    return caches


def run(caches: Path, out: Path, device: str, budget_s: float, shard: int = 0, shards: int = 1) -> None:
    """Train this shard's recipes of :data:`GRID` (every ``shards``-th, from the ``shard``-th) in turn until
    ``budget_s`` seconds have passed, into ``OUT/RECIPE``; after each one, rewrite ``OUT/sweep-SHARD.json``, so
    that a run stopped early still leaves its results."""
    began = time.time()
    results: list[dict] = []
    for index, values in enumerate(itertools.product(*GRID.values())):
        if index % shards != shard:
            continue
        if time.time() - began > budget_s:
            break
        recipe = dict(zip(GRID, values, strict=True))
        name = "-".join(str(v) for v in values)
        started = time.time()
        weights = train_clip(data=caches, out=out / name, cache=caches / f"cache-{recipe['captions']}.pt", device=device, **recipe)
        history = [json.loads(line) for line in (out / name / "history.jsonl").read_text().splitlines()]
        measures = {key: history[-1][key] for key in RANKED_BY}
        results.append({"name": name, **recipe, **measures, "score": float(np.mean(list(measures.values()))),
                        "seconds": round(time.time() - started, 1), "weights": str(weights),
                        "history": [{key: record[key] for key in ("epoch", "train_loss", "seconds", *RANKED_BY)} for record in history]})
        print(json.dumps({key: value for key, value in results[-1].items() if key != "history"}), flush=True)
        (out / f"sweep-{shard}.json").write_text(json.dumps(results, indent=1))


def merge(runs: Path, out: Path, keep: int = 3) -> None:
    """Every shard's results under ``runs`` → ``OUT/sweep.json`` ranked, and the ``keep`` best recipes' weights
    as ``OUT/rankN-RECIPE.safetensors``."""
    results = [result for path in sorted(runs.glob("sweep-*.json")) for result in json.loads(path.read_text())]
    results.sort(key=lambda r: -r["score"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps({"grid": GRID, "ranked_by": RANKED_BY, "results": results}, indent=1))
    for rank, result in enumerate(results[:keep]):
        shutil.copy(result["weights"], out / f"rank{rank + 1}-{result['name']}.safetensors")
    print(json.dumps({"recipes": len(results), "best": [{k: v for k, v in r.items() if k != "history"} for r in results[:keep]]},
                     indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="caches → one bundle file")
    packing.add_argument("--cache", action="append", required=True, help="BANK=PATH of a `medfm train clip` cache")
    packing.add_argument("-o", "--out", type=Path, required=True)
    unpacking = commands.add_parser("unpack", help="bundle → FOLDER/cache-BANK.pt")
    unpacking.add_argument("--bundle", type=Path, required=True)
    unpacking.add_argument("-o", "--out", type=Path, required=True)
    running = commands.add_parser("run", help="train one shard of the grid")
    running.add_argument("--caches", type=Path, required=True, help="FOLDER of unpack")
    running.add_argument("--device", default="cpu")
    running.add_argument("--budget-s", type=float, default=float("inf"), help="start no recipe after this many seconds")
    running.add_argument("--shard", default="0/1", help="K/N: every N-th recipe from the K-th")
    running.add_argument("-o", "--out", type=Path, required=True)
    merging = commands.add_parser("merge", help="rank every shard's results, copy the best weights")
    merging.add_argument("--runs", type=Path, required=True)
    merging.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "pack":
        pack({bank: Path(path) for bank, path in (item.split("=", 1) for item in args.cache)}, args.out)
    elif args.command == "unpack":
        unpack(args.bundle, args.out)
    elif args.command == "run":
        shard, shards = (int(part) for part in args.shard.split("/"))
        run(args.caches, args.out, args.device, args.budget_s, shard, shards)
    else:
        merge(args.runs, args.out)


if __name__ == "__main__":
    main()
