"""FRD speed: medfm against the frd-score package on the same generated image folders.

Run ``python benchmarks/frd_bench.py [--n 32] [--size 128] [--masks] [--repeats 2]``;
prints one JSON object with the seconds each took (best of ``--repeats``), both FRD
values and the speed ratio. frd-score runs twice: with its default worker count (CPUs
minus 2, at least 1) and with as many workers as medfm uses, so the ratio with equal
parallelism is reported too. Two sets of ``--n`` grey PNG phantoms (a disk on a
sinusoidal texture with noise) differ in texture frequency and noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path


from medfm.io.synthetic import write_disc_phantoms


def best_time(function, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images per set")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--masks", action="store_true", help="use the disk masks (default: whole image)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import frd_score.frd as frd_score

    from medfm.eval.frd import compute_frd
    from medfm.eval.radiomics_features import default_workers

    workers = default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        images_a, masks_a = write_disc_phantoms(Path(tmp) / "a", args.n, texture=1.0, seed=0, size=args.size)
        images_b, masks_b = write_disc_phantoms(Path(tmp) / "b", args.n, texture=1.6, seed=1, size=args.size)
        mask_args = (masks_a, masks_b) if args.masks else (None, None)

        def medfm_frd() -> float:
            return compute_frd(images_a, images_b, *mask_args, workers=workers).frd

        def frd_score_frd(num_workers: int | None) -> float:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints its result
                return float(frd_score.compute_frd(
                    [str(images_a), str(images_b)], num_workers=num_workers,
                    paths_masks=[str(m) for m in mask_args] if args.masks else None,
                ))

        medfm_s, medfm_value = best_time(medfm_frd, args.repeats)
        default_s, frd_value = best_time(lambda: frd_score_frd(None), args.repeats)
        equal_s, _ = best_time(lambda: frd_score_frd(workers), args.repeats)
    print(json.dumps({
        "images_per_set": args.n, "size": args.size, "masks": args.masks, "repeats": args.repeats,
        "cpus": os.cpu_count(), "medfm_workers": workers, "frd_score_default_workers": max(1, (os.cpu_count() or 1) - 2),
        "machine": platform.machine(), "python": platform.python_version(),
        "frd": {"medfm": medfm_value, "frd_score": frd_value, "abs_difference": abs(medfm_value - frd_value)},
        "seconds": {"medfm": medfm_s, "frd_score_default": default_s, "frd_score_equal_workers": equal_s},
        "speedup": {"vs_frd_score_default": default_s / medfm_s, "vs_frd_score_equal_workers": equal_s / medfm_s},
    }, indent=2))


if __name__ == "__main__":
    main()
