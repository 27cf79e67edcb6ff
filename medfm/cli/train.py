"""``medfm train``: reproduce medfm's own models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import ResultsOption, print_json, write_json
from medfm.errors import display_path

train_app = typer.Typer(no_args_is_help=True, help="Train medfm's own models.")


@train_app.command("clip")
def train_clip_command(
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: image cache, checkpoint.pt, history.jsonl, weights "
                                                           "(default runs/medfm-clip).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs over the training split (default 40).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="clip (default), convirt or siglip.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    stop_after: Annotated[int | None, typer.Option("--stop-after", min=1, help="End after this many epochs of the "
                                                   "--epochs schedule (resume later, perhaps with another schedule).")] = None,
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only write OUT/split_manifest.csv (every image's "
                                                "train/val/test split, for `medfm evaluate clip`) and stop.")] = False,
) -> None:
    """Train medfm-clip-small (image tower + projections against the frozen MiniLM); prints the weights path."""
    import torch

    from medfm.train.clip import train_clip

    if manifest_only:
        from medfm.train.clip_data import collect, write_split_manifest

        path = (out or Path("runs/medfm-clip")) / "split_manifest.csv"
        rows = write_split_manifest(collect(data or Path("../shared/data")), path)
        typer.echo(f"{display_path(path)}: {rows} images")
        return
    torch.set_num_threads(1)  # a shared CPU: one core
    given = {"data": data, "out": out, "epochs": epochs, "loss": loss, "stop_after": stop_after}
    typer.echo(display_path(train_clip(resume=resume, **{k: v for k, v in given.items() if v is not None})))

@train_app.command("interactive")
def train_interactive_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, weights and the validation manifest.")],
    minutes: Annotated[float, typer.Option("--minutes", help="Wall-time budget, counted across resumes.")] = 45.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Decoded-data cache, outside the repository.")] = Path("/tmp/medfm_interactive_cache.npz"),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
    manifest_only: Annotated[bool, typer.Option("--manifest-only", help="Only write OUT/val_manifest.csv, the held-out "
                                                "split for `medfm evaluate interactive`, and stop.")] = False,
) -> None:
    """Train medfm-interactive with simulated clicks, boxes, scribbles and correction loops; prints validation Dice."""
    import torch

    from medfm.train.interactive import DATA_ROOT, train, write_val_manifest

    if manifest_only:
        rows = write_val_manifest(data or DATA_ROOT, out / "val_manifest.csv")
        typer.echo(f"{display_path(out / 'val_manifest.csv')}: {rows} validation images")
        return
    torch.set_num_threads(1)  # a shared CPU: one core
    print_json(train(out, minutes, resume, cache, data or DATA_ROOT, batch_size=batch_size, log=typer.echo))




@train_app.command("abstention")
def train_abstention_command(
    model: Annotated[str, typer.Option("--model", help="Image-text model to calibrate.")] = "medfm-clip-small",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    keep: Annotated[float, typer.Option("--keep", min=0.5, max=1.0, help="Fraction of in-set validation cases kept.")] = 0.95,
    results: ResultsOption = None,
) -> None:
    """Calibrate the similarity thresholds under which zero-shot answers and search hits abstain; prints
    them (from the val split) with their held-out AUROC and rates (test split) as JSON."""
    import torch

    from medfm.models import create_encoder
    from medfm.train.abstention import calibrate_abstention

    torch.set_num_threads(1)  # a shared CPU: one core
    report = calibrate_abstention(data or Path("../shared/data"), create_encoder(model, checkpoint), keep)
    if results is not None:
        write_json(report, results)
    print_json(report)
