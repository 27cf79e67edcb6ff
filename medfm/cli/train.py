"""``medfm train``: reproduce medfm's own models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import (
    TRAIN_WORKERS_HELP,
    MkdirOption,
    RayOption,
    ResultsOption,
    TrainWorkersOption,
    check_output_folders,
    given,
    print_json,
    write_json,
)
from medfm.errors import display_path

train_app = typer.Typer(no_args_is_help=True, help="Train medfm's own models.")
#: ``medfm finetune`` (a top-level command).
finetune_app = typer.Typer()

DataOption = Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets "
                                                  "(default $MEDFM_SHARED_DATA, else ../shared/data beside the repository).")]


@train_app.command("clip")
def train_clip_command(
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: image cache, checkpoint.pt, history.jsonl, weights "
                                                           "(default runs/medfm-clip).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs over the training split (default: the shipped model's schedule).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="clip (default), convirt, siglip or dhn-nce (decoupled, hard negatives weighted).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    cache: Annotated[Path | None, typer.Option("--cache", help="Decoded-image cache (default OUT/cache.pt).")] = None,
    stop_after: Annotated[int | None, typer.Option("--stop-after", min=1, help="End after this many epochs of the "
                                                   "--epochs schedule (resume later, perhaps with another schedule).")] = None,
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only write OUT/split_manifest.csv (every image's "
                                                "train/val/test split, for `medfm evaluate clip`) and stop.")] = False,
    init: Annotated[Path | None, typer.Option("--init", help="ENCODER_DIR of `medfm pretrain` (a cnn-small backbone): "
                                                             "start the image tower from it.")] = None,
    captions: Annotated[str | None, typer.Option("--captions", help="Template bank: basic (default, the shipped model's) or "
                                                 "anatomy (adds body-region and view captions; needs its own --cache).")] = None,
    caption_share: Annotated[float | None, typer.Option("--caption-share", help="How often a MedPix image is paired with "
                                                        "its real caption rather than a template (default 0.5).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Peak AdamW learning rate (default 2e-3).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=2, help="Image-text pairs per step (default 128).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Initialisation, data order and augmentation (default 0).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu (default) or cuda.")] = None,
    float16: Annotated[bool, typer.Option("--float16", help="Write the final weights in float16 (half the file; "
                                          "training stays float32; with --resume of a finished run, only rewrites them).")] = False,
    workers: Annotated[int | None, typer.Option("--workers", help=TRAIN_WORKERS_HELP)] = None,
    ray: RayOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Train medfm-clip-small (image tower + projections against the frozen MiniLM); prints the weights path."""
    from medfm.paths import shared_data_dir
    from medfm.train.clip import RUN_FOLDER, train_clip

    check_output_folders(out, cache)  # the default run folder is medfm's own choice: made as needed

    if manifest_only:
        from medfm.train.clip_data import collect, write_split_manifest

        path = (out or RUN_FOLDER) / "split_manifest.csv"
        path.parent.mkdir(parents=out is None, exist_ok=True)  # the run folder, as training makes it
        rows = write_split_manifest(collect(data or shared_data_dir()), path)
        typer.echo(f"{display_path(path)}: {rows} images")
        return
    options = given(data=data, out=out, epochs=epochs, loss=loss, cache=cache, stop_after=stop_after, init=init, captions=captions,
                    caption_share=caption_share, lr=lr, batch_size=batch_size, seed=seed, device=device,
                    float16=float16 or None, workers=workers, ray=ray)
    weights = train_clip(resume=resume, **options)
    if weights is not None:  # None on torchrun's other ranks: rank 0 reports
        typer.echo(display_path(weights))


@train_app.command("interactive")
def train_interactive_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, weights and the validation manifest.")],
    minutes: Annotated[float, typer.Option("--minutes", help="Wall-time budget, counted across resumes.")] = 45.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    data: DataOption = None,
    cache: Annotated[Path, typer.Option("--cache", help="Decoded-data cache, outside the repository.")] = Path("/tmp/medfm_interactive_cache.npz"),
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step (default: the shipped model's).")] = None,
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only write OUT/val_manifest.csv, the held-out "
                                                "split for `medfm evaluate interactive`, and stop.")] = False,
    mkdir: MkdirOption = False,
) -> None:
    """Train medfm-interactive with simulated clicks, boxes, scribbles and correction loops; prints validation Dice."""
    from medfm.paths import shared_data_dir
    from medfm.train.interactive import train, write_val_manifest

    check_output_folders(out, cache)

    if manifest_only:
        out.mkdir(exist_ok=True)  # the run folder itself, as training makes it: only its parent must exist
        rows = write_val_manifest(data or shared_data_dir(), out / "val_manifest.csv")
        typer.echo(f"{display_path(out / 'val_manifest.csv')}: {rows} validation images")
        return
    print_json(train(out, minutes, resume, cache, data or shared_data_dir(), log=typer.echo, **given(batch_size=batch_size)))


@train_app.command("seg")
def train_seg_command(
    data: Annotated[Path | None, typer.Argument(help="CSV manifest with image,mask columns (paths relative to it; more "
                                                     "mask* columns or repeated rows: several masks, fused), or a folder of "
                                                     "annotation versions saved by the workbench; none: --catalog/--where.")] = None,
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")] = ...,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture (registry config: auto-unet, auto-dynunet, auto-transunet, "
                                                           "auto-backbone-cnn, auto-backbone-vit); default the plan's.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Label values and names, e.g. 1=liver,2=tumour (default: found in the masks).")] = None,
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted training of this model folder.")] = False,
    plan: Annotated[list[str] | None, typer.Option("--plan", help="Override a plan setting, NAME=VALUE (JSON value; repeatable), "
                                                                 "e.g. patch_size=[96,96] or batch_size=4.")] = None,
    group_column: Annotated[str | None, typer.Option("--group-column", help="Manifest column naming the subject: validation "
                                                                             "holds out whole subjects (default: whole images).")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Train only on rows with COLUMN=VALUE (repeatable), e.g. split=dev.")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps even within the budget.")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Catalog (URL or SQLite file) of the images: with no DATA, train on "
                                                                  "its images with masks matching --where; with a folder of annotations, "
                                                                  "where their images are (default: the default catalog).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="With no DATA, catalog images with KEY=VALUE: modality, body_part, "
                                                                  "dataset or text (repeatable).")] = None,
    fuse: Annotated[str, typer.Option("--fuse", help="How several masks of one image become one: staple or majority.")] = "staple",
    init: Annotated[Path | None, typer.Option("--init", help="ENCODER_DIR of `medfm pretrain`: start the encoder from it "
                                                             "(--arch auto-backbone-cnn for cnn-small, auto-backbone-vit for vit-tiny).")] = None,
    workers: TrainWorkersOption = 1,
    final_only: Annotated[bool, typer.Option("--final-only", help="With a folder of annotations, only versions marked final "
                                                                  "(as the workbench's Train uses), never drafts.")] = False,
    ray: RayOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Train an automatic segmentation net on your labels (nnU-Net-style plan); prints validation Dice/HD95 as JSON."""
    from medfm.pairs import parse_pairs
    from medfm.train.seg import train_segmenter
    from medfm.train.seg_data import parse_labels

    check_output_folders(out)

    filters = parse_pairs(only or [], "--only", "split=dev")
    summary = train_segmenter(data, out, labels=parse_labels(labels), architecture=arch, budget_minutes=budget_min,
                              resume=resume, plan_overrides=parse_pairs(plan or [], "--plan", "batch_size=4"), group_column=group_column,
                              only=filters, catalog=catalog, where=parse_pairs(where, "--where", "dataset=liver") if where else None,
                              final_only=final_only, fusion=fuse, init=init, max_steps=max_steps, workers=workers, ray=ray,
                              log=lambda line: typer.echo(line, err=True))
    if summary is not None:  # None on torchrun's other ranks: rank 0 reports
        print_json(summary)


@train_app.command("captioner")
def train_captioner_command(
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")],
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the datasets (default: ../shared/data).")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Decoded-image cache of `train clip --captions anatomy` (built "
                                                        "there if absent).")] = Path("runs/clip-cache-anatomy.pt"),
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training images.")] = 40,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per step.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, the order and the templates.")] = 0,
    mkdir: MkdirOption = False,
) -> None:
    """Train medfm-captioner: a small text decoder over medfm-clip-small's image embeddings (MedPix-2.0 captions,
    template captions elsewhere); prints the training summary as JSON."""
    from medfm.paths import shared_data_dir
    from medfm.train.captioner import train_captioner

    print_json(train_captioner(data or shared_data_dir(), cache, out, epochs=epochs, batch_size=batch_size, seed=seed,
                               log=lambda line: typer.echo(line, err=True)))


@train_app.command("grounding")
def train_grounding_command(
    manifest: Annotated[Path, typer.Argument(help="CSV with image, mask, text (phrases separated by '|') and split "
                                                  "(train or val) columns; a row with no mask and no text is an image "
                                                  "lacking every phrase.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")],
    encoder: Annotated[str, typer.Option("--encoder", help="The image-text encoder that embeds the words: a name or a "
                                                           "folder `train clip` wrote.")] = "medfm-clip-small",
    segmenter: Annotated[str, typer.Option("--segmenter", help="The medfm_interactive segmenter whose frozen image encoder "
                                                               "the head reads: a name or a model folder.")] = "medfm-interactive",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs (the one with the best val Dice is kept).")] = 30,
    steps_per_epoch: Annotated[int, typer.Option("--steps-per-epoch", min=1, help="Steps per epoch.")] = 100,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Items per step.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation, the draws and the augmentation.")] = 0,
    mkdir: MkdirOption = False,
) -> None:
    """Train a text grounding head (where the words are, for `segment --text`) over a promptable segmenter's frozen
    image encoder and an image-text encoder's text embeddings, from masks named by words; prints the training summary
    as JSON."""
    from medfm.train.grounding import train_grounding

    print_json(train_grounding(manifest, out, encoder_name=encoder, segmenter_name=segmenter, epochs=epochs,
                               steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
                               log=lambda line: typer.echo(line, err=True)))


@train_app.command("router")
def train_router_command(
    manifest: Annotated[Path, typer.Argument(help="CSV with image, modality, region and split (train or val) columns; "
                                                  "labels as medfm's keys (ct, mri, xray, …; head, chest, msk, …), in "
                                                  "which ask answers (a key in other letter case is refused; labels of "
                                                  "your own are kept as written); an empty cell leaves the plane out of "
                                                  "that axis.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Model folder to write (must not exist).")],
    encoder: Annotated[str, typer.Option("--encoder", help="The medfm_clip encoder whose frozen tower the router reads: a "
                                                           "name or a folder `train clip` wrote.")] = "medfm-clip-small",
    mkdir: MkdirOption = False,
) -> None:
    """Train a domain router (which modality, which body region: `ask` answers with it) over an image-text encoder's
    frozen tower; prints the training summary as JSON."""
    from medfm.train.router import train_router

    print_json(train_router(manifest, out, encoder_name=encoder, log=lambda line: typer.echo(line, err=True)))


@train_app.command("generator")
def train_generator_command(
    data: Annotated[Path, typer.Argument(help="CSV manifest (image column + a class or text column) or a folder "
                                              "(one sub-folder per class).")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Generator folder to write (must not exist).")],
    condition: Annotated[str | None, typer.Option("--condition", help="class (default), text or none.")] = None,
    column: Annotated[str | None, typer.Option("--column", help="Manifest column of the condition "
                                                                "(default: label for classes, text for texts).")] = None,
    size: Annotated[int | None, typer.Option("--size", min=8, help="Image side in pixels (default 64; the default "
                                             "networks are made for 64 and 128).")] = None,
    method: Annotated[str | None, typer.Option("--method", help="flow (rectified flow matching, default) or ddpm.")] = None,
    masks: Annotated[bool, typer.Option("--masks", help="Learn image–mask pairs from the manifest's mask column: every "
                                        "sample comes with its label map.")] = False,
    latent: Annotated[bool | None, typer.Option("--latent/--pixels", help="Generate the latents of an AutoencoderKL fitted "
                                                "first (default from 128² on), or pixels.")] = None,
    budget_min: Annotated[float | None, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across "
                                                     "resumes (default 10).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted training of this generator folder.")] = False,
    network: Annotated[str | None, typer.Option("--network", help="U-Net arguments as JSON, over the size's defaults, "
                                                'e.g. \'{"channels": [32, 64], "attention_levels": [false, true]}\'.')] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step (default 16 at 64², 8 above).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps even within the budget.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of initialisation, batches and noise (default 0).")] = None,
    mkdir: MkdirOption = False,
) -> None:
    """Train a class-, text- or un-conditional image generator (rectified flow or DDPM on MONAI's
    DiffusionModelUNet, classifier-free guidance, EMA); prints the training summary as JSON."""
    from medfm.train.generator import parse_network, train_generator

    check_output_folders(out)

    print_json(train_generator(data, out, column=column, masks=masks, latent=latent, resume=resume, network=parse_network(network),
                               log=lambda line: typer.echo(line, err=True),
                               **given(condition=condition, size=size, method=method, budget_minutes=budget_min,
                                       seed=seed, batch_size=batch_size, max_steps=max_steps)))


@train_app.command("abstention")
def train_abstention_command(
    model: Annotated[str | None, typer.Option("--model", help="Image-text model to calibrate (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    keep: Annotated[float | None, typer.Option("--keep", min=0.5, max=1.0, help="Fraction of in-set validation cases kept.")] = None,
    results: ResultsOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Calibrate the similarity thresholds under which zero-shot answers and search hits abstain; prints
    them (from the val split) with their held-out AUROC and rates (test split) as JSON."""
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.train.abstention import calibrate_abstention

    check_output_folders(results)

    report = calibrate_abstention(create_encoder(model or DEFAULT_ENCODER, checkpoint), **given(data=data, keep=keep))
    if results is not None:
        write_json(report, results)
    print_json(report)


@finetune_app.command("finetune")
def finetune_command(
    base: Annotated[str, typer.Argument(help="Model to adapt: a promptable segmenter (medfm-interactive) or an image encoder.")],
    data: Annotated[Path, typer.Option("--data", help="CSV manifest: image,mask for segmenters (or a folder of annotation versions "
                                                     "saved by the workbench); image and --label-column for encoders.")],
    out: Annotated[Path, typer.Option("-o", "--output", help="Adapter file to write (.safetensors; must not exist).")],
    method: Annotated[str, typer.Option("--method", help="lora, dd-adapter, vpt (ViT encoders) or full.")] = "lora",
    rank: Annotated[int | None, typer.Option("--rank", help="LoRA rank, DD-Adapter bottleneck channels, VPT tokens per block (default 8).")] = None,
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted fine-tuning of this adapter.")] = False,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local weights of the base model.")] = None,
    label_column: Annotated[str | None, typer.Option("--label-column", help="Encoders: the manifest column with each image's class.")] = None,
    group_column: Annotated[str | None, typer.Option("--group-column", help="Manifest column naming the subject: validation holds "
                                                                             "out whole subjects (default: whole images).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Images per step (default 16).")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate", help="AdamW peak rate (default: the method's).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps even within the budget.")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="With a folder of annotations: the catalog (URL or SQLite file) "
                                                                  "where their images are (default: the default catalog).")] = None,
    final_only: Annotated[bool, typer.Option("--final-only", help="With a folder of annotations, only versions marked final "
                                                                  "in the workbench.")] = False,
    workers: TrainWorkersOption = 1,
    ray: RayOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Adapt a model to your labels (LoRA, DD-Adapter, VPT or full fine-tuning); writes a small adapter file, prints the summary as JSON."""
    from medfm.train.finetune import finetune

    check_output_folders(out)

    summary = finetune(base, data, out, method=method, budget_minutes=budget_min, resume=resume, checkpoint=checkpoint,
                       label_column=label_column, group_column=group_column, max_steps=max_steps, catalog=catalog,
                       final_only=final_only, workers=workers, ray=ray, log=lambda line: typer.echo(line, err=True),
                       **given(rank=rank, batch_size=batch_size, learning_rate=learning_rate))
    if summary is not None:  # None on torchrun's other ranks: rank 0 reports
        print_json(summary)
