"""Train ``medfm_interactive`` with simulated interactions on the shared data and generated shapes.

``medfm train interactive --out DIR --minutes N [--resume]``

1. :func:`build_cache` decodes every image and mask once, through the model's own
   :func:`prepare_plane`, into a uint8 ``.npz`` outside the repository, with an honest
   validation split (by ``subject_group`` for HC18, by image for Kvasir-SEG and PH2) that
   training never samples; :func:`write_val_manifest` writes that split from the data alone
   (``medfm train interactive --out DIR --manifest-only``, also done by every training run) as
   ``DIR/val_manifest.csv`` for :mod:`medfm.eval.protocols.interactive`.
2. Each step augments a batch, simulates a first prompt (box, clicks, scribbles), runs the
   encoder once, then 0–3 corrective rounds without gradients (a click in the deepest error
   and the model's own previous probability as mask input), and a last round with gradients
   under Dice + BCE. An EMA of the weights is what gets exported.
3. Checkpoints every two minutes; ``--resume`` continues the same time budget.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from scipy import ndimage

from medfm.models.segmenters.interactive_net import InteractiveNet, prepare_plane, render_prompt_maps
from medfm.eval.protocols.interaction import centre_click, corrective_click, jittered_box, random_scribble
from medfm.eval.seg_metrics import dice
from medfm.io.label_maps import read_mask
from medfm.models.segmenters.prompt import mask_box
from medfm.train.paired_warp import warp_pair

SIZE = 128
#: Fraction of subject groups held out for validation (HC18, Kvasir-SEG, PH2).
VAL_FRACTION = 0.15
#: How often each source is drawn; generated shapes teach "segment what I point at" for any object.
SOURCE_WEIGHTS = {"hc18": 0.25, "kvasir": 0.3, "ph2": 0.15, "vessels": 0.05, "volumes": 0.05, "shapes": 0.2}
CHECKPOINT_SECONDS = 120


def _is_val(group: str) -> bool:
    return int(hashlib.sha256(group.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < VAL_FRACTION


def _read_picture(path: Path) -> np.ndarray:
    with PILImage.open(path) as handle:
        handle.draft(handle.mode, (SIZE * 2, SIZE * 2))  # JPEG decodes at a reduced scale: much faster
        return np.asarray(handle)


def _resize_mask(mask: np.ndarray) -> np.ndarray:
    soft = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(SIZE, SIZE), mode="area")
    return (soft[0, 0] > 0.5).numpy()


def manifest_items(root: Path) -> list[tuple[str, Path, Path, str]]:
    """(source, image, mask, group) for the 2D sets; group is None-free text."""
    items = []
    specs = [
        ("hc18", "hc18_fetal_head_us", "subject_group"),
        ("kvasir", "kvasir_seg_polyp", "image"),
        ("ph2", "ph2_dermoscopy", "image"),
        ("vessels", "fundus_vessels", "subject"),
    ]
    for source, folder, group_column in specs:
        with open(root / folder / "manifest.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                items.append((source, root / folder / row["image"], root / folder / row["mask"], row[group_column]))
    return items


def _volume_slices(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Axial slices with at least 30 labelled pixels of the smoke NRRD volumes, one mask per label value."""
    from medfm.io.formats import load

    pairs = []
    with open(root / "volumes_3d_smoke" / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if not row["file"].endswith(".nrrd"):
                continue
            image = load(root / "volumes_3d_smoke" / row["file"])
            label = load(root / "volumes_3d_smoke" / row["label_or_mask"])
            for k in range(image.spatial_shape[2]):
                plane, labels = image.frame(k), label.frame(k)
                for value in np.unique(labels[labels > 0]):
                    if (labels == value).sum() >= 30:
                        pairs.append((plane, labels == value))
    return pairs


def generate_shape(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A textured object on a textured background: ``(size, size, 3)`` uint8 picture and ``(size, size)`` bool mask."""

    def smooth_noise(cells: int, channels: int) -> np.ndarray:
        coarse = torch.from_numpy(rng.normal(size=(1, channels, cells, cells)).astype(np.float32))
        return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].numpy()

    grid = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    centre = rng.uniform(0.25, 0.75, 2)
    kind = rng.integers(3)
    if kind == 0:  # rotated ellipse
        axes, angle = rng.uniform(0.08, 0.35, 2), rng.uniform(0, np.pi)
        dy, dx = grid[0] - centre[1], grid[1] - centre[0]
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        mask = (u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1
    elif kind == 1:  # star-shaped polygon
        radius = rng.uniform(0.1, 0.3) * (1 + 0.3 * smooth_noise(4, 1)[0])
        angle = np.arctan2(grid[0] - centre[1], grid[1] - centre[0])
        wobble = 1 + rng.uniform(0.1, 0.4) * np.sin(rng.integers(3, 8) * angle + rng.uniform(0, 6))
        mask = np.hypot(grid[0] - centre[1], grid[1] - centre[0]) <= radius * wobble
    else:  # blob: the component of thresholded noise under the centre
        field = smooth_noise(int(rng.integers(3, 7)), 1)[0]
        labels, _ = ndimage.label(field > np.quantile(field, rng.uniform(0.6, 0.9)))
        chosen = labels[int(centre[1] * size), int(centre[0] * size)] or np.bincount(labels.ravel())[1:].argmax() + 1
        mask = labels == chosen
    background = rng.uniform(0, 1, (3, 1, 1)) + rng.uniform(0.05, 0.3) * smooth_noise(int(rng.integers(4, 16)), 3)
    foreground = rng.uniform(0, 1, (3, 1, 1)) + rng.uniform(0.05, 0.3) * smooth_noise(int(rng.integers(4, 32)), 3)
    picture = np.where(mask[None], foreground, background) + rng.uniform(0, 0.1) * rng.normal(size=(3, size, size))
    if rng.random() < 0.5:  # grey, like ultrasound, CT and MR
        picture = np.repeat(picture.mean(axis=0, keepdims=True), 3, axis=0)
    picture = (np.clip(picture, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    return picture, mask


def build_cache(data_root: Path | None, path: Path, shapes: int = 1200, seed: int = 0) -> dict[str, np.ndarray]:
    """Decode, window and resize everything once; ``data_root=None`` caches generated shapes only."""
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    pictures, masks, sources, is_val = [], [], [], []

    def add(source: str, plane: np.ndarray, mask: np.ndarray, val: bool) -> None:
        pictures.append((prepare_plane(plane, SIZE).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        masks.append(_resize_mask(mask))
        sources.append(source)
        is_val.append(val)

    if data_root is not None:
        for source, image_path, mask_path, group in manifest_items(data_root):
            add(source, _read_picture(image_path), read_mask(mask_path)[:, :, 0].T, is_validation(source, group))
        for plane, mask in _volume_slices(data_root):
            add("volumes", plane, mask, False)
    rng = np.random.default_rng(seed)
    for _ in range(shapes):
        add("shapes", *generate_shape(rng), False)
    cache = {
        "pictures": np.stack(pictures),
        "masks": np.stack(masks),
        "sources": np.array(sources),
        "is_val": np.array(is_val),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **cache)
    return cache


def is_validation(source: str, group: str) -> bool:
    """Whether an item of ``source`` in ``group`` belongs to the held-out validation split (HC18, Kvasir-SEG, PH2 only)."""
    return source in ("hc18", "kvasir", "ph2") and _is_val(f"{source}/{group}")


def write_val_manifest(data_root: Path, path: Path) -> int:
    """The validation split as a manifest (absolute ``image``, ``mask``, ``dataset``) for the evaluation
    protocol, in the datasets' manifest order, from the data's manifests alone (nothing decoded); returns its rows.

    The same items are held out by :func:`build_cache`, so the manifest written here and the one a
    training run writes are the same file.
    """
    from medfm.errors import MedfmError, display_path
    from medfm.io.formats import atomic_path

    if not data_root.is_dir():
        raise MedfmError(f"{display_path(data_root)}: data folder not found")
    rows = [(str(image), str(mask), source) for source, image, mask, group in manifest_items(data_root.resolve())
            if is_validation(source, group)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "mask", "dataset"])
        writer.writerows(rows)
    return len(rows)


def augment(pictures: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~medfm.train.paired_warp.warp_pair` of ``(B, 3, S, S)`` [0, 1] pictures and ``(B, 1, S, S)`` {0, 1} masks,
    the masks kept binary."""
    out_pictures, warped = warp_pair(pictures, masks, rng)
    out_masks = (warped > 0.5).float()
    # A warp that pushes the object out of view is no lesson: keep those samples unwarped.
    lost = out_masks.flatten(1).sum(1) < 16
    out_pictures[lost], out_masks[lost] = pictures[lost], masks[lost]
    return out_pictures, out_masks


def first_prompt(truth: np.ndarray, rng: np.random.Generator) -> dict:
    """A random first interaction on ``(S, S)`` bool ``truth``: box, clicks, scribbles or box + click."""
    prompt: dict = {"points": [], "labels": [], "box": None, "positive": None, "negative": None}
    depth = ndimage.distance_transform_edt(np.pad(truth, 1))[1:-1, 1:-1]
    inner = np.flatnonzero(depth >= max(1.0, depth.max() / 3))
    ring = ndimage.binary_dilation(truth, iterations=int(rng.integers(3, 12))) & ~truth

    def interior_point() -> tuple[float, float]:
        row, column = divmod(int(rng.choice(inner)), truth.shape[1])
        return float(column), float(row)

    choice = rng.random()
    if choice < 0.35 or choice >= 0.9:
        prompt["box"] = jittered_box(truth, rng, jitter=rng.uniform(0, 0.15))
    if 0.35 <= choice < 0.6 or choice >= 0.9:
        prompt["points"].append(centre_click(truth) if rng.random() < 0.5 else interior_point())
        prompt["labels"].append(1)
    elif 0.6 <= choice < 0.75:
        for _ in range(rng.integers(1, 4)):
            prompt["points"].append(interior_point())
            prompt["labels"].append(1)
        candidates = np.flatnonzero(ring)
        for _ in range(rng.integers(0, 3) if candidates.size else 0):
            row, column = divmod(int(rng.choice(candidates)), truth.shape[1])
            prompt["points"].append((float(column), float(row)))
            prompt["labels"].append(0)
    elif 0.75 <= choice < 0.9:
        prompt["positive"] = random_scribble(truth, rng, steps=int(rng.integers(10, 60))).astype(np.float32)
        if ring.any() and rng.random() < 0.5:
            prompt["negative"] = random_scribble(ring, rng, steps=int(rng.integers(10, 60))).astype(np.float32)
    return prompt


def _maps(prompt: dict, previous: np.ndarray | None) -> torch.Tensor:
    return render_prompt_maps(
        SIZE, (SIZE, SIZE), np.array(prompt["points"]).reshape(-1, 2), np.array(prompt["labels"]),
        [] if prompt["box"] is None else [prompt["box"]], prompt["positive"], prompt["negative"], previous,
    )


def _logits(net: InteractiveNet, features: list[torch.Tensor], maps: torch.Tensor) -> torch.Tensor:
    return F.interpolate(net.decode(features, maps), size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def training_step(net, optimizer, loss_fn, pictures, masks, rng, rounds: int | None = None) -> float:
    """One batch: augment, first prompt, 0–3 corrective rounds without gradients (``rounds``, else drawn from
    ``rng`` after the prompts), a last round with them."""
    pictures, masks = augment(pictures, masks, rng)
    truths = masks[:, 0].numpy().astype(bool)
    prompts = [first_prompt(truth, rng) for truth in truths]
    features = net.encode(pictures)
    previous: list[np.ndarray | None] = [None] * len(prompts)
    for _ in range(int(rng.integers(0, 4)) if rounds is None else rounds):
        with torch.no_grad():
            logits = _logits(net, [f.detach() for f in features], torch.stack([_maps(p, q) for p, q in zip(prompts, previous)]))
        probabilities = torch.sigmoid(logits[:, 0]).numpy()
        for index, (prompt, truth) in enumerate(zip(prompts, truths)):
            click = corrective_click(truth, probabilities[index] > 0.5)
            if click is not None:
                prompt["points"].append(click[:2])
                prompt["labels"].append(click[2])
            previous[index] = probabilities[index]
    logits = _logits(net, features, torch.stack([_maps(p, q) for p, q in zip(prompts, previous)]))
    loss = loss_fn(logits, masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def validate(net: InteractiveNet, cache: dict[str, np.ndarray]) -> dict[str, float]:
    """Box-only and one-centre-click Dice on the cached validation split at the working size, per source
    (:func:`medfm.eval.seg_metrics.dice`); masks left empty at the working size are skipped."""
    net.eval()
    results: dict[str, list[float]] = {}
    for index in np.flatnonzero(cache["is_val"]):
        truth = cache["masks"][index]
        if not truth.any():  # a structure that vanished at the working size: no box or click to give
            continue
        features = net.encode(torch.from_numpy(cache["pictures"][index]).permute(2, 0, 1)[None].float() / 255)
        for name, prompt in (
            ("box", {"points": [], "labels": [], "box": mask_box(truth), "positive": None, "negative": None}),
            ("click", {"points": [centre_click(truth)], "labels": [1], "box": None, "positive": None, "negative": None}),
        ):
            prediction = _logits(net, features, _maps(prompt, None)[None])[0, 0].numpy() > 0
            results.setdefault(f"{cache['sources'][index]}/{name}", []).append(dice(prediction, truth))
    net.train()
    return {key: round(float(np.mean(values)), 4) for key, values in sorted(results.items())}


def export_weights(net: InteractiveNet, path: Path) -> None:
    """The network's state as safetensors (weights and normalisation buffers)."""
    from medfm.models.registry import save_weights

    save_weights(net.state_dict(), path)


def train(out: Path, minutes: float, resume: bool, cache_path: Path, data_root: Path | None,
          batch_size: int = 16, learning_rate: float = 2e-3, seed: int = 0, log=print) -> dict[str, float]:
    """Train within ``minutes`` of wall time (counted across resumes); returns the final validation Dice."""
    from monai.losses import DiceCELoss
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    out.mkdir(parents=True, exist_ok=True)
    cache = build_cache(data_root, cache_path)
    if data_root is not None:
        write_val_manifest(data_root, out / "val_manifest.csv")
    train_sources = {
        source: np.flatnonzero((cache["sources"] == source) & ~cache["is_val"]) for source in SOURCE_WEIGHTS
    }
    train_sources = {source: indices for source, indices in train_sources.items() if indices.size}
    weights = np.array([SOURCE_WEIGHTS[source] for source in train_sources])
    torch.manual_seed(seed)
    net = InteractiveNet()
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.998), use_buffers=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=learning_rate, weight_decay=1e-4)
    loss_fn = DiceCELoss(sigmoid=True)
    rng = np.random.default_rng(seed)
    step, elapsed = 0, 0.0
    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        rng.bit_generator.state = state["rng"]
        log(f"resumed at step {step}, {elapsed / 60:.1f} min")
    budget = minutes * 60
    started, last_checkpoint, running = time.perf_counter() - elapsed, time.perf_counter(), []

    def save_checkpoint() -> None:
        state = {"net": net.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                 "step": step, "elapsed": time.perf_counter() - started, "rng": rng.bit_generator.state}
        torch.save(state, out / "checkpoint.tmp")
        (out / "checkpoint.tmp").replace(checkpoint_path)

    while time.perf_counter() - started < budget:
        progress = (time.perf_counter() - started) / budget
        warmup = min(1.0, (step + 1) / 100)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * warmup * 0.5 * (1 + math.cos(math.pi * progress))
        sources = rng.choice(len(train_sources), batch_size, p=weights / weights.sum())
        indices = np.array([rng.choice(list(train_sources.values())[s]) for s in sources])
        pictures = torch.from_numpy(cache["pictures"][indices]).permute(0, 3, 1, 2).float() / 255
        masks = torch.from_numpy(cache["masks"][indices].astype(np.float32))[:, None]
        running.append(training_step(net, optimizer, loss_fn, pictures, masks, rng))
        ema.update_parameters(net)
        step += 1
        if step % 50 == 0:
            log(f"step {step} {(time.perf_counter() - started) / 60:.1f} min loss {np.mean(running):.4f}")
            running = []
        if time.perf_counter() - last_checkpoint > CHECKPOINT_SECONDS:
            save_checkpoint()
            export_weights(ema.module, out / "medfm-interactive.safetensors")
            last_checkpoint = time.perf_counter()
    save_checkpoint()
    export_weights(ema.module, out / "medfm-interactive.safetensors")
    metrics = validate(ema.module, cache) if cache["is_val"].any() else {}
    summary = {"steps": step, "minutes": round((time.perf_counter() - started) / 60, 1), "batch_size": batch_size,
               "val_dice_working_size": metrics}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log(json.dumps(summary))
    return metrics
