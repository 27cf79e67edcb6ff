"""``medfm classify`` and ``fit-probe``: zero-shot and probe classification."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medfm.cli.output import (
    AdapterOption,
    CheckpointOption,
    JsonOption,
    MkdirOption,
    ProgressOption,
    RayOption,
    SummaryOption,
    WorkersOption,
    check_summary_folder,
    finish_batch,
    print_json,
)
from medfm.errors import MedfmError, display_path

classify_app = typer.Typer()


@classify_app.command()
def classify(
    images: Annotated[list[Path] | None, typer.Argument(help="Images to classify; a folder of images gives each of its images.")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="CSV or JSON-lines of images to classify, in an 'image' (or 'path') column.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated labels for zero-shot classification.")] = None,
    labels_file: Annotated[Path | None, typer.Option("--labels-file", help="Labels, one per line.")] = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="Zero-shot: prompt templates, one per line, {} for the label; or a "
                                                   ".json prompt set from optimize-prompts (templates and label phrasings).")] = None,
    probe: Annotated[Path | None, typer.Option("--probe", help="Probe file from `medfm fit-probe`.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the probe's, else the default image-text model).")] = None,
    checkpoint: CheckpointOption = None,
    adapter: AdapterOption = None,
    index: Annotated[str | None, typer.Option("--index", help="Also return the nearest indexed cases as evidence.")] = None,
    k: Annotated[int, typer.Option("-k", help="Evidence cases per image.")] = 5,
    abstain: Annotated[bool, typer.Option("--abstain", help="Zero-shot: answer 'other' when the image is like none of the labels "
                                                            "(the model's calibrated similarity threshold).")] = False,
    abstain_threshold: Annotated[float | None, typer.Option("--abstain-threshold", help="Zero-shot: answer 'other' below this similarity.")] = None,
    summary_file: SummaryOption = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
    ray: RayOption = None,
    workers: WorkersOption = 2,
    mkdir: MkdirOption = False,
) -> None:
    """Label probabilities per image: zero-shot from --labels, or with a --probe. An image that cannot be
    read is reported (one line) and the others are classified; --json prints the list of results."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.models.probe import load_probe
    from medfm.models.registry import DEFAULT_ENCODER, abstain_below
    from medfm.scale import encoder_runner
    from medfm.tasks.batch import expand_paths, read_batch_manifest
    from medfm.tasks.classify import classify_files, read_labels, read_templates

    if labels is None and labels_file is None and probe is None:
        raise MedfmError("classify needs --labels (or --labels-file) for zero-shot classification, or a --probe; give one")
    inputs = expand_paths(images or []) + (read_batch_manifest(manifest) if manifest is not None else [])
    if not inputs:
        raise MedfmError("nothing to classify: give images, a folder or --manifest")
    check_summary_folder(summary_file)
    fitted = load_probe(probe) if probe else None
    names = read_labels(labels, labels_file) if labels is not None or labels_file is not None else None
    prompts, phrasings = read_templates(templates) if templates else (None, None)
    name = model or (fitted.model["name"] if fitted else DEFAULT_ENCODER)
    encoder = create_encoder(name, checkpoint, adapter)
    threshold = abstain_below(abstain, abstain_threshold, encoder.info.name, encoder.info.weights_sha256, "zero_shot")
    runner = encoder_runner(ray, encoder, name, checkpoint, workers, adapter) if ray else None
    store = open_index(index) if index else None
    try:
        report = classify_files(inputs, encoder, labels=names, templates=prompts, phrasings=phrasings, probe=fitted,
                                index=store, k=k, abstain_below=threshold, progress=progress, runner=runner)
    finally:
        if runner is not None:
            runner.close()
        if store is not None:
            store.close()
    if as_json:
        print_json(report.results)
    finish_batch(report, summary_file, False, _result_text, print_results=not as_json)


def _result_text(result: dict[str, Any]) -> str:
    ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
    similarity = f"; similarity {result['similarity']:.3f}" if "similarity" in result else ""
    lines = [f"{result['path']}: {result['prediction']}  (" + ", ".join(f"{c} {p:.3f}" for c, p in ranked) + f"{similarity})"]
    lines += [f"    {hit['score']:.4f}  {hit['path']}" + (f"  label={hit['label']}" if "label" in hit else "")
              for hit in result.get("evidence", [])]
    return "\n".join(lines)


@classify_app.command("fit-probe")
def fit_probe(
    manifest: Annotated[Path, typer.Argument(help="CSV with a path column and a label column.")],
    label_column: Annotated[str, typer.Option("--label-column", help="Column holding the labels.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Probe file to write (JSON).")],
    index: Annotated[str | None, typer.Option("--index", help="Take embeddings from this index.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the --index's model, else the shipped image-text encoder).")] = None,
    checkpoint: CheckpointOption = None,
    knn: Annotated[int | None, typer.Option("--knn", help="A k-nearest-neighbour head with this k instead of logistic regression.")] = None,
    balanced: Annotated[bool, typer.Option("--balanced", help="Weigh each class by the inverse of its frequency, so that a "
                                           "rare class is not ignored (logistic regression).")] = False,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="Labelled CSV on which to choose the operating point.")] = None,
    target_sensitivity: Annotated[float | None, typer.Option("--target-sensitivity")] = None,
    target_specificity: Annotated[float | None, typer.Option("--target-specificity")] = None,
    positive: Annotated[str | None, typer.Option("--positive", help="Positive class (default: the second label in sorted order).")] = None,
    path_column: Annotated[str, typer.Option("--path-column")] = "path",
    as_json: JsonOption = False,
    mkdir: MkdirOption = False,
) -> None:
    """Fit a linear probe (or kNN) on frozen embeddings; with --calibration, choose its operating point
    (--target-sensitivity, --target-specificity, else Youden's J)."""
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.train.probe import fit_probe as fit

    store = open_index(index) if index else None
    try:
        # embeddings from the index need no model; otherwise the named one, else the shipped default
        encoder = create_encoder(model or DEFAULT_ENCODER, checkpoint) if model or index is None else None
        probe = fit(manifest, label_column, encoder=encoder, index=store,
                    method="logistic" if knn is None else "knn", k=10 if knn is None else knn, calibration=calibration,
                    target_sensitivity=target_sensitivity, target_specificity=target_specificity, positive=positive,
                    path_column=path_column, balanced=balanced)
    finally:
        if store is not None:
            store.close()
    probe.save(output)
    check = probe.training["cross_validation"]  # always made: fit_probe refuses a class too small for it
    accuracy = f"accuracy {check['accuracy']['value']:.3f} [{check['accuracy']['low']:.3f}, {check['accuracy']['high']:.3f}]"
    if not check["beats_baseline"]:
        typer.echo(f"medfm: warning: the probe does not beat always answering {check['majority_baseline']['class']!r} "
                   f"(accuracy {check['majority_baseline']['accuracy']:.3f}); cross-validated {accuracy}", err=True)
    summary = {"probe": display_path(output), "model": probe.model, "classes": probe.classes,
               "training": probe.training, "operating_point": probe.operating_point}
    if as_json:
        print_json(summary)
        return
    typer.echo(f"{display_path(output)}: {type(probe.head).__name__} on {probe.model['name']}, classes {', '.join(probe.classes)}")
    typer.echo(f"cross-validated ({check['folds']} folds): {accuracy}, AUC {check['auc']['value']:.3f} "
               f"[{check['auc']['low']:.3f}, {check['auc']['high']:.3f}]; majority-class baseline "
               f"{check['majority_baseline']['accuracy']:.3f}")
    point = probe.operating_point
    if point:
        typer.echo(f"operating point ({point['target']}{'' if point['value'] is None else ' ' + str(point['value'])}, "
                   f"positive {point['positive']!r}): threshold {point['threshold']:.4f}, sensitivity "
                   f"{point['sensitivity']:.3f}, specificity {point['specificity']:.3f}")
        c = point["confusion"]
        typer.echo(f"confusion on calibration: TP {c['tp']}  FN {c['fn']}  FP {c['fp']}  TN {c['tn']}")




@classify_app.command("optimize-prompts")
def optimize_prompts_command(
    manifest: Annotated[Path, typer.Argument(help="CSV of labelled images (paths relative to it).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Prompts file to write for classify --templates: one template per "
                                                               "line, or with a .json name (needed with phrasings) templates and "
                                                               "label phrasings; with --vlm, the prompt set (JSON, for ask --prompts).")],
    label_column: Annotated[str | None, typer.Option("--label-column", help="Column holding the labels (zero-shot templates).")] = None,
    vlm: Annotated[Path | None, typer.Option("--vlm", help="A local vision-language model folder: choose its instruction and "
                                                          "few-shot demonstrations for the manifest's questions instead.")] = None,
    question_column: Annotated[str, typer.Option("--question-column", help="With --vlm: the questions' column.")] = "question",
    answer_column: Annotated[str, typer.Option("--answer-column", help="With --vlm: the reference answers' column (an optional "
                                                                       "'type' column says closed or open).")] = "answer",
    max_demonstrations: Annotated[int | None, typer.Option("--max-demonstrations", help="With --vlm: demonstrations in a prompt at most.")] = None,
    path_column: Annotated[str, typer.Option("--path-column")] = "path",
    split_column: Annotated[str | None, typer.Option("--split-column", help="Column whose 'val' rows choose and 'test' rows measure "
                                                                              "(default: each label's rows halved at random; with "
                                                                              "--vlm 'split', whose 'train' rows give demonstrations).")] = None,
    templates: Annotated[Path | None, typer.Option("--templates", help="The prompts in use now (the baseline; default: medfm's "
                                                   "templates, each label as itself): a file classify --templates reads.")] = None,
    phrasings: Annotated[Path | None, typer.Option("--phrasings", help="JSON {label: [alternative phrasings]} for some labels: each "
                                                   "candidate also picks, per label, some of the label and its phrasings.")] = None,
    budget: Annotated[int | None, typer.Option("--budget", help="Random candidates (template sets, with phrasings) scored on the "
                                               "validation rows.")] = None,
    max_templates: Annotated[int | None, typer.Option("--max-templates", help="Templates in one set at most.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the search (and of the split without --split-column).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Image-text model (default: the shipped one).")] = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
    mkdir: MkdirOption = False,
) -> None:
    """Choose zero-shot prompt templates and label phrasings (--label-column), or a vision-language model's instruction
    and few-shot demonstrations (--vlm), by random search on validation rows; measure the choice on held-out ones."""
    from medfm.cli.output import given
    from medfm.io.formats import check_output_folder
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.io.manifest import read_rows
    from medfm.tasks.classify import read_phrasings, read_templates
    from medfm.train.prompt_search import optimize_prompts, write_templates

    check_output_folder(output.parent)  # a mistyped -o is refused before the search, not after
    if (label_column is None) == (vlm is None):
        raise MedfmError("give --label-column (zero-shot templates) or --vlm FOLDER (a vision-language model's prompts)")
    if vlm is not None:
        unused = [name for name, value in (("--templates", templates), ("--phrasings", phrasings), ("--max-templates", max_templates),
                                           ("--model", model), ("--checkpoint", checkpoint)) if value is not None]
        if unused:
            raise MedfmError(f"{', '.join(unused)} apply to zero-shot templates, not to --vlm")
        _optimize_vlm_prompts(manifest, vlm, output, as_json, path_column=path_column, question_column=question_column,
                              answer_column=answer_column, **given(split_column=split_column, budget=budget,
                                                                   max_demonstrations=max_demonstrations, seed=seed))
        return
    if max_demonstrations is not None:
        raise MedfmError("--max-demonstrations applies to --vlm")
    baseline, baseline_phrasings = read_templates(templates) if templates else (None, None)
    # a labels' phrasings file is checked against the manifest here, so that its one-line refusal names the file
    alternatives = read_phrasings(phrasings, {row[label_column] for row in read_rows(manifest, (label_column,))}) if phrasings else None
    if (alternatives or baseline_phrasings) and output.suffix.lower() != ".json":
        raise MedfmError(f"{display_path(output)}: label phrasings need a .json prompts file (-o NAME.json); "
                         "a templates file of one per line cannot hold them")
    encoder = create_encoder(model or DEFAULT_ENCODER, checkpoint)
    result = optimize_prompts(manifest, label_column, encoder, path_column=path_column, split_column=split_column,
                              phrasings=alternatives, **given(baseline=baseline, baseline_phrasings=baseline_phrasings,
                                                              budget=budget, max_templates=max_templates, seed=seed))
    write_templates(result, output)
    if as_json:
        print_json(result)
        return
    test = result["test"]
    phrased = f", phrasings for {', '.join(result['phrasings'])}" if result["phrasings"] else ""
    typer.echo(f"{display_path(output)}: {len(result['templates'])} templates{phrased}; test accuracy {test['chosen'][0]:.4f} "
               f"against {test['baseline'][0]:.4f} (gain {test['gain'][0]:+.4f} [{test['gain'][1]:+.4f}, {test['gain'][2]:+.4f}], "
               f"{test['n']} images)")


def _optimize_vlm_prompts(manifest: Path, folder: Path, output: Path, as_json: bool, **options: Any) -> None:
    from medfm.models.registry import create_language_model
    from medfm.train.vlm_prompts import optimize_vlm_prompts, write_prompt_set

    result = optimize_vlm_prompts(manifest, create_language_model(folder), **options)
    write_prompt_set(result, output)
    if as_json:
        print_json(result)
        return
    test, chosen = result["test"], result["prompt_set"]
    typer.echo(f"{display_path(output)}: instruction {chosen['instruction']!r}, {len(chosen['demonstrations'])} "
               f"demonstrations; test score {test['chosen'][0]:.4f} against {test['baseline'][0]:.4f} for the bare question "
               f"(gain {test['gain'][0]:+.4f} [{test['gain'][1]:+.4f}, {test['gain'][2]:+.4f}], {test['n']} questions)")
