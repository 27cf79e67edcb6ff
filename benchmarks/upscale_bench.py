"""Super-resolution speed and quality: medfm's upscaler against bicubic and Lanczos in the same run.

Run ``python benchmarks/upscale_bench.py [--model medfm-upscale] [--side 256] [--frames 20] [--per-dataset 20] [--scale 2|4]``;
prints one JSON object: frames per second on the CPU (``--side`` square low-resolution grey frames,
×2, the threads medfm chooses) of the model, of Pillow's bicubic and of Pillow's Lanczos, with the
model's ratio to each; and, when ``../shared/data`` (or ``--data``) is present, held-out PSNR/SSIM of
the model, bicubic and Lanczos on up to ``--per-dataset`` held-out sources of each dataset at ``--scale``
(×4: two passes of a ×2 model), with the gain in dB; and with ``--dice N``, the Dice of medfm's shipped segmenter (medfm-interactive, prompted
with the reference mask's box) on up to N held-out images of each segmentation set (HC18, Kvasir-SEG,
PH2) after ×2 area downsampling and upscaling by the model or by bicubic, next to the original image;
and with ``--through-plane``, ×2 upsampling along the slice axis of the MRI volumes of ``volumes_3d_smoke``
against linear and cubic interpolation (PSNR).
Without the data the quality parts are skipped and the JSON says why.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def frames_per_second(function, frames: list[np.ndarray], repeats: int = 2) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            function(frame)
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def segmenter_dice(upscaler, data: Path, per_dataset: int) -> dict:
    """Box-prompted medfm-interactive Dice on original, model-upscaled and bicubic-upscaled held-out images."""
    from medfm.eval.seg_metrics import dice
    from medfm.io import load
    from medfm.io.image import Image
    from medfm.io.label_maps import read_mask
    from medfm.io.manifest import read_rows
    from medfm.models.registry import create_segmenter
    from medfm.models.segmenters.prompt import Prompt
    from medfm.tasks.upscale import upscale_image
    from medfm.train.upscale_data import Source, area_downsample
    from medfm.train.upscale_eval import pillow_upscale

    segmenter = create_segmenter("medfm-interactive")
    results = {}
    for name, group_column in (("hc18_fetal_head_us", "subject_group"), ("kvasir_seg_polyp", "image"), ("ph2_dermoscopy", "image")):
        rows = [row for row in read_rows(data / name / "manifest.csv")
                if Source(data / name / row["image"], name, row[group_column] or row["image"]).held_out][:per_dataset]
        scores = {"original": [], "model": [], "bicubic": []}
        for row in rows:
            image = load(data / name / row["image"])
            reference = read_mask(data / name / row["mask"], image.spatial_shape)[:, :, 0].T  # (rows, columns)
            columns, rows_ = image.spatial_shape[0] // 2 * 2, image.spatial_shape[1] // 2 * 2
            high = np.asarray(image.array[:columns, :rows_, 0, 0, :], np.float32).transpose(1, 0, 2)  # (rows, columns, C)
            low = area_downsample(high.transpose(2, 0, 1), 2).transpose(1, 2, 0)
            low_image = Image(np.rint(low).astype(np.uint8).transpose(1, 0, 2)[:, :, None, None, :])
            by_model = upscale_image(low_image, upscaler, 2).array[:, :, 0, 0, :].transpose(1, 0, 2)
            by_bicubic = np.stack([pillow_upscale(low[..., c] / 255, 2, "bicubic") * 255 for c in range(low.shape[2])], axis=-1)
            target = reference[:rows_, :columns]
            ys, xs = np.nonzero(target)
            if len(ys) == 0:
                continue
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            for method, plane in (("original", high), ("model", by_model), ("bicubic", by_bicubic)):
                segmenter.set_image(np.rint(plane).astype(np.uint8).squeeze())
                scores[method].append(dice(segmenter.predict(Prompt(boxes=[box])).mask, target))
                segmenter.reset_image()
        results[name] = {"images": len(scores["model"]), **{m: float(np.mean(v)) for m, v in scores.items() if v}}
    return results


def through_plane_psnr(upscaler, data: Path) -> dict:
    """×2 through-plane PSNR of the model against linear and cubic interpolation along the slice axis, on the
    MRI volumes of ``volumes_3d_smoke`` (never trained on): each volume's slice pairs are area-averaged (a
    thick-slice acquisition of half the slices), then upsampled back along the slice axis only."""
    from scipy.ndimage import zoom

    from medfm.io import load
    from medfm.io.image import Image
    from medfm.io.manifest import read_rows
    from medfm.tasks.upscale import upscale_image

    folder = data / "volumes_3d_smoke"
    results = {}
    for row in read_rows(folder / "manifest.csv"):
        if not row["file"].endswith(".nrrd"):
            continue
        image = load(folder / row["file"])
        reference = np.asarray(image.array[..., 0, 0], np.float64)
        reference = reference[:, :, : reference.shape[2] // 2 * 2]
        low = reference.reshape(*reference.shape[:2], -1, 2).mean(axis=3)
        thick = Image(np.rint(low).astype(image.array.dtype)[..., None, None], image.affine, image.modality)
        by_model = np.asarray(upscale_image(thick, upscaler, 2, through_plane=True).array[..., 0, 0], np.float64)
        span = reference.max() - reference.min()

        def psnr(estimate: np.ndarray) -> float:
            return float(10 * np.log10(span**2 / np.mean((estimate - reference) ** 2)))

        interpolated = {order: zoom(low, (1, 1, 2), order=order, mode="nearest", grid_mode=True) for order in (1, 3)}
        results[Path(row["file"]).stem.removesuffix("_image")] = {
            "shape": list(reference.shape), "model": psnr(by_model), "linear": psnr(interpolated[1]), "cubic": psnr(interpolated[3])}
    mean = {method: float(np.mean([r[method] for r in results.values()])) for method in ("model", "linear", "cubic")}
    return {"volumes": results, "mean": mean, "gain_vs_linear_db": mean["model"] - mean["linear"],
            "gain_vs_cubic_db": mean["model"] - mean["cubic"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="upscaler name or model folder (default medfm-upscale)")
    parser.add_argument("--side", type=int, default=256, help="low-resolution frame side in pixels")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--per-dataset", type=int, default=20, help="held-out sources per dataset for PSNR")
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4), help="factor of the quality measure")
    parser.add_argument("--dice", type=int, default=0, help="held-out images per segmentation set for the Dice check")
    parser.add_argument("--data", type=Path, default=None, help="project datasets (default ../shared/data)")
    parser.add_argument("--through-plane", action="store_true", help="also ×2 through-plane PSNR on the MRI volumes")
    args = parser.parse_args()

    from medfm.models.registry import DEFAULT_UPSCALER, create_upscaler
    from medfm.paths import shared_data_dir
    from medfm.threads import ensure_threads
    from medfm.train.upscale_data import find_sources
    from medfm.train.upscale_eval import evaluate_upscaler, pillow_upscale

    upscaler = create_upscaler(args.model or DEFAULT_UPSCALER)
    threads = ensure_threads()
    rng = np.random.default_rng(0)
    frames = [rng.random((args.side, args.side), dtype=np.float32) for _ in range(args.frames)]
    model_fps = frames_per_second(lambda f: upscaler.upscale_planes(np.stack([f] * upscaler.frames)[None]), frames[:5])
    bicubic_fps = frames_per_second(lambda f: pillow_upscale(f, 2, "bicubic"), frames)
    lanczos_fps = frames_per_second(lambda f: pillow_upscale(f, 2, "lanczos"), frames)
    report = {
        "machine": platform.machine(), "threads": threads, "model": upscaler.name, "weights_sha256": upscaler.weights_sha256,
        "low_resolution_side": args.side, "scale": 2,
        "frames_per_s": {"model": model_fps, "bicubic": bicubic_fps, "lanczos": lanczos_fps},
        "speed_ratio_model_to_bicubic": model_fps / bicubic_fps, "speed_ratio_model_to_lanczos": model_fps / lanczos_fps,
    }
    data = args.data or shared_data_dir()
    folders = [folder for folder in sorted(data.glob("*")) if (folder / "manifest.csv").is_file()] if data.is_dir() else []
    if not folders:
        report["quality"] = f"skipped: no datasets in {data}"
    else:
        held_out = []
        for folder in folders:
            if folder.name == "volumes_3d_smoke":
                continue  # smoke-test material, not a benchmark (its README)
            held_out += [s for s in find_sources([folder]) if s.held_out][: args.per_dataset]
        quality = evaluate_upscaler(upscaler, held_out, args.scale)
        report["quality"] = {"scale": args.scale, "sources": len(held_out), "all": quality["all"],
                             "per_dataset": {k: v["psnr_gain_vs_bicubic_db"] for k, v in quality["per_dataset"].items()}}
        if args.dice:
            report["segmenter_dice"] = segmenter_dice(upscaler, data, args.dice)
        if args.through_plane:
            report["through_plane"] = through_plane_psnr(upscaler, data)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
