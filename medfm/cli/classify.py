"""``medfm classify`` and ``fit-probe``: zero-shot and probe classification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import CheckpointOption, JsonOption, ModelOption, ProgressOption, print_json
from medfm.errors import display_path

classify_app = typer.Typer()


@classify_app.command()
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
    abstain: Annotated[bool, typer.Option("--abstain", help="Zero-shot: answer 'other' when the image is like none of the labels "
                                                            "(the model's calibrated similarity threshold).")] = False,
    abstain_threshold: Annotated[float | None, typer.Option("--abstain-threshold", help="Zero-shot: answer 'other' below this similarity.")] = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Label probabilities per image: zero-shot from --labels, or with a --probe."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.models.probe import load_probe
    from medfm.models.registry import DEFAULT_ENCODER, abstention_threshold
    from medfm.tasks.classify import read_labels, read_templates
    from medfm.tasks.classify import classify as classify_images

    fitted = load_probe(probe) if probe else None
    names = read_labels(labels, labels_file) if labels is not None or labels_file is not None else None
    encoder = create_encoder(model or (fitted.model["name"] if fitted else DEFAULT_ENCODER), checkpoint)
    threshold = abstain_threshold if abstain_threshold is not None else (
        abstention_threshold(encoder.info.name, encoder.info.weights_sha256, "zero_shot") if abstain else None)
    store = open_index(index) if index else None
    try:
        results = classify_images(images, encoder, labels=names, templates=read_templates(templates) if templates else None,
                                  probe=fitted, index=store, k=k, abstain_below=threshold, progress=progress)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print_json(results)
        return
    for result in results:
        ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
        similarity = f"; similarity {result['similarity']:.3f}" if "similarity" in result else ""
        typer.echo(f"{result['path']}: {result['prediction']}  (" + ", ".join(f"{c} {p:.3f}" for c, p in ranked) + f"{similarity})")
        for hit in result.get("evidence", []):
            typer.echo(f"    {hit['score']:.4f}  {hit['path']}" + (f"  label={hit['label']}" if "label" in hit else ""))


@classify_app.command("fit-probe")
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
    from medfm.train.probe import fit_probe as fit

    store = open_index(index) if index else None
    try:
        probe = fit(manifest, label_column, encoder=create_encoder(model, checkpoint) if model else None, index=store,
                    method="knn" if knn else "logistic", k=knn or 10, calibration=calibration,
                    target_sensitivity=target_sensitivity, target_specificity=target_specificity, positive=positive,
                    path_column=path_column)
    finally:
        if store is not None:
            store.close()
    probe.save(output)
    check = probe.training["cross_validation"]
    if not check.get("beats_baseline", False):
        reached = f"accuracy {check['accuracy']['value']:.3f} [{check['accuracy']['low']:.3f}, {check['accuracy']['high']:.3f}]" \
            if "accuracy" in check else check["skipped"]
        typer.echo(f"medfm: warning: the probe does not beat always answering {check['majority_baseline']['class']!r} "
                   f"(accuracy {check['majority_baseline']['accuracy']:.3f}); cross-validated {reached}", err=True)
    summary = {"probe": display_path(output), "model": probe.model, "classes": probe.classes,
               "training": probe.training, "operating_point": probe.operating_point}
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{display_path(output)}: {type(probe.head).__name__} on {probe.model['name']}, classes {', '.join(probe.classes)}")
    if "accuracy" in check:
        typer.echo(f"cross-validated ({check['folds']} folds): accuracy {check['accuracy']['value']:.3f} "
                   f"[{check['accuracy']['low']:.3f}, {check['accuracy']['high']:.3f}], AUC {check['auc']['value']:.3f} "
                   f"[{check['auc']['low']:.3f}, {check['auc']['high']:.3f}]; majority-class baseline "
                   f"{check['majority_baseline']['accuracy']:.3f}")
    point = probe.operating_point
    if point:
        typer.echo(f"operating point ({point['target']}{'' if point['value'] is None else ' ' + str(point['value'])}, "
                   f"positive {point['positive']!r}): threshold {point['threshold']:.4f}, sensitivity "
                   f"{point['sensitivity']:.3f}, specificity {point['specificity']:.3f}")
        c = point["confusion"]
        typer.echo(f"confusion on calibration: TP {c['tp']}  FN {c['fn']}  FP {c['fp']}  TN {c['tn']}")


