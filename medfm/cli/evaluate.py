"""``medfm evaluate``: segmentation and classification evaluation from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import (
    AdapterOption,
    JsonOption,
    MkdirOption,
    ProgressOption,
    RayOption,
    ResultsOption,
    WorkersOption,
    check_output_folders,
    given,
    print_json,
    write_json,
)

evaluate_app = typer.Typer(no_args_is_help=True, help="Score predictions against references, with confidence intervals.")

ReportOption = Annotated[Path | None, typer.Option("--report", help="Also write a self-contained HTML report here.")]
BootOption = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")]



def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _interval(estimate: dict[str, float | None]) -> str:
    return f"{_number(estimate['value'])} [{_number(estimate['low'])}, {_number(estimate['high'])}]"


@evaluate_app.command("seg")
def seg(
    pred: Annotated[Path, typer.Option("--pred", help="Folder of predicted masks.")],
    ref: Annotated[Path, typer.Option("--ref", help="Folder of reference masks; files pair by name without suffix.")],
    tolerance_mm: Annotated[float, typer.Option("--tolerance-mm", help="Tolerance of the normalised surface distance (NSD).")] = 2.0,
    labels: Annotated[str | None, typer.Option("--labels", help="Label values of label maps, e.g. 1,2,3 (default: binary masks).")] = None,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Dice, IoU, HD95, ASSD, NSD and volume difference per case, in mm, with a summary over cases."""
    from medfm.errors import MedfmError
    from medfm.eval.evaluate_seg import evaluate_segmentation

    check_output_folders(report)

    try:
        label_values = [int(v) for v in labels.split(",")] if labels else None
    except ValueError:
        raise MedfmError(f"--labels must be integers separated by commas, got {labels!r}") from None
    evaluation = evaluate_segmentation(pred, ref, tolerance_mm=tolerance_mm, labels=label_values, n_boot=n_boot, seed=seed)
    if report is not None:
        from medfm.eval.reports.segmentation import write_segmentation_report

        write_segmentation_report(evaluation, report)
    result = evaluation.as_dict()
    for skipped in result["skipped"]:
        typer.echo(f"medfm: skipped {skipped['name']}: {skipped['reason']}", err=True)
    if as_json:
        print_json(result)
    else:
        _print_seg_table(result)
    _fail_if_skipped(result["skipped"], len(result["cases"]), "cases")


def _fail_if_skipped(skipped: list, scored: int, what: str) -> None:
    """A score over fewer inputs than were given is printed, but the command fails: a script must not take it for
    the whole set's."""
    from medfm.errors import MedfmError

    if skipped:
        raise MedfmError(f"{len(skipped)} of {len(skipped) + scored} {what} skipped (listed above); "
                         f"the scores are over the other {scored}")


def _print_seg_table(result: dict) -> None:
    metrics = list(result["summary"])
    in_pixels = result["settings"]["distance_unit"] == "pixels"
    if in_pixels:
        typer.echo("medfm: the masks have no known spacing: hd95, assd, the NSD tolerance and volumes are in pixels", err=True)
    headers = [f"{m} (px)" if in_pixels and m in ("hd95", "assd") else m for m in metrics]
    typer.echo("case".ljust(24) + "".join(h[:12].rjust(13) for h in headers))
    for case in result["cases"]:
        typer.echo(case["name"][:23].ljust(24) + "".join(_number(case[m]).rjust(13) for m in metrics))
    for metric, header, stats in zip(metrics, headers, result["summary"].values()):
        undefined = f", {stats['n_undefined']} undefined" if stats["n_undefined"] else ""
        typer.echo(f"{header}: mean {_number(stats['mean'])} [{_number(stats['low'])}, {_number(stats['high'])}], "
                   f"median {_number(stats['median'])} (n={stats['n']}{undefined})")


@evaluate_app.command("frd")
def frd(
    dir_a: Annotated[Path, typer.Argument(help="Reference image folder (its statistics standardise the features).")],
    dir_b: Annotated[Path, typer.Argument(help="Image folder compared against the reference.")],
    masks_a: Annotated[Path | None, typer.Option("--masks-a", help="Masks of A's images, paired by name (default: whole image).")] = None,
    masks_b: Annotated[Path | None, typer.Option("--masks-b", help="Masks of B's images, paired by name (default: whole image).")] = None,
    feature_classes: Annotated[str | None, typer.Option("--feature-classes", help="PyRadiomics classes, e.g. firstorder,glcm,gldm,shape2D (default: FRDv1's).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Feature extraction processes (default: one per CPU).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fréchet Radiomic Distance (FRDv1, as frd-score) of B against A, and an out-of-distribution score per B image."""
    from medfm.eval.frd import compute_frd

    classes = {"feature_classes": [c.strip() for c in feature_classes.split(",") if c.strip()]} if feature_classes else {}
    result = compute_frd(dir_a, dir_b, masks_a=masks_a, masks_b=masks_b, workers=workers, **classes).as_dict()
    for skipped in result["skipped"]:
        typer.echo(f"medfm: skipped {skipped['name']}: {skipped['reason']}", err=True)
    if as_json:
        print_json(result)
    else:
        _print_frd(result)
    _fail_if_skipped(result["skipped"], result["n_a"] + result["n_b"], "images")


def _print_frd(result: dict) -> None:
    frd_text = "-inf (identical feature distributions)" if result["frd"] is None else f"{result['frd']:.4f}"
    typer.echo(f"FRD {frd_text}: A {result['n_a']} images, B {result['n_b']} images, "
               f"{result['n_features']} features ({result['n_features_dropped']} dropped as non-finite)")
    flagged = sorted((o for o in result["ood"] if o["above_threshold"]), key=lambda o: -o["score"])
    typer.echo(f"B images out of A's distribution (score > {result['ood_threshold']:.4g}): {len(flagged)} of {result['n_b']}")
    for o in flagged[:10]:
        typer.echo(f"  {o['name']:<24} {o['score']:.4g}")


@evaluate_app.command("robustness")
def robustness(
    manifest: Annotated[Path, typer.Argument(help="CSV with an image column and a mask column (segmenter) or a label column (classifier).")],
    segmenter: Annotated[str | None, typer.Option("--segmenter", help="Registered segmenter, prompted with the reference's box.")] = None,
    probe: Annotated[Path | None, typer.Option("--probe", help="Probe file from `medfm fit-probe` (a classifier).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Local weights for the segmenter or the probe's encoder.")] = None,
    label_column: Annotated[str | None, typer.Option("--label-column", help="Manifest column with each image's class (classifier).")] = None,
    corruptions: Annotated[str | None, typer.Option("--corruptions", help="Comma-separated corruption names (default: all).")] = None,
    severities: Annotated[str, typer.Option("--severities", help="Comma-separated severities among 1-5.")] = "1,2,3,4,5",
    limit: Annotated[int | None, typer.Option("--limit", help="Use only the first N rows of the manifest.")] = None,
    seed: SeedOption = 0,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
    ray: RayOption = None,
    workers: WorkersOption = 2,
) -> None:
    """Metric against corruption severity (Dice for a segmenter, accuracy for a classifier), per corruption."""
    from medfm.errors import MedfmError
    from medfm.eval.corruptions import CORRUPTIONS
    from medfm.eval.protocols.robustness import evaluate_robustness

    check_output_folders(report)

    try:
        levels = tuple(int(v) for v in severities.split(","))
    except ValueError:
        raise MedfmError(f"--severities must be integers separated by commas, got {severities!r}") from None
    names = tuple(c.strip() for c in corruptions.split(",")) if corruptions else tuple(CORRUPTIONS)
    evaluation = evaluate_robustness(
        manifest, segmenter=segmenter, probe=probe, checkpoint=checkpoint, label_column=label_column,
        limit=limit, corruptions=names, severities=levels, seed=seed, progress=progress, ray=ray, workers=workers,
    )
    if report is not None:
        from medfm.eval.reports.robustness import write_robustness_report

        write_robustness_report(evaluation, report)
    result = evaluation.as_dict()
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['metric']} on {result['n_cases']} cases, clean {_number(result['clean']['mean'])}")
    typer.echo("corruption".ljust(16) + "".join(f"s{s}".rjust(9) for s in result["severities"]))
    for name, curve in result["corruptions"].items():
        typer.echo(name[:15].ljust(16) + "".join(_number(m).rjust(9) for m in curve["mean"]))


@evaluate_app.command("interactive")
def interactive(
    manifest: Annotated[Path, typer.Argument(help="CSV with image and mask columns (and dataset), paths relative to it.")],
    model: Annotated[str | None, typer.Option("--model", help="A registered segmenter (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights instead of the shipped ones.")] = None,
    adapter: AdapterOption = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many images per dataset.")] = None,
    max_clicks: Annotated[int, typer.Option("--max-clicks", help="Clicks in all, the first included: one positive click, "
                                            "then up to this many less one corrective clicks.")] = 10,
    progress: ProgressOption = True,
    results: ResultsOption = None,
    as_json: JsonOption = False,
    mkdir: MkdirOption = False,
) -> None:
    """Simulated interaction protocol: box only, then 1 click and corrective ones up to --max-clicks in all; Dice per
    click and NoC@80/90."""
    from medfm.eval.protocols.interactive import evaluate_interactive, format_table
    from medfm.models.registry import DEFAULT_SEGMENTER, create_segmenter

    check_output_folders(results)
    report = evaluate_interactive(create_segmenter(model or DEFAULT_SEGMENTER, checkpoint, adapter), manifest, limit, max_clicks,
                                  progress=progress)
    if results is not None:
        write_json(report, results)
    if as_json:
        print_json(report)
        return
    typer.echo(format_table(report))


@evaluate_app.command("clip")
def clip(
    manifest: Annotated[Path, typer.Argument(help="split_manifest.csv from `medfm train clip --manifest-only`.")],
    data: Annotated[Path | None, typer.Option("--data", help="Folder of the project datasets the manifest's paths are in "
                                              "(default $MEDFM_SHARED_DATA, else ../shared/data beside the repository).")] = None,
    split: Annotated[str, typer.Option("--split", help="Which split of the manifest to evaluate.")] = "test",
    model: Annotated[str | None, typer.Option("--model", help="A registered image-text encoder (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights instead of the shipped ones.")] = None,
    results: ResultsOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Held-out measures of an image-text model: zero-shot modality and body region, caption→image recall@1/10,
    and encode_planes throughput on one thread; prints JSON."""
    from medfm.models.registry import DEFAULT_ENCODER, create_encoder
    from medfm.paths import shared_data_dir
    from medfm.threads import set_threads
    from medfm.train.clip_eval import evaluate_manifest

    check_output_folders(results)
    set_threads(1)  # the card's throughput is for one thread
    report = evaluate_manifest(data or shared_data_dir(), manifest, create_encoder(model or DEFAULT_ENCODER, checkpoint), split)
    if results is not None:
        write_json(report, results)
    print_json(report)


@evaluate_app.command("cls")
def cls(
    scores: Annotated[Path, typer.Option("--scores", help="CSV: id column and one score column, or one per class.")],
    labels: Annotated[Path, typer.Option("--labels", help="CSV: id column, label column and metadata columns.")],
    groups: Annotated[str | None, typer.Option("--groups", help="Metadata columns for subgroup analysis, e.g. sex,site.")] = None,
    patient_column: Annotated[str | None, typer.Option("--patient-column", help="Resample whole patients by this column.")] = None,
    id_column: Annotated[str, typer.Option("--id-column", help="Column that joins the two files.")] = "id",
    label_column: Annotated[str, typer.Option("--label-column", help="Column of the label (0/1 or a class name).")] = "label",
    threshold: Annotated[float | None, typer.Option("--threshold", help="Operating point (default: Youden's J on these rows).")] = None,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """AUC-ROC and AUPRC with bootstrap intervals; operating point, calibration and subgroups for binary tasks."""
    from medfm.eval.evaluate_cls import evaluate_classification

    check_output_folders(report)

    evaluation = evaluate_classification(
        scores, labels, id_column=id_column, label_column=label_column,
        groups=[g.strip() for g in groups.split(",") if g.strip()] if groups else (),
        patient_column=patient_column, threshold=threshold, n_boot=n_boot, seed=seed,
    )
    if report is not None:
        from medfm.eval.reports.classification import write_classification_report

        write_classification_report(evaluation, report)
    result = evaluation.as_dict()
    for side, ids in result["unmatched"].items():
        if ids:
            shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
            typer.echo(f"medfm: unmatched ({side.replace('_', ' ')}): {len(ids)} id(s): {shown}", err=True)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['task']}: {result['n']} rows, bootstrap {result['bootstrap']['resampling']}")
    for name, estimate in result["metrics"].items():
        typer.echo(f"  {name:<22} {_interval(estimate)}")
    point = result.get("operating_point")
    if point:
        typer.echo(f"threshold {point['threshold']:.4g} ({point['chosen_by']})")
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            typer.echo(f"  {name:<22} {_interval(point[name])}")
    if "ece" in result.get("calibration", {}):
        typer.echo(f"  {'ece':<22} {_interval(result['calibration']['ece'])}")
    for column, analysis in result.get("subgroups", {}).items():
        typer.echo(f"subgroups by {column}:")
        for name, group in analysis["groups"].items():
            typer.echo(f"  {name:<14} n={group['n']:<6} auc {_interval(group['auc'])}  "
                       f"sensitivity {_interval(group['sensitivity'])}  specificity {_interval(group['specificity'])}")
        typer.echo(f"  auc gap {_interval(analysis['gaps']['auc']['difference'])}, "
                   f"equalised-odds difference {_interval(analysis['equalised_odds_difference'])}")


DataArgument = Annotated[Path, typer.Argument(help="Labelled CSV manifest (image paths relative to it), or a split manifest "
                                              "from `medfm train clip --manifest-only`.")]
LabelColumnOption = Annotated[str, typer.Option("--label-column", help="Column of each image's class.")]
SplitOption = Annotated[str | None, typer.Option("--split", help="Only the rows of this split (the manifest's `split` column).")]
GroupColumnOption = Annotated[str | None, typer.Option("--group-column", help="Column of each image's patient or case: "
                                                       "retrieval skips a query's own group, intervals resample whole groups.")]
PathColumnOption = Annotated[str, typer.Option("--path-column", help="Column of the image paths.")]
DataRootOption = Annotated[Path | None, typer.Option("--data", help="Folder a split manifest's paths are in "
                                                     "(default $MEDFM_SHARED_DATA, else ../shared/data beside the repository).")]


def _evaluation_set(data: Path, model: str | None, checkpoint: Path | None, **select):
    from medfm.models.registry import DEFAULT_ENCODER, create_encoder
    from medfm.paths import shared_data_dir
    from medfm.train.encoder_eval import embed_evaluation_set

    encoder = create_encoder(model or DEFAULT_ENCODER, checkpoint)
    root = select.pop("data_root")
    return encoder, embed_evaluation_set(data, encoder, data_root=root or shared_data_dir(), **select)


@evaluate_app.command("retrieval")
def retrieval(
    data: DataArgument,
    model: Annotated[str | None, typer.Option("--model", help="A registered encoder or an encoder folder (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights instead of the shipped ones.")] = None,
    label_column: LabelColumnOption = "label",
    caption_column: Annotated[str | None, typer.Option("--caption-column", help="Column of captions, for text→image recall.")] = None,
    group_column: GroupColumnOption = None,
    path_column: PathColumnOption = "path",
    split: SplitOption = None,
    data_root: DataRootOption = None,
    ks: Annotated[str | None, typer.Option("--ks", help="Cut-offs k, separated by commas, each at most the candidates a "
                                           "query has (default 1,5,10, those within them).")] = None,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    results: ResultsOption = None,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Image→image precision@k and mAP by class (leave-one-out), text→image recall@k on captioned rows, with CIs."""
    from medfm.errors import MedfmError
    from medfm.train.encoder_eval import evaluate_retrieval

    check_output_folders(results, report)

    try:
        cutoffs = None if ks is None else tuple(int(v) for v in ks.split(","))
    except ValueError:
        raise MedfmError(f"--ks must be integers separated by commas, got {ks!r}") from None
    if cutoffs is not None and min(cutoffs) < 1:
        raise MedfmError(f"--ks must be at least 1, got {ks!r}")
    encoder, dataset = _evaluation_set(data, model, checkpoint, label_column=label_column, caption_column=caption_column,
                                       group_column=group_column, path_column=path_column, split=split, data_root=data_root)
    result = evaluate_retrieval(dataset, encoder, ks=cutoffs, n_boot=n_boot, seed=seed)
    _write_outputs(result, results, report, "retrieval")
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['model']['name']} on {result['data']}: {result['n']} images, {result['groups']} groups")
    for name, estimate in result["image_to_image"]["overall"].items():
        typer.echo(f"  {name:<16} {_interval(estimate)}")
    for name, by_class in result["image_to_image"]["by_class"].items():
        if by_class["queries_without_relevant"] == by_class["n"]:
            typer.echo(f"  {name[:28]:<28} n={by_class['n']:<5} mAP -  (no other image of this class to find)")
        else:
            typer.echo(f"  {name[:28]:<28} n={by_class['n']:<5} mAP {_interval(by_class['mAP'])}")
    if alone := result["image_to_image"]["queries_without_relevant"]:
        typer.echo(f"  mAP leaves out {alone} image(s) with no other image of their class to find")
    if "text_to_image" in result:
        text = result["text_to_image"]
        typer.echo(f"text→image ({text['queries']} captions, {text['images']} images): "
                   + ", ".join(f"{name} {_interval(value)}" for name, value in text.items() if name.startswith("recall")))


@evaluate_app.command("zeroshot")
def zeroshot(
    data: DataArgument,
    model: Annotated[str | None, typer.Option("--model", help="A registered image-text encoder (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights instead of the shipped ones.")] = None,
    label_column: LabelColumnOption = "label",
    template: Annotated[list[str] | None, typer.Option("--template", help="Prompt with {} for the label (repeatable).")] = None,
    group_column: GroupColumnOption = None,
    path_column: PathColumnOption = "path",
    split: SplitOption = None,
    data_root: DataRootOption = None,
    n_boot: BootOption = 1000,
    seed: SeedOption = 0,
    results: ResultsOption = None,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """Zero-shot accuracy and macro one-vs-rest AUC over the label column's classes, with CIs, and per class."""
    from medfm.train.encoder_eval import evaluate_zeroshot

    check_output_folders(results, report)

    encoder, dataset = _evaluation_set(data, model, checkpoint, label_column=label_column, group_column=group_column,
                                       path_column=path_column, split=split, data_root=data_root)
    result = evaluate_zeroshot(dataset, encoder, label_column=label_column, templates=template, n_boot=n_boot, seed=seed)
    _write_outputs(result, results, report, "zeroshot")
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['model']['name']} on {result['data']}: {result['n']} images, {result['classes']} labels offered")
    typer.echo(f"  accuracy   {_interval(result['accuracy'])}\n  macro AUC  {_interval(result['macro_auc'])}")
    for name, by_class in result["by_class"].items():
        typer.echo(f"  {name[:28]:<28} n={by_class['n']:<5} recall {_interval(by_class['recall'])}  auc {_interval(by_class['auc'])}")


@evaluate_app.command("synthetic")
def synthetic(
    generator: Annotated[str, typer.Argument(help="A registered generator's name or a GEN_DIR from `medfm train generator`.")],
    data: Annotated[Path, typer.Option("--data", help="CSV manifest with a `split` column (training and held-out rows): "
                                       "path,label for cls; image,mask for seg.")],
    task: Annotated[str, typer.Option("--task", help="cls (a probe on frozen embeddings) or seg (`medfm train seg`, "
                                      "with an image–mask pair generator).")] = "cls",
    per_class: Annotated[int | None, typer.Option("--per-class", help="Synthetic images added per class: cls needs a "
                                                  "class-conditional generator; for seg an unconditional pair generator "
                                                  "counts as one class.")] = None,
    synthetic_class: Annotated[list[str] | None, typer.Option("--synthetic-class", help="cls: add synthetic images of "
                                                              "this class only (repeat for several; default every "
                                                              "class): a rare class.")] = None,
    budget_min: Annotated[float | None, typer.Option("--budget-min", help="seg: minutes of training for each of the "
                                                     "two segmenters (default 5).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="seg: stop each training after this "
                                                  "many steps even within the budget.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Encoder of the probe (default: the shipped one).")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Weights instead of the encoder's shipped ones.")] = None,
    label_column: LabelColumnOption = "label",
    path_column: PathColumnOption = "path",
    train_split: Annotated[str | None, typer.Option("--train-split", help="`split` value of the training rows.")] = None,
    heldout_split: Annotated[str | None, typer.Option("--heldout-split", help="`split` value of the held-out rows.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Sampling steps (default: the generator's own).")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="Guidance scale (default: the generator's own).")] = None,
    n_boot: Annotated[int | None, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the samples and of the bootstrap.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="FRD feature extraction processes (default: one per CPU).")] = None,
    results: ResultsOption = None,
    as_json: JsonOption = False,
    report: ReportOption = None,
    mkdir: MkdirOption = False,
) -> None:
    """A probe (cls) or segmenter (seg) trained on real images vs real + synthetic, on the held-out split
    (bootstrap CIs), with FRD, precision/recall and near-copies of the synthetic set."""
    from medfm.eval.synthetic import DOWNSTREAM_ROWS
    from medfm.models.registry import DEFAULT_ENCODER, create_encoder
    from medfm.train.synthetic_eval import evaluate_synthetic

    check_output_folders(results, report)

    encoder = create_encoder(model or DEFAULT_ENCODER, checkpoint) if model or checkpoint else None
    result = evaluate_synthetic(generator, data, encoder, task=task,
                                label_column=label_column, path_column=path_column,
                                **given(per_class=per_class, train_split=train_split, test_split=heldout_split, steps=steps,
                                        guidance=guidance, n_boot=n_boot, seed=seed, workers=workers,
                                        budget_minutes=budget_min, max_steps=max_steps, synthetic_classes=synthetic_class),
                                log=lambda line: typer.echo(line, err=True))
    if results is not None:
        write_json(result, results)
    if report is not None:
        from medfm.eval.reports.synthetic import write_synthetic_report

        write_synthetic_report(result, report)
    if as_json:
        print_json(result)
        return
    downstream, memo = result["classifier" if result["task"] == "cls" else "segmenter"], result["memorisation"]
    augmented = f" ({', '.join(result['synthetic_classes'])})" if result["task"] == "cls" else ""
    typer.echo(f"{result['generator']['name']} on {result['data']}: {result['synthetic_per_class']} synthetic images "
               f"per class{augmented}")
    for label, key in DOWNSTREAM_ROWS:
        if key in downstream:
            typer.echo(f"  {label:<37} " + "  ".join(f"{name} {_interval(value)}" for name, value in downstream[key].items()))
    typer.echo(f"FRD vs held-out {_number(result['frd']['frd'])}; precision {result['precision_recall']['precision']:.3f}, "
               f"recall {result['precision_recall']['recall']:.3f}")
    typer.echo(f"near-copies: {memo['n_near_copies']} of {len(memo['samples'])} (cosine > {memo['threshold']:.4g})")


def _write_outputs(result: dict, results: Path | None, report: Path | None, kind: str) -> None:
    if results is not None:
        write_json(result, results)
    if report is not None:
        from medfm.eval.reports.embedding import write_embedding_report

        write_embedding_report(result, kind, report)
