"""The ``medfm`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.catalog.pacs_cli import pacs_app
from medfm.errors import MedfmError, display_path
from medfm.eval.cli import evaluate_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Offline medical imaging toolkit: ingest, inspect, convert and de-identify images.",
)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="Image file or DICOM series folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    show_phi: Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")] = False,
) -> None:
    """Shape, spacing, orientation, modality and value range of an image."""
    from medfm.io.info import describe_path

    summaries = describe_path(path, show_phi)
    if as_json:
        print_json(summaries[0] if len(summaries) == 1 else summaries)
        return
    for summary in summaries:
        typer.echo(_format_summary(summary))


def _format_summary(summary: dict[str, Any]) -> str:
    fields = {key: summary[key] for key in ("modality", "shape", "dtype", "num_slices", "num_frames", "num_channels", "spacing_mm", "origin_mm", "orientation", "value_range")}
    fields["affine"] = summary["coordinate_system"]
    if "not_decoded" in summary:
        fields["not_decoded"] = summary["not_decoded"]
    extra = {**summary["metadata"], **{key: f"{value}  [PHI]" for key, value in summary.get("phi", {}).items()}}
    width = max(map(len, [*fields, *extra]))
    lines = [f"{summary['path']} ({summary['format']})"]
    for key, value in fields.items():
        lines.append(f"  {key:<{width}}  {value}")
    lines.extend(f"    {row}" for row in summary["affine"])
    lines.extend(f"  {key:<{width}}  {value}" for key, value in extra.items())
    return "\n".join(lines)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="Image file or DICOM folder.")],
    destination: Annotated[Path, typer.Argument(help="Output file (format from its suffix) or folder.")],
) -> None:
    """Convert between formats; a folder of several DICOM series gives one file per series."""
    from medfm.io.convert import convert as convert_images

    for written in convert_images(source, destination):
        typer.echo(display_path(written))


CatalogOption = Annotated[
    str | None,
    typer.Option("--catalog", help="Catalog URL (sqlite:///FILE, postgresql://USER@HOST/DB) or SQLite file; "
                 "default $MEDFM_CATALOG, else catalog.db in the medfm data folder."),
]
ShowPhiOption = Annotated[bool, typer.Option("--show-phi", help="Also print patient identifiers.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).")],
    catalog: CatalogOption = None,
    dataset: Annotated[str | None, typer.Option(help="Name of the collection the new images belong to.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Record every image under PATHS in the catalog; exit code 1 if any file was bad."""
    from medfm.catalog import ingest as ingest_paths

    report = ingest_paths(paths, catalog, dataset=dataset, progress=progress)
    typer.echo(f"{report.catalog}: {report.added} images added, {report.updated} updated; "
               f"files: {report.unchanged} unchanged, {report.skipped} skipped (not images), {len(report.bad)} bad")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


catalog_app = typer.Typer(no_args_is_help=True, help="Find the images that were ingested.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(pacs_app, name="pacs")


def _print_records(records: list[Any], as_json: bool, show_phi: bool) -> None:
    if as_json:
        print_json([record.to_dict(show_phi) for record in records])
        return
    for record in records:
        shape = "x".join(str(n) for n in record.shape)
        typer.echo(f"{record.id:>6}  {record.modality:<4} {record.body_part or '-':<12} {shape:<16} "
                   f"{record.dataset or '-':<12} {record.description or '-'}  {record.source_path}")
        for key, value in (record.phi.items() if show_phi else ()):
            typer.echo(f"        {key}: {value}  [PHI]")


@catalog_app.command("list")
def catalog_list(
    catalog: CatalogOption = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Every catalogued image, oldest first: id, modality, body part, shape, dataset, description, path."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        _print_records(store.query(dataset=dataset, limit=limit), as_json, show_phi)


@catalog_app.command("query")
def catalog_query(
    catalog: CatalogOption = None,
    modality: Annotated[str | None, typer.Option(help="Modality, e.g. CT, MR, OT (any case).")] = None,
    body_part: Annotated[str | None, typer.Option(help="Body part examined, e.g. HEAD (any case).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
    text: Annotated[str | None, typer.Option(help="Text anywhere in the description, path or dataset name.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many images.")] = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """Images matching every filter given."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        records = store.query(modality=modality, body_part=body_part, dataset=dataset, text=text, limit=limit)
        _print_records(records, as_json, show_phi)


@catalog_app.command("show")
def catalog_show(
    image_id: Annotated[int, typer.Argument(metavar="ID", help="Image id from `medfm catalog list`.")],
    catalog: CatalogOption = None,
    as_json: JsonOption = False,
    show_phi: ShowPhiOption = False,
) -> None:
    """One image: its metadata and files."""
    from medfm.catalog import open_catalog

    with open_catalog(catalog) as store:
        record = store.get(image_id).to_dict(show_phi)
    if as_json:
        print_json(record)
        return
    for key, value in record.items():
        if key not in ("files", "metadata", "phi"):
            typer.echo(f"{key:<13} {'-' if value is None else value}")
    for key, value in record["metadata"].items():
        typer.echo(f"  {key:<13} {value}")
    for key, value in record.get("phi", {}).items():
        typer.echo(f"  {key:<13} {value}  [PHI]")
    for file in record["files"]:
        typer.echo(f"  file  {file['sha256'][:16]}  {file['size']:>12}  {file['path']}")


@app.command()
def deid(
    source: Annotated[Path, typer.Argument(help="DICOM file, or folder searched recursively.")],
    destination: Annotated[Path, typer.Argument(help="Output file, or folder mirroring the input's layout.")],
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report of every change (no original values).")] = None,
    uid_secret: Annotated[str | None, typer.Option("--uid-secret", envvar="MEDFM_UID_SECRET", help="Secret that makes new UIDs and pseudonyms the same across runs (default: random per run).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """De-identify DICOM by the PS3.15 Basic Profile; UIDs are remapped consistently across files."""
    from medfm.io.deid import deidentify

    result = deidentify(source, destination, uid_secret=uid_secret.encode() if uid_secret else None, report=report)
    for item in result.burned_in:
        typer.echo(f"medfm: warning: {item.path}: pixels may show burned-in text and are not cleaned ({item.burned_in})", err=True)
    for problem in result.failed:
        typer.echo(f"medfm: failed: {problem.path}: {problem.reason}", err=True)
    if as_json:
        print_json(result.summary())
    else:
        typer.echo(f"{display_path(destination)}: {len(result.files)} de-identified, {len(result.skipped)} skipped, {len(result.failed)} failed")
    if result.failed:
        raise MedfmError(f"{len(result.failed)} file(s) could not be de-identified")


@app.command()
def demo(catalog: CatalogOption = None) -> None:
    """Build a small example collection (shipped test files, synthetic phantoms) and catalogue it."""
    from medfm.demo import format_table, run

    result = run(catalog)
    report = result.report
    typer.echo(f"Examples in {display_path(result.folder)}")
    if report.added or report.updated:
        typer.echo(f"{report.catalog}: {report.added} images added, {report.updated} updated")
    else:
        typer.echo(f"{report.catalog}: already catalogued, nothing added")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    for line in format_table(result.records):
        typer.echo(line)


index_app = typer.Typer(no_args_is_help=True, help="Vector indexes of image embeddings for similar-case search.")
app.add_typer(index_app, name="index")

ModelOption = Annotated[str | None, typer.Option("--model", help="Model name (see the model registry).")]
CheckpointOption = Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the model.")]
IndexOption = Annotated[str, typer.Option("--index", help="Index folder, or chroma://HOST:PORT/COLLECTION.")]


def _where(pairs: list[str]) -> dict[str, str]:
    where = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise MedfmError(f"--where takes KEY=VALUE (e.g. modality=CT); got {pair!r}")
        where[key.strip()] = value.strip()
    return where


@index_app.command("build")
def index_build(
    model: Annotated[str, typer.Option("--model", help="Model name (see the model registry).")],
    index: IndexOption,
    sources: Annotated[list[str] | None, typer.Argument(metavar="CATALOG_OR_PATHS...", help="A catalog (URL or .db file), or image files / DICOM series folders.")] = None,
    checkpoint: CheckpointOption = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Index every image of this catalog.")] = None,
    batch_size: Annotated[int, typer.Option(help="Planes per encoder batch.")] = 32,
    dtype: Annotated[str | None, typer.Option("--dtype", help="How a new local index stores vectors: f32, f16 (half the memory) or i8.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
) -> None:
    """Embed images into an index; resumable: images already indexed are skipped."""
    from medfm.models import create_encoder
    from medfm.tasks.search import build_index

    report = build_index(sources or [], create_encoder(model, checkpoint), index, catalog=catalog,
                         batch_size=batch_size, progress=progress, **({"dtype": dtype} if dtype else {}))
    typer.echo(f"{report.index}: {report.added} added, {report.skipped} already indexed, {len(report.bad)} bad")
    for path, reason in report.bad:
        typer.echo(f"medfm: bad file: {path}: {reason}", err=True)
    if report.bad:
        raise typer.Exit(1)


@app.command()
def search(
    index: IndexOption,
    image: Annotated[Path | None, typer.Option("--image", help="Query image.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="Query text (image-text models).")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    where: Annotated[list[str] | None, typer.Option("--where", help="Only items with KEY=VALUE (repeatable).")] = None,
    exact: Annotated[bool, typer.Option("--exact", help="Exhaustive search instead of the approximate graph.")] = False,
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """The indexed images most similar to an image or a text, best first."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.tasks.search import search as search_index

    with open_index(index) as store:
        encoder = create_encoder(model or store.model["name"], checkpoint)
        hits = search_index(store, encoder, image=image, text=text, k=k, where=_where(where or []), exact=exact)
    if as_json:
        print_json([hit.to_dict() for hit in hits])
        return
    for rank, hit in enumerate(hits, start=1):
        extra = " ".join(f"{key}={value}" for key, value in hit.metadata.items() if key != "path")
        typer.echo(f"{rank:>3}  {hit.score:.4f}  {hit.path}  {extra}")


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Images to classify.")],
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated labels for zero-shot classification.")] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="Labels, one per line.")] = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="Prompt templates, one per line, {} for the label.")] = None,
    probe: Annotated[Path | None, typer.Option("--probe", help="Probe file from `medfm fit-probe`.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the probe's, else the default image-text model).")] = None,
    checkpoint: CheckpointOption = None,
    index: Annotated[str | None, typer.Option("--index", help="Also return the nearest indexed cases as evidence.")] = None,
    k: Annotated[int, typer.Option("-k", help="Evidence cases per image.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Label probabilities per image: zero-shot from --labels, or with a --probe."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.tasks.classify import DEFAULT_MODEL, read_labels, read_templates
    from medfm.tasks.classify import classify as classify_images
    from medfm.tasks.probe import load_probe

    fitted = load_probe(probe) if probe else None
    names = read_labels(labels, labels_file) if labels is not None or labels_file is not None else None
    encoder = create_encoder(model or (fitted.model["name"] if fitted else DEFAULT_MODEL), checkpoint)
    store = open_index(index) if index else None
    try:
        results = classify_images(images, encoder, labels=names, templates=read_templates(templates) if templates else None,
                                  probe=fitted, index=store, k=k)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print_json(results)
        return
    for result in results:
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        typer.echo(f"{result['path']}: {result['prediction']}  (" + ", ".join(f"{c} {p:.3f}" for c, p in ranked) + ")")
        for hit in result.get("evidence", []):
            typer.echo(f"    {hit['score']:.4f}  {hit['path']}" + (f"  label={hit['label']}" if "label" in hit else ""))


@app.command("fit-probe")
def fit_probe(
    manifest: Annotated[Path, typer.Argument(help="CSV with a path column and a label column.")],
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the labels.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Probe file to write (JSON).")],
    index: Annotated[str | None, typer.Option("--index", help="Take embeddings from this index.")] = None,
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    knn: Annotated[int | None, typer.Option("--knn", help="A k-nearest-neighbour head with this k instead of logistic regression.")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Labelled CSV on which to choose the operating point.")] = None,
    target_sensitivity: Annotated[float | None, typer.Option("--target-sensitivity")] = None,
    target_specificity: Annotated[float | None, typer.Option("--target-specificity")] = None,
    positive: Annotated[str | None, typer.Option("--positive", help="Positive class (default: the second label in sorted order).")] = None,
    path_column: Annotated[str, typer.Option("--path-column")] = "path",
    as_json: JsonOption = False,
) -> None:
    """Fit a linear probe (or kNN) on frozen embeddings; with --calibration, choose its operating point
    (--target-sensitivity, --target-specificity, else Youden's J)."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.tasks.classify import fit_probe as fit

    if index is None and model is None:
        raise MedfmError("give --index or --model to take embeddings from")
    if target_sensitivity is not None and target_specificity is not None:
        raise MedfmError("give --target-sensitivity or --target-specificity, not both")
    if (target_sensitivity is not None or target_specificity is not None) and calibration is None:
        raise MedfmError("an operating point is chosen on a --calibration manifest; give one")
    target, value = (("sensitivity", target_sensitivity) if target_sensitivity is not None else
                     ("specificity", target_specificity) if target_specificity is not None else ("youden", None))
    store = open_index(index) if index else None
    try:
        probe = fit(manifest, label_column, encoder=create_encoder(model, checkpoint) if model else None, index=store,
                    method="knn" if knn else "logistic", k=knn or 10, calibration=calibration, target=target,
                    value=value, positive=positive, path_column=path_column)
    finally:
        if store is not None:
            store.close()
    probe.save(output)
    summary = {"probe": display_path(output), "model": probe.model, "classes": probe.classes,
               "training": probe.training, "operating_point": probe.operating_point}
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{display_path(output)}: {type(probe.head).__name__} on {probe.model['name']}, classes {', '.join(probe.classes)}")
    point = probe.operating_point
    if point:
        typer.echo(f"operating point ({point['target']}{'' if point['value'] is None else ' ' + str(point['value'])}, "
                   f"positive {point['positive']!r}): threshold {point['threshold']:.4f}, sensitivity "
                   f"{point['sensitivity']:.3f}, specificity {point['specificity']:.3f}")
        c = point["confusion"]
        typer.echo(f"confusion on calibration: TP {c['tp']}  FN {c['fn']}  FP {c['fp']}  TN {c['tn']}")


@app.command("segment")
def segment_command(
    image: Annotated[Path, typer.Argument(help="Image file or DICOM series folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Label map to write: .png, .nii.gz, or .dcm (DICOM SEG, DICOM input).")],
    point: Annotated[list[str] | None, typer.Option("--point", help="x,y[,z][:pos|neg] in pixels (repeatable); z: slice, or frame of a video.")] = None,
    box: Annotated[list[str] | None, typer.Option("--box", help="x0,y0,x1,y1[,z] in pixels (repeatable).")] = None,
    scribble: Annotated[Path | None, typer.Option("--scribble", help="Mask file on the image's grid; nonzero pixels are a positive scribble.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="JSON list of prompts (several labels, negative scribbles).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Segmenter name, or a .json config (default medfm-interactive).")] = None,
    checkpoint: CheckpointOption = None,
    propagate: Annotated[bool, typer.Option("--propagate", help="Carry each structure through the volume or video.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Interactive segmentation from points, boxes and scribbles; writes a label map stamped with its provenance."""
    from medfm.models.registry import create_segmenter
    from medfm.tasks.segment import DEFAULT_MODEL
    from medfm.tasks.segment_file import segment_file

    summary = segment_file(image, output, create_segmenter(model or DEFAULT_MODEL, checkpoint), points=point or [],
                           boxes=box or [], scribble=scribble, prompts_file=prompts, propagate_prompts=propagate)
    if as_json:
        print_json(summary)
        return
    for structure in summary["structures"]:
        size = (f"{structure['volume_mm3']:.1f} mm3" if structure.get("volume_mm3") is not None else
                f"{structure['area_mm2']:.1f} mm2" if structure.get("area_mm2") is not None else "")
        name = f" ({structure['label_name']})" if structure["label_name"] else ""
        typer.echo(f"{summary['output']}: label {structure['label']}{name}: {structure['voxels']} voxels {size}, "
                   f"{structure['planes']} planes, score {structure['score']:.3f}")


train_app = typer.Typer(no_args_is_help=True, help="Train medfm's own models.")
app.add_typer(train_app, name="train")


@train_app.command("clip")
def train_clip_command(
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run folder: image cache, checkpoint.pt, history.jsonl, weights "
                                                           "(default runs/medfm-clip).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs over the training split (default 40).")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="clip (default), convirt or siglip.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
) -> None:
    """Train medfm-clip-small (image tower + projections against the frozen MiniLM); prints the weights path."""
    import torch

    from medfm.tasks.train_clip import train_clip

    torch.set_num_threads(1)  # a shared CPU: one core
    given = {"data": data, "out": out, "epochs": epochs, "loss": loss}
    typer.echo(display_path(train_clip(resume=resume, **{k: v for k, v in given.items() if v is not None})))

@train_app.command("interactive")
def train_interactive_command(
    out: Annotated[Path, typer.Option("--out", help="Run folder: checkpoint, weights and the validation manifest.")],
    minutes: Annotated[float, typer.Option("--minutes", help="Wall-time budget, counted across resumes.")] = 45.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets (default ../shared/data).")] = None,
    cache: Annotated[Path, typer.Option("--cache", help="Decoded-data cache, outside the repository.")] = Path("/tmp/medfm_interactive_cache.npz"),
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
) -> None:
    """Train medfm-interactive with simulated clicks, boxes, scribbles and correction loops; prints validation Dice."""
    import torch

    from medfm.tasks.train_interactive import DATA_ROOT, train

    torch.set_num_threads(1)  # a shared CPU: one core
    print_json(train(out, minutes, resume, cache, data or DATA_ROOT, batch_size=batch_size, log=typer.echo))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; anything but loopback requires a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    catalog: CatalogOption = None,
    token: Annotated[str | None, typer.Option(help="Access token (default $MEDFM_TOKEN; generated when the host is not loopback).")] = None,
    pacs: Annotated[str | None, typer.Option("--pacs", help="DICOMweb base URL of a PACS to search, pull from and push to.")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Catalogue the example studies first and index them in the background.")] = False,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="Largest request body accepted, in MiB.")] = 512,
) -> None:
    """Serve the REST API (docs/server-api.md) and the browser workbench; prints the URL to open."""
    from medfm.paths import default_catalog_url
    from medfm.server.serve import resolve_token, serve as run_server
    from medfm.server.settings import ServerSettings

    if not 1 <= port <= 65535:
        raise MedfmError(f"--port must be from 1 to 65535; got {port}")
    if max_upload_mb < 1:
        raise MedfmError(f"--max-upload-mb must be at least 1; got {max_upload_mb}")
    settings = ServerSettings(host=host, port=port, catalog_url=catalog or default_catalog_url(), pacs_url=pacs,
                              max_upload_bytes=max_upload_mb * 1024 * 1024)
    settings.token = resolve_token(settings, token)
    run_server(settings, demo, announce=typer.echo)


def main() -> None:
    """Entry point: user errors print one line and exit 2, never a traceback."""
    try:
        app()
    except MedfmError as exc:
        typer.echo(f"medfm: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("medfm: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("MEDFM_DEBUG"):
            raise
        typer.echo(f"medfm: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   "(set MEDFM_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
