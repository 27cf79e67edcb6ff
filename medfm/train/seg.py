"""``medfm train seg``: a self-configuring automatic segmentation net trained on the user's own labels.

1. Read and check the labelled images (a manifest, a catalog query or saved annotation
   versions, :mod:`medfm.train.seg_data`; several masks of one image fused), hold out 20 %
   of the groups (subjects, or images) for validation, fingerprint the training pairs.
2. Write the plan (:mod:`medfm.train.seg_plan`; overridable) and train the registry
   architecture (its encoder first copied from a ``medfm pretrain`` encoder folder when
   given one, :mod:`medfm.models.encoders.transfer`) on random patches of 2D samples (images, video frames, slices of
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
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm.errors import MedfmError, display_path
from medfm.models.automatic.network import build_network
from medfm.models.automatic.plan import Plan, normalise
from medfm.models.automatic.segmenter import (
    CARD_FILE,
    CONFIG_FILE,
    FINGERPRINT_FILE,
    PLAN_FILE,
    WEIGHTS_FILE,
    resize,
    working_size,
)
from medfm.models.encoders.transfer import (
    PretrainedTrunk,
    load_pretrained_trunk,
    read_pretrained_trunk,
)
from medfm.scale.ddp import Group
from medfm.train.run_folder import (
    partial_folder,
    save_checkpoint,
    start_progress,
    write_json,
)
from medfm.train.seg_data import (
    Case,
    annotation_cases,
    catalog_cases,
    data_digest,
    fingerprint,
    iterate_pairs,
    kind_of,
    read_cases,
    split_cases,
)
from medfm.train.seg_plan import DEFAULT_ARCHITECTURE, architecture_config, make_plan
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
    final_only: bool = False, fusion: str = "staple", init: str | os.PathLike | None = None, max_steps: int | None = None,
    checkpoint_seconds: float = 60.0, workers: int = 1, seed: int = 0, on_step: Callable[[int, float], None] | None = None,
    log: Callable[[str], None] = lambda _: None, ray: str | None = None,
) -> dict[str, Any] | None:
    """Train, validate and write MODEL_DIR ``out``; returns the training summary (also in the model card).

    ``data``, ``catalog``, ``where``, ``final_only``: see :func:`collect_cases`; ``fusion``: how several masks
    of one image become one (``staple`` or ``majority``); ``init``: an encoder folder of ``medfm pretrain``
    whose backbone starts the network's encoder (the architecture must be built on it). ``max_steps`` caps the optimiser
    steps as well as the budget; ``on_step(step, loss)`` is called after each step.
    ``workers`` processes on this machine share each step's batch (:mod:`medfm.scale.ddp`); started
    by torchrun instead, every rank but 0 only trains, and returns ``None``. With ``ray`` (a Ray cluster's
    address, or ``local``), ``workers`` Ray Train workers do (:mod:`medfm.scale.ray_train`), where
    ``on_step`` and ``log`` then run.
    """
    from medfm.scale.ddp import check_workers, launcher_group, local_group
    from medfm.tasks.label_fusion import METHODS

    check_workers(workers)
    launched = launcher_group(workers, ray)
    if launched is not None and not launched.main:
        _train(launched)
        return None
    if not budget_minutes > 0:
        raise MedfmError(f"--budget-min must be above 0 minutes; got {budget_minutes}")
    if fusion not in METHODS:
        raise MedfmError(f"--fuse must be one of {', '.join(METHODS)}; got {fusion!r}")
    if ray is not None:
        from medfm.scale.ray_train import absolute, absolute_catalog, train_on_ray

        return train_on_ray(ray, workers, partial(
            train_segmenter, absolute(data), absolute(out), labels=labels, architecture=architecture,
            budget_minutes=budget_minutes, resume=resume, plan_overrides=plan_overrides, group_column=group_column,
            only=only, catalog=absolute_catalog(catalog), where=where,
            final_only=final_only, fusion=fusion, init=absolute(init), max_steps=max_steps,
            checkpoint_seconds=checkpoint_seconds, seed=seed, on_step=on_step, log=log))
    out = Path(out)
    build = partial_folder(out, resume, CHECKPOINT_FILE, "model folder", "training")
    pretrained = _pretrained(init, architecture or DEFAULT_ARCHITECTURE) if init is not None and not resume else None
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
        if pretrained is not None and plan.architecture != (architecture or DEFAULT_ARCHITECTURE):
            pretrained = _pretrained(init, plan.architecture)
    check_workers(launched.world if launched else workers, plan.batch_size, len(train_cases))
    if not resume:
        build.mkdir(parents=True)
        write_json(build / STATE_FILE, {"data_sha256": data_sha256, "plan": plan.to_dict(), "fingerprint": print_,
                                         "budget_minutes": budget_minutes, "seed": seed,
                                         "initialised_from": pretrained.provenance() if pretrained else None})
    log(f"plan: {plan.dims}D, scale {plan.scale}, target spacing {plan.target_spacing}, patch {list(plan.patch_size)}, "
        f"batch {plan.batch_size}, {plan.normalisation}, {plan.architecture}")
    setup = {"plan": plan.to_dict(), "cases": train_cases, "seed": seed, "budget_s": budget_minutes * 60.0,
             "max_steps": max_steps, "resume": resume, "build": build, "checkpoint_seconds": checkpoint_seconds}
    with nullcontext(launched) if launched else local_group(workers, _train) as group:
        if group.world > 1:
            log(f"training in {group.world} processes, {plan.batch_size // group.world} patches each per step")
        network, progress = _train(group, setup, on_step, log, pretrained)
    log(f"trained {progress['step']} steps in {progress['elapsed_s']:.0f} s; validating on {len(val_cases)} images")
    network.eval()
    validation = validate(network, plan, val_cases, by_group=group_column is not None or data is None
                          or Path(data).is_dir())
    summary = {
        "steps": progress["step"], "training_seconds": round(progress["elapsed_s"], 1),
        "resumed_at_steps": progress["resumed_at_steps"], "train_images": len(train_cases), "val_images": len(val_cases),
        "loss_first_10": float(np.mean(progress["losses"][:10])), "loss_last_10": float(np.mean(progress["losses"][-10:])),
        "validation": validation, "budget_minutes": budget_minutes, "data_sha256": data_sha256,
        "initialised_from": json.loads((build / STATE_FILE).read_text()).get("initialised_from"),
        "processes": group.world,
    }
    _write_model_dir(build, out, network, plan, print_, summary)
    return {"model_dir": display_path(out), **summary}


def _pretrained(init: str | os.PathLike, architecture: str) -> PretrainedTrunk:
    return read_pretrained_trunk(init, architecture_config(architecture).get("backbone"), f"architecture {architecture}")


def _train(group: Group, setup: dict[str, Any] | None = None, on_step: Callable[[int, float], None] | None = None,
           log: Callable[[str], None] = lambda _: None,
           pretrained: PretrainedTrunk | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The training loop, on every rank of ``group`` (rank 0 passes the ``setup`` and the ``pretrained``
    encoder, which DDP copies to the other ranks, and alone writes checkpoints): returns the trained
    network and the progress (step, elapsed seconds, losses)."""
    setup = group.broadcast(setup)
    plan, seed, build = Plan.from_dict(setup["plan"]), setup["seed"], setup["build"]
    torch.manual_seed(seed)
    network = build_network(architecture_config(plan.architecture), plan.in_channels, plan.out_channels, plan.dims)
    if pretrained is not None:
        load_pretrained_trunk(network.trunk, pretrained, f"architecture {plan.architecture}")
        log(f"encoder initialised from {display_path(pretrained.folder)} ({pretrained.arch})")
    optimiser = torch.optim.AdamW(network.parameters(), lr=plan.learning_rate, weight_decay=1e-4)
    progress = start_progress(build / CHECKPOINT_FILE, setup["resume"], network, optimiser) if group.main else None
    if setup["resume"] and group.world > 1:  # the others start from rank 0's checkpoint, wherever they run
        state = group.broadcast({"network": network.state_dict(), "optimiser": optimiser.state_dict()} if group.main else None)
        network.load_state_dict(state["network"])
        optimiser.load_state_dict(state["optimiser"])
    progress = group.broadcast(progress)
    if setup["resume"]:
        log(f"resumed at step {progress['step']} after {progress['elapsed_s']:.0f} s")
    samples = _training_samples(setup["cases"], plan)
    holding = [i for i, sample in enumerate(samples) if sample["label"].any()] or list(range(len(samples)))
    augment = _augmentation(plan)
    loss_function = _loss()
    model = group.wrap(network)
    budget_s, max_steps = setup["budget_s"], setup["max_steps"]
    started = time.monotonic() - progress["elapsed_s"]
    last_checkpoint = time.monotonic()
    rng = np.random.default_rng(seed + progress["step"])
    model.train()
    while True:
        elapsed = time.monotonic() - started
        fraction = max(elapsed / budget_s, progress["step"] / max_steps if max_steps else 0.0)
        going = elapsed < budget_s and (max_steps is None or progress["step"] < max_steps)
        going, fraction = group.broadcast((going, fraction))  # rank 0's clock rules every rank
        if not going:
            break
        for parameters in optimiser.param_groups:
            parameters["lr"] = plan.learning_rate * (1 - min(fraction, 0.99)) ** 0.9
        images, targets = _batch(samples, holding, plan.batch_size, augment, rng, seed, progress["step"], group)
        loss = _supervised_loss(loss_function, model(images), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        progress["step"] += 1
        progress["losses"].append(group.mean(loss.item()))
        progress["elapsed_s"] = time.monotonic() - started
        if on_step is not None:
            on_step(progress["step"], progress["losses"][-1])
        if group.main and time.monotonic() - last_checkpoint >= setup["checkpoint_seconds"]:
            _save_checkpoint(build, network, optimiser, progress)
            last_checkpoint = time.monotonic()
            log(f"step {progress['step']}, {progress['elapsed_s']:.0f} s, loss {np.mean(progress['losses'][-20:]):.3f}")
    if group.main:
        _save_checkpoint(build, network, optimiser, progress)
    return network, progress


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


def _augmentation(plan: Plan):
    """MONAI's dictionary transforms: pad to the patch, a patch centred on foreground half of the time, then the plan's
    augmentation; seeded per sample by :func:`_batch`."""
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

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
    return Compose(transforms)


def _batch(samples: list[dict[str, np.ndarray]], holding: list[int], batch_size: int, augment, rng: np.random.Generator,
           seed: int, step: int, group: Group) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the step's ``batch_size`` augmented patches; half the samples drawn from those holding
    foreground (a volume's slices and a video's frames are mostly background). Every rank draws the same global
    batch, and each patch's augmentation is seeded by (seed, step, place in the batch), so the patches do not
    depend on how many processes share them."""
    chosen = [int(rng.choice(holding)) if rng.random() < 0.5 else int(rng.integers(0, len(samples)))
              for _ in range(batch_size)]
    patches = []
    for place, index in group.share(list(enumerate(chosen))):
        augment.set_random_state(seed=int(np.random.SeedSequence([seed, step, place]).generate_state(1)[0]))
        with warnings.catch_warnings():
            # a background slice drawn on purpose has no foreground to centre on: MONAI says so on every such draw
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            patches.append(augment(samples[index])[0])
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
