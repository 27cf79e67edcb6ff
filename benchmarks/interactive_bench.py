"""Interactive segmentation speed on one CPU thread: medfm-interactive against SAM ViT-B; prints one JSON object.

Run ``python benchmarks/interactive_bench.py [--repeats 20]``.

For a 256×256 and a 512×512 RGB plane (a textured disk), each model runs in its own
subprocess (so that peak memory is its own) with ``torch.set_num_threads(1)``:
``set_image`` (the encoder; median of several runs, the embedding cache cleared between
them) and ``predict`` for a first box (the disk's tight box) and for corrective clicks with
the previous logits as ``mask_input`` (median). medfm-interactive zooms in by default: its
first box (``first_mask_ms``) and first click (``first_click_ms``, which first decodes the
whole plane to find the object) include encoding the crop, timed as "set image + prompt"
on a freshly set plane less ``set_image_ms``; a correction inside the crop decodes only
(``correction_ms``); ``zoom_off`` times the first box and the correction with zoom off.
medfm's model runs through ``create_segmenter`` (plane check, cache and prompt validation
included); SAM ViT-B is ``sam_model_registry["vit_b"]()`` with random weights behind
segment-anything's own ``SamPredictor`` — weights do not change its speed. ``speedup``
compares "set image + first mask". Peak memory is the subprocess's peak resident set
(``ru_maxrss``), which includes the Python interpreter and PyTorch (about 300–400 MB
before any model).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np

SIZES = (256, 512)


def test_plane(size: int) -> np.ndarray:
    """A noisy bright disk on a dark background, ``(size, size, 3)`` uint8."""
    yy, xx = np.mgrid[0:size, 0:size]
    disk = (xx - size * 0.45) ** 2 + (yy - size * 0.5) ** 2 <= (size * 0.2) ** 2
    noise = np.random.default_rng(size).normal(0, 20, (size, size, 3))
    return np.clip(np.where(disk[..., None], 180, 60) + noise, 0, 255).astype(np.uint8)


def _median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 2)


def _medfm_size(segmenter, size: int, repeats: int) -> dict:
    from medfm.models.segmenters.prompt import Prompt

    plane = test_plane(size)

    def set_image() -> None:
        segmenter.reset_image()
        segmenter.set_image(plane)

    def first(prompt: Prompt) -> float:
        """A first prompt's own time: "set image + prompt" on a fresh plane (the crop is encoded each time) less set image."""
        return round(_median_ms(lambda: set_image() or segmenter.predict(prompt), repeats) - set_ms, 2)

    set_ms = _median_ms(set_image, repeats)
    box = Prompt(boxes=[(size * 0.25, size * 0.3, size * 0.65, size * 0.7)])
    first_ms = first(box)
    first_click_ms = first(Prompt(points=[(size * 0.45, size * 0.5)], point_labels=[1]))
    correction = Prompt(points=[(size * 0.45, size * 0.5), (size * 0.1, size * 0.1)], point_labels=[1, 0],
                        mask_input=segmenter.predict(box).logits)
    correction_ms = _median_ms(lambda: segmenter.predict(correction), repeats)
    segmenter.zoom = False
    whole_correction = replace(correction, mask_input=segmenter.predict(box).logits)
    zoom_off = {"first_mask_ms": _median_ms(lambda: segmenter.predict(box), repeats),
                "correction_ms": _median_ms(lambda: segmenter.predict(whole_correction), repeats)}
    segmenter.zoom = True
    return {"set_image_ms": set_ms, "first_mask_ms": first_ms, "first_click_ms": first_click_ms,
            "correction_ms": correction_ms, "zoom_off": zoom_off}


def bench_medfm(repeats: int) -> dict:
    from medfm.models.registry import create_segmenter

    segmenter = create_segmenter("medfm-interactive")
    return {str(size): _medfm_size(segmenter, size, repeats) for size in SIZES}


def bench_sam(repeats: int) -> dict:
    from segment_anything import SamPredictor, sam_model_registry

    predictor = SamPredictor(sam_model_registry["vit_b"]().eval())
    results = {}
    for size in SIZES:
        plane = test_plane(size)
        # SAM resizes every plane to 1024 and its encoder takes tens of seconds on one thread: 1 run.
        set_ms = _median_ms(lambda: predictor.set_image(plane), 1)
        box = np.array([size * 0.25, size * 0.3, size * 0.65, size * 0.7])
        first_ms = _median_ms(lambda: predictor.predict(box=box, multimask_output=False), repeats)
        _, _, low_res = predictor.predict(box=box, multimask_output=False, return_logits=True)
        points = np.array([[size * 0.45, size * 0.5], [size * 0.1, size * 0.1]])

        def correction() -> None:
            predictor.predict(point_coords=points, point_labels=np.array([1, 0]), mask_input=low_res, multimask_output=False)

        correction_ms = _median_ms(correction, repeats)
        results[str(size)] = {"set_image_ms": set_ms, "first_mask_ms": first_ms, "correction_ms": correction_ms}
    return results


def run_one(model: str, repeats: int) -> None:
    import torch

    torch.set_num_threads(1)
    with torch.inference_mode():
        results = bench_medfm(repeats) if model == "medfm-interactive" else bench_sam(repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"sizes": results, "peak_rss_mb": round(peak_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model", choices=["medfm-interactive", "sam-vit-b"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model:
        run_one(args.model, args.repeats)
        return
    report = {"machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(), "threads": 1}}
    for model in ("medfm-interactive", "sam-vit-b"):
        output = subprocess.run(
            [sys.executable, __file__, "--model", model, "--repeats", str(args.repeats)],
            check=True, capture_output=True, text=True,
        ).stdout
        report[model] = json.loads(output.strip().splitlines()[-1])
    ours, sam = report["medfm-interactive"]["sizes"], report["sam-vit-b"]["sizes"]
    report["speedup_set_image_plus_first_mask"] = {
        size: round(
            (sam[size]["set_image_ms"] + sam[size]["first_mask_ms"]) / (ours[size]["set_image_ms"] + ours[size]["first_mask_ms"]), 1
        )
        for size in ours
    }
    report["speedup_correction"] = {size: round(sam[size]["correction_ms"] / ours[size]["correction_ms"], 1) for size in ours}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
