"""``medfm pretrain`` (self-supervised encoders) and ``medfm curate`` (choosing a subset of the data)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import JsonOption, MkdirOption, RayOption, TrainWorkersOption, check_output_folders, print_json

representation_app = typer.Typer()

DataArgument = Annotated[str | None, typer.Argument(help="A folder of images, a manifest (CSV or JSON lines with an image "
                                                    "column), or nothing with --catalog/--where.")]
CatalogOption = Annotated[str | None, typer.Option("--catalog", help="Take the images of this catalog (URL or SQLite file) "
                                                   "that match --where.")]
WhereOption = Annotated[list[str] | None, typer.Option("--where", help="With --catalog (default: the default catalog), only "
                                                       "images with KEY=VALUE (modality, body_part, dataset, text).")]


def _inputs(data: str | None, catalog: str | None, where: list[str] | None):
    from medfm.pairs import parse_pairs
    from medfm.train.pretrain_data import pretraining_inputs

    if catalog is not None or where:
        return pretraining_inputs(catalog=catalog, where=parse_pairs(where or [], "where", "modality=CT"))
    return pretraining_inputs(data)


@representation_app.command("pretrain")
def pretrain_command(
    data: DataArgument = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="ENCODER_DIR to write (config, safetensors weights, card); "
                                      "it must not exist.")] = ...,
    method: Annotated[str, typer.Option("--method", help="mae (needs vit-tiny or kan-vit-tiny), simdino or barlow.")] = ...,
    arch: Annotated[str, typer.Option("--arch", help="Backbone: cnn-small (medfm-clip-small's image tower), vit-tiny, kan-vit-tiny (KAN feed-forwards) "
                                                           "or dct-vit-tiny (attention on low DCT frequencies).")] = "cnn-small",
    budget_min: Annotated[float, typer.Option("--budget-min", help="Wall-time budget in minutes, counted across resumes.")] = 10.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted pretraining of ENCODER_DIR.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Planes per step.")] = 64,
    planes_per_image: Annotated[int, typer.Option("--planes-per-image", min=1, help="Slices or frames taken from a volume "
                                                  "or video, at most (evenly spaced).")] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the initialisation and of every batch's draws.")] = 0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after this many steps, within the budget.")] = None,
    workers: TrainWorkersOption = 1,
    ray: RayOption = None,
    catalog: CatalogOption = None,
    where: WhereOption = None,
    as_json: JsonOption = False,
) -> None:
    """Self-supervised pretraining (MAE, SimDINO or Barlow Twins) of an image encoder on unlabelled images,
    volumes' slices and videos' frames; ENCODER_DIR then works as --model everywhere."""
    from medfm.scale.ddp import follows_rank_0
    from medfm.train.pretrain import pretrain

    inputs = [] if follows_rank_0() else _inputs(data, catalog, where)  # rank 0 sends the others the planes
    summary = pretrain(inputs, out, method=method, arch=arch, budget_minutes=budget_min,
                       resume=resume, batch_size=batch_size, planes_per_image=planes_per_image, seed=seed,
                       max_steps=max_steps, workers=workers, ray=ray, command=shlex.join(["medfm", *sys.argv[1:]]),
                       log=lambda line: typer.echo(f"medfm: {line}", err=True))
    if summary is None:  # on torchrun's other ranks: rank 0 reports
        return
    if as_json:
        print_json(summary)
        return
    typer.echo(summary["encoder_dir"])


@representation_app.command("curate")
def curate_command(
    data: DataArgument = None,
    embeddings: Annotated[str, typer.Option("--embeddings", help="Where the embeddings come from: an index folder "
                                            "(`medfm index build`), or an encoder (a model name or encoder folder).")] = ...,
    fraction: Annotated[float, typer.Option("--fraction", help="Fraction of the images to keep, in (0, 1].")] = ...,
    method: Annotated[str, typer.Option("--method", help="prototypes (k-means prototypes, CheXficient-style), kcenter "
                                        "(k-center greedy) or random.")] = "prototypes",
    out: Annotated[Path, typer.Option("-o", "--out", help="The subset manifest (CSV) to write.")] = ...,
    model: Annotated[str | None, typer.Option("--model", help="With an index: embed the images it lacks with this model "
                                              "(it must be the index's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of random choice and k-means.")] = 0,
    catalog: CatalogOption = None,
    where: WhereOption = None,
    as_json: JsonOption = False,
    mkdir: MkdirOption = False,
) -> None:
    """Keep a fraction of the data chosen in embedding space (prototypes, k-center or random); writes the subset manifest."""
    from medfm.train.curate import curate, subset_size
    from medfm.train.curate_embeddings import embeddings_of

    check_output_folders(out)
    inputs = _inputs(data, catalog, where)
    subset_size(len(inputs), fraction)  # a bad fraction or a one-image data set fails before any embedding
    vectors = embeddings_of([str(Path(item.path).resolve()) for item in inputs], embeddings, model)
    summary = curate(inputs, vectors, out, fraction=fraction, method=method, seed=seed,
                     source_manifest=data if data and Path(data).is_file() else None)
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{summary['manifest']}: kept {summary['kept']} of {summary['images']} images ({method})")
