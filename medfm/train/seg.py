"""``medfm train seg``: a self-configuring automatic segmentation net trained on the user's own labels.

1. Read and check the labelled images (a manifest, a catalog query or saved annotation
   versions, :mod:`medfm.train.seg_data`; several masks of one image fused), hold out 20 %
   of the groups (subjects, or images) for validation, fingerprint the training pairs.
2. Write the plan (:mod:`medfm.train.seg_plan`; overridable) and train the registry
   architecture on random patches of 2D samples (images, video frames, slices of
   anisotropic volumes) or of whole volumes (MONAI's positive/negative crops, flips, rotations,
   intensity changes) under MONAI's Dice + cross-entropy loss, with a learning rate
   that decays polynomially over the wall-time budget.
3. Score the held-out images (Dice and HD95 per label with bootstrap intervals) and write
   MODEL_DIR: config, plan, fingerprint, safetensors weights, model card.

Everything is built in a hidden ``.MODEL_DIR.partial`` folder beside MODEL_DIR and renamed
at the end, so MODEL_DIR is either absent or complete. The checkpoint in that folder is
written to a temporary file and renamed (a SIGKILL leaves the previous one intact);
``resume=True`` continues from it with the time already spent counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.automatic.segmenter import (CARD_FILE, CONFIG_FILE, FINGERPRINT_FILE, PLAN_FILE, WEIGHTS_FILE,
                                              resize, working_size)
from medfm.train.run_folder import partial_folder, save_checkpoint, start_progress, write_json
from medfm.train.seg_data import (Case, annotation_cases, catalog_cases, data_digest, fingerprint, iterate_pairs,
                                  kind_of, read_cases, split_cases)
from medfm.train.seg_plan import architecture_config, make_plan
from medfm.train.seg_report import model_card, validate

CHECKPOINT_FILE, STATE_FILE = "checkpoint.pt", "training.json"


def collect_cases(data: str | os.PathLike | None, *, group_column: str | None = None,
                  only: Mapping[str, str] | None = None, catalog: str | None = None,
                  where: Mapping[str, str] | None = None, final_only: bool = False) -> list[Case]:
    """DATA's cases: a CSV manifest (a file), a folder of saved annotation versions (images from ``catalog``;
    only versions marked final with ``final_only``), or, with no DATA, the ``catalog``'s images with masks
    that match ``where``."""
    if data is None:
        if catalog is None and where is None:
            raise MedfmError("nothing to train on: give a manifest, a folder of saved annotations, or --catalog/--where")
        return catalog_cases(catalog, where or {})
    if where:
        raise MedfmError("--where selects catalog images; give either DATA or --where, not both")
    if Path(data).is_dir():
        return annotation_cases(data, catalog, final_only)
    if not Path(data).is_file():
        raise MedfmError(f"{display_path(data)}: not found (DATA is a CSV manifest or a folder of saved annotations)")
    return read_cases(data, group_column, only)


def train_segmenter(
    data: str | os.PathLike | None, out: str | os.PathLike, *, labels: Mapping[int, str] | None = None,
    architecture: str | None = None, budget_minutes: float = 10.0, resume: bool = False,
    plan_overrides: Mapping[str, str] | None = None, group_column: str | None = None,
    only: Mapping[str, str] | None = None, catalog: str | None = None, where: Mapping[str, str] | None = None,
    final_only: bool = False, fusion: str = "staple", max_steps: int | None = None, checkpoint_seconds: float = 60.0,
    seed: int = 0, on_step: Callable[[int, float], None] | None = None, log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Train, validate and write MODEL_DIR ``out``; returns the training summary (also in the model card).

    ``data``, ``catalog``, ``where``, ``final_only``: see :func:`collect_cases`; ``fusion``: how several masks
    of one image become one (``staple`` or ``majority``). ``max_steps`` caps the optimiser
    steps as well as the budget; ``on_step(step, loss)`` is called after each step.
    """
    from medfm.tasks.label_fusion import METHODS

    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    if fusion not in METHODS:
        raise MedfmError(f"--fuse must be one of {', '.join(METHODS)}; got {fusion!r}")
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "model folder", "training")
    cases = collect_cases(data, group_column=group_column, only=only, catalog=catalog, where=where, final_only=final_only)
    data_sha256 = data_digest(cases)
    train_cases, val_cases = split_cases(cases)
    if resume:
        state = json.loads((build / STATE_FILE).read_text())
        if state["data_sha256"] != data_sha256:
            raise MedfmError(f"{display_path(data or 'the catalog')}: the training data changed since the interrupted "
                             "training started; start a new one")
        plan, print_ = Plan.from_dict(state["plan"]), state["fingerprint"]
    else:
        fused = any(len(case.masks) > 1 for case in cases)
        log(f"fingerprinting {len(train_cases)} training images ({len(val_cases)} held out for validation)"
            + (f"; several masks per image fused by {fusion}" if fused else ""))
        print_, found = fingerprint(train_cases, labels, fusion)
        plan = make_plan(print_, found, architecture, plan_overrides, fusion if fused else None)
        # a bad held-out pair stops us now, not after the whole budget
        kind_of({*print_["kind"].split("+"), *(pair.kind for pair in iterate_pairs(val_cases, plan.labels, fusion))})
        build.mkdir(parents=True)
        write_json(build / STATE_FILE, {"data_sha256": data_sha256, "plan": plan.to_dict(), "fingerprint": print_,
                                         "budget_minutes": budget_minutes, "seed": seed})
    log(f"plan: {plan.dims}D, scale {plan.scale}, target spacing {plan.target_spacing}, patch {list(plan.patch_size)}, "
        f"batch {plan.batch_size}, {plan.normalisation}, {plan.architecture}")
    torch.manual_seed(seed)
    network = build_network(architecture_config(plan.architecture), plan.in_channels, plan.out_channels, plan.dims)
    optimiser = torch.optim.AdamW(network.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    progress = start_progress(build / CHECKPOINT_FILE, resume, network, optimiser)
    if resume:
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    samples = _training_samples(train_cases, plan)
    holding = [i for i, sample in enumerate(samples) if sample["label"].any()] or list(range(len(samples)))
    augment = _augmentation(plan, seed + progress["step"])
    loss_function = _loss()
    budget_s = budget_minutes * 60.0
    started = time.monotonic() - progress["elapsed_s"]
    last_checkpoint = time.monotonic()
    rng = np.random.default_rng(seed + progress["step"])
    network.train()
    while time.monotonic() - started < budget_s and (max_steps is None or progress["step"] < max_steps):
        fraction = (time.monotonic() - started) / budget_s
        if max_steps:
            fraction = max(fraction, progress["step"] / max_steps)
        for group in optimiser.param_groups:
            group["lr"] = plan.learning_rate * (1 - min(fraction, 0.99)) ** 0.9
        images, targets = _batch(samples, holding, plan, augment, rng)
        loss = _supervised_loss(loss_function, network(images), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        progress["step"] += 1
        progress["losses"].append(loss.item())
        progress["elapsed_s"] = time.monotonic() - started
        if on_step is not None:
            on_step(progress["step"], progress["losses"][-1])
        if time.monotonic() - last_checkpoint >= checkpoint_seconds:
            _save_checkpoint(build, network, optimiser, progress)
            last_checkpoint = time.monotonic()
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {np.mean(progress['losses'][-20:]):.3f}")
    _save_checkpoint(build, network, optimiser, progress)
    log(f"trained {progress['step']} steps in {progress['elapsed_s']:.0f} s; validating on {len(val_cases)} images")
    network.eval()
    validation = validate(network, plan, val_cases, by_group=group_column is not None or data is None
                          or Path(data).is_dir())
    summary = {
        "steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
        "resumed_at_steps": progress["resumed_at_steps"], "train_images": len(train_cases), "val_images": len(val_cases),
        "loss_first_10": float(np.mean(progress["losses"][:10])), "loss_last_10": float(np.mean(progress["losses"][-10:])),
        "validation": validation, "budget_minutes": budget_minutes, "data_sha256": data_sha256,
    }
    _write_model_dir(build, out, network, plan, print_, summary)
    return {"model_dir": display_path(out), **summary}


def _training_samples(cases: list[Case], plan: Plan) -> list[dict[str, np.ndarray]]:
    """Each training pair normalised and resampled by the plan, with label values mapped to channels 1..n:
    one sample per volume for a 3D plan, else one per plane (a 2D image, a video frame, a volume's slice)."""
    channel_of = np.zeros(max(plan.labels) + 1, dtype=np.uint8)
    for channel, value in enumerate(plan.label_values, start=1):
        channel_of[value] = channel
    samples = []
    for pair in iterate_pairs(cases, plan.labels, plan.label_fusion or "staple"):
        targets = channel_of[pair.mask].astype(np.float32)
        units = [(pair.pixels, targets)] if plan.dims == 3 else [
            (pair.pixels[..., n], targets[..., n]) for n in range(pair.pixels.shape[3])]
        for pixels, target in units:
            size = working_size(tuple(pixels.shape[1:]), pair.spacing, plan)
            image = resize(torch.from_numpy(normalise(pixels, plan))[None], size)[0]
            label = resize(torch.from_numpy(target)[None, None], size, labels=True)[0]
            samples.append({"image": image.numpy(), "label": label.numpy()})
    return samples


def _augmentation(plan: Plan, seed: int):
    """MONAI's dictionary transforms: pad to the patch, a patch centred on foreground half of the time, then the plan's augmentation."""
    from monai.transforms import (Compose, RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised, RandRotate90d,
                                  RandScaleIntensityd, RandShiftIntensityd, SpatialPadd)

    keys, chance = ["image", "label"], plan.augmentation
    transforms = [SpatialPadd(keys, plan.patch_size),
                  RandCropByPosNegLabeld(keys, "label", plan.patch_size, pos=1, neg=1, num_samples=1, allow_smaller=True)]
    if chance.get("flip"):
        transforms += [RandFlipd(keys, prob=chance["flip"], spatial_axis=axis) for axis in range(plan.dims)]
    if chance.get("rotate90") and plan.patch_size[0] == plan.patch_size[1]:
        transforms.append(RandRotate90d(keys, prob=chance["rotate90"], spatial_axes=(0, 1)))
    if chance.get("intensity_scale"):
        transforms.append(RandScaleIntensityd("image", factors=0.15, prob=chance["intensity_scale"]))
    if chance.get("intensity_shift"):
        transforms.append(RandShiftIntensityd("image", offsets=0.15, prob=chance["intensity_shift"]))
    if chance.get("noise"):
        transforms.append(RandGaussianNoised("image", prob=chance["noise"], std=0.1))
    composed = Compose(transforms)
    composed.set_random_state(seed)
    return composed


def _batch(samples: list[dict[str, np.ndarray]], holding: list[int], plan: Plan, augment,
           rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``plan.batch_size`` augmented patches; half the samples drawn from those holding foreground (a volume's
    slices and a video's frames are mostly background)."""
    chosen = [int(rng.choice(holding)) if rng.random() < 0.5 else int(rng.integers(0, len(samples)))
              for _ in range(plan.batch_size)]
    patches = [augment(samples[i])[0] for i in chosen]
    images = torch.stack([torch.as_tensor(np.asarray(p["image"]), dtype=torch.float32) for p in patches])
    targets = torch.stack([torch.as_tensor(np.asarray(p["label"]), dtype=torch.float32) for p in patches])
    return images, targets


def _loss():
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)


def _supervised_loss(loss_function, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Dice + CE on the output; with deep supervision (a stacked head axis), heads weighted 1, 1/2, 1/4, ..."""
    if output.dim() == targets.dim():
        return loss_function(output, targets)
    weights = [0.5 ** i for i in range(output.shape[1])]
    return sum(w * loss_function(output[:, i], targets) for i, w in enumerate(weights)) / sum(weights)


def _save_checkpoint(build: Path, network: torch.nn.Module, optimiser: torch.optim.Optimizer, progress: dict[str, Any]) -> None:
    save_checkpoint(build / CHECKPOINT_FILE, {"network": network.state_dict(), "optimiser": optimiser.state_dict(), "progress": progress})



def _write_model_dir(build: Path, out: Path, network: torch.nn.Module, plan: Plan, print_: dict[str, Any],
                     summary: dict[str, Any]) -> None:
    from safetensors.torch import save_model

    from medfm.models.registry import sha256_of

    save_model(network, str(build / WEIGHTS_FILE))  # handles DynUNet's aliased parameters
    config = {
        "name": out.name, "kind": "auto-segmenter", "architecture": plan.architecture,
        "network": architecture_config(plan.architecture),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_of(build / WEIGHTS_FILE)},
        "labels": {str(k): v for k, v in sorted(plan.labels.items())},
        "input": f"{'volumes' if plan.dims == 3 else '2D images, video frames or slices'} with {plan.in_channels} "
                 f"channel(s); the plan in {PLAN_FILE} says how they are prepared",
        "training": summary,
    }
    write_json(build / CONFIG_FILE, config)
    write_json(build / PLAN_FILE, plan.to_dict())
    write_json(build / FINGERPRINT_FILE, print_)
    (build / CARD_FILE).write_text(model_card(out.name, plan, print_, summary))
    (build / CHECKPOINT_FILE).unlink()
    (build / STATE_FILE).unlink()
    os.replace(build, out)
