"""Linear-probe accuracy against the fraction of training data kept: curated (prototypes, k-center) vs random; prints JSON.

The pool is the ``train`` rows of a ``medfm train clip --manifest-only`` split manifest (at most
``--per-class`` per class of ``--task``), embedded once by ``--encoder``; each method keeps each
fraction of it (:func:`medfm.train.curate.select`, as ``medfm curate`` does), a
:class:`~medfm.models.probe.LinearProbe` is fitted on the subset and scored on the ``test`` rows,
with 95 % bootstrap intervals over test groups. Random choice is repeated with ``--random-seeds`` seeds.
``--report R.html`` draws the curves (:mod:`medfm.eval.reports.curation`); with ``--from-json`` it
draws those of an earlier run's JSON without computing anything.

    python benchmarks/curation_eval.py --manifest runs/medfm-clip/split_manifest.csv --data ../shared/data \\
        --encoder medfm-clip-small --task region --out runs/curation.json --report runs/curation.html
    python benchmarks/curation_eval.py --from-json docs/ssl-pretraining.curation.json --report docs/ssl-pretraining.curation.html
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ssl_probe_eval import open_encoder, probe_accuracy

from medfm.eval.reports.curation import write_curation_report
from medfm.models.probe import LinearProbe
from medfm.serialize import json_ready
from medfm.train.clip_data import read_plane, read_split_manifest
from medfm.train.curate import select


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--encoder", default="medfm-clip-small")
    parser.add_argument("--task", default="region", choices=["region", "modality", "label", "dataset"])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--fractions", default="0.05,0.1,0.25,0.5,1.0")
    parser.add_argument("--random-seeds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--report", type=Path, help="also write the plot and table as a self-contained HTML page")
    parser.add_argument("--from-json", type=Path, help="draw this earlier result (needs --report) instead of computing one")
    args = parser.parse_args()
    if args.from_json is not None:
        if args.report is None:
            parser.error("--from-json needs --report")
        write_curation_report(json.loads(args.from_json.read_text()), args.report)
        return
    if args.manifest is None or args.data is None:
        parser.error("--manifest and --data are needed unless --from-json is given")
    import torch

    torch.set_num_threads(1)
    samples = read_split_manifest(args.manifest)
    rng = np.random.default_rng(0)
    by_class: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if s.split == "train":
            by_class.setdefault(getattr(s, args.task), []).append(i)
    pool = sorted(int(j) for members in by_class.values()
                  for j in (rng.choice(members, args.per_class, replace=False) if len(members) > args.per_class else members))
    test = [i for i, s in enumerate(samples) if s.split == "test"]
    encoder = open_encoder(args.encoder)
    vectors = encoder.encode_planes([read_plane(args.data, samples[i]) for i in pool + test])
    pool_x, test_x = vectors[:len(pool)], vectors[len(pool):]
    pool_y = [getattr(samples[i], args.task) for i in pool]
    test_y = [getattr(samples[i], args.task) for i in test]
    groups = [samples[i].group for i in test]
    curves: dict[str, list] = {}
    for fraction in (float(f) for f in args.fractions.split(",")):
        for method in ("prototypes", "kcenter", "random"):
            for seed in range(args.random_seeds if method == "random" else 1):
                kept, _ = select(pool_x, fraction, method, seed=seed)
                if len({pool_y[i] for i in kept}) < 2:
                    accuracy = None  # a probe needs two classes
                else:
                    accuracy = probe_accuracy(pool_x[kept], [pool_y[i] for i in kept], test_x, test_y, groups, LinearProbe())
                curves.setdefault(method, []).append({"fraction": fraction, "seed": seed, "kept": len(kept),
                                                      "classes_kept": len({pool_y[i] for i in kept}), "accuracy": accuracy})
                print(f"{method} {fraction} seed {seed}: {accuracy['value'] if accuracy else None}", file=sys.stderr)
    result = {"encoder": args.encoder, "weights_sha256": encoder.info.weights_sha256, "task": args.task,
              "pool": len(pool), "test": len(test), "test_groups": len(set(groups)), "curves": curves}
    text = json.dumps(json_ready(result), indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    if args.report:
        write_curation_report(json.loads(text), args.report)
    print(text)


if __name__ == "__main__":
    main()
