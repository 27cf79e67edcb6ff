"""``medfm segment``: promptable segmentation of one image into a label map file."""

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
    parse_numbers,
    print_json,
)
from medfm.errors import MedfmError, display_path

segment_app = typer.Typer()


@segment_app.command("segment")
def segment_command(
    images: Annotated[list[Path] | None, typer.Argument(help="Image files or DICOM series folders; a folder of images gives each of its images.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Label map to write: .png, .nii.gz, or .dcm (DICOM SEG, DICOM input); "
                                                              "for several inputs, the folder of their label maps.")] = ...,
    point: Annotated[list[str] | None, typer.Option("--point", help="x,y[,z][:pos|neg] in pixels (repeatable); z: slice, or frame of a video.")] = None,
    box: Annotated[list[str] | None, typer.Option("--box", help="x0,y0,x1,y1[,z] in pixels (repeatable).")] = None,
    scribble: Annotated[Path | None, typer.Option("--scribble", help="Mask file on the image's grid; nonzero pixels are a positive scribble.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="JSON list of prompts (several labels, negative scribbles).")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="CSV or JSON-lines of inputs: 'image' and optional 'box' and 'points' "
                                                                      "(as --box and --point; several separated by ';').")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog", help="Segment the images of this catalog (URL or SQLite file) that match --where.")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="With --catalog (default: the default catalog), only images with KEY=VALUE: "
                                                                  "modality, body_part, dataset or text (repeatable).")] = None,
    suffix: Annotated[str | None, typer.Option("--suffix", help="Several inputs: the outputs' format, e.g. .nii.gz "
                                                                "(default .png for photo-like inputs, else .nii.gz).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Segmenter name, or a .json config (default: the shipped segmenter).")] = None,
    checkpoint: CheckpointOption = None,
    adapter: AdapterOption = None,
    propagate: Annotated[bool, typer.Option("--propagate", help="Carry each structure through the volume or video.")] = False,
    rule: Annotated[list[str] | None, typer.Option("--rule", help="With --propagate, a stopping-rule parameter as NAME=VALUE (repeatable): "
                                                                   "min_area, min_score, margin, context, max_intensity_shift.")] = None,
    summary_file: SummaryOption = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
    mkdir: MkdirOption = False,
    auto: Annotated[bool, typer.Option("--auto", help="No prompts: a model folder from `medfm train seg` (--model DIR) "
                                                      "segments every input into -o DIR, one label map per input "
                                                      "(PNG for pictures, NIfTI for volumes and videos, or --suffix .dcm).")] = False,
    flips: Annotated[bool, typer.Option("--flips", help="With --auto, average over mirrored copies (test-time augmentation).")] = False,
    largest_component: Annotated[bool, typer.Option("--largest-component", help="With --auto, keep each label's largest piece.")] = False,
    text: Annotated[str | None, typer.Option("--text", help="Segment what these words name (e.g. \"polyp\") on a 2D image: "
                                                            "image-text saliency → box → the segmenter.")] = None,
    saliency: Annotated[Path | None, typer.Option("--saliency", help="With --text, also write the saliency map (8-bit PNG).")] = None,
    grounder: Annotated[str | None, typer.Option("--grounder", help="With --text, the grounding head that finds the words: a "
                                                                    "folder `medfm train grounding` wrote (default: the one shipped "
                                                                    "for the default encoder).")] = None,
    ray: RayOption = None,
    workers: WorkersOption = 2,
) -> None:
    """Interactive segmentation from points, boxes and scribbles; writes a label map stamped with its provenance.
    Several inputs (files, a folder, --manifest, or --catalog/--where) go to one label map each in the -o folder;
    with --auto, a trained model segments them without prompts."""
    if ray and not auto:
        raise MedfmError("--ray runs segment --auto on a Ray cluster; give --auto too")
    check_summary_folder(summary_file)
    if auto:
        from medfm.cli.auto_segment import auto_segment_command

        _refuse_unused("--auto segments without prompts", {
            "--point": point, "--box": box, "--scribble": scribble, "--prompts": prompts, "--manifest": manifest,
            "--text": text, "--saliency": saliency, "--grounder": grounder, "--propagate": propagate or None, "--rule": rule,
            "--checkpoint": checkpoint, "--adapter": adapter})

        auto_segment_command(images or [], output, model, flips, largest_component, progress, as_json, summary_file,
                             suffix, catalog, where, ray, workers)
        return
    if text is not None or saliency is not None or grounder is not None:
        _text_command(images or [], output, text, saliency, grounder, model, checkpoint, adapter, as_json,
                      others={"--point": point, "--box": box, "--scribble": scribble, "--prompts": prompts, "--manifest": manifest,
                              "--catalog": catalog, "--where": where, "--propagate": propagate or None})
        return
    from medfm.io.formats import image_suffix
    from medfm.models.registry import DEFAULT_SEGMENTER, create_segmenter
    from medfm.pairs import parse_pairs
    from medfm.tasks.batch import catalog_inputs, expand_paths, read_batch_manifest
    from medfm.tasks.segment import PropagationRule
    from medfm.tasks.segment_to_file import segment_file, segment_files

    if rule and not propagate:
        raise MedfmError("--rule sets how --propagate stops; give --propagate too")
    propagation = PropagationRule.from_dict(parse_numbers(rule or [], "--rule")) if propagate else None
    inputs = expand_paths(images or [])
    if len(inputs) > 1 and len(images or []) == 1 and image_suffix(output) is not None and not output.is_dir():
        raise MedfmError(f"{display_path(images[0])}: holds {len(inputs)} images (pictures or DICOM series); "
                         "give one, or -o a folder to segment each")
    if manifest is not None:
        inputs += read_batch_manifest(manifest)
    if catalog is not None or where:
        inputs += catalog_inputs(catalog, parse_pairs(where or [], "where", "modality=CT"))
    if not inputs:
        raise MedfmError("nothing to segment: give images, a folder, --manifest or --catalog")
    segmenter = create_segmenter(model or DEFAULT_SEGMENTER, checkpoint, adapter)
    shared = {"points": point or [], "boxes": box or [], "scribble": scribble, "prompts_file": prompts, "propagation": propagation}
    if len(images or []) == 1 and len(inputs) == 1 and manifest is None and summary_file is None:
        summary = segment_file(inputs[0].path, output, segmenter, progress=progress, **shared)
    else:
        report = segment_files(inputs, output, segmenter, suffix=suffix, progress=progress, **shared)
        finish_batch(report, summary_file, as_json, _structures_text)
        return
    if as_json:
        print_json(summary)
        return
    typer.echo(_structures_text(summary))


def _refuse_unused(reason: str, options: dict[str, Any]) -> None:
    """One line naming the given ``options`` that the command would otherwise ignore without a word."""
    given = [name for name, value in options.items() if value]
    if given:
        raise MedfmError(f"{reason}; it cannot be combined with {', '.join(given)}")


def _text_command(images: list[Path], output: Path, text: str | None, saliency: Path | None, grounder_name: str | None,
                  model: str | None, checkpoint: Path | None, adapter: Path | None, as_json: bool,
                  others: dict[str, Any]) -> None:
    from medfm.models.registry import DEFAULT_SEGMENTER, create_segmenter
    from medfm.tasks.text_segment import grounding_models, segment_text_file

    if text is None:
        raise MedfmError("--saliency and --grounder serve a --text prompt; give --text too")
    _refuse_unused("--text is the prompt", others)
    if len(images) != 1:
        raise MedfmError(f"--text segments one image; got {len(images)}")
    if images[0].is_dir():  # a DICOM series, or a folder of pictures
        from medfm.tasks.batch import expand_paths

        held = expand_paths(images)
        if len(held) != 1:
            raise MedfmError(f"{display_path(images[0])}: --text segments one image; this folder holds {len(held)}")
        images = [Path(held[0].path)]
    encoder, grounder = grounding_models(grounder_name)
    wanted = model or DEFAULT_SEGMENTER
    # the grounding head already holds the segmenter whose features it reads: when it is the one asked for, reuse it
    reuse = grounder is not None and checkpoint is None and adapter is None and wanted == grounder.info.segmenter
    segmenter = grounder.segmenter if reuse else create_segmenter(wanted, checkpoint, adapter)
    result = segment_text_file(images[0], output, text, encoder, segmenter, grounder=grounder, saliency_output=saliency)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['output']}: {text!r} boxed at {','.join(f'{v:g}' for v in result['box'])}, {result['pixels']} pixels")


def _structures_text(summary: dict[str, Any]) -> str:
    """One line per structure of a ``segment_file`` summary."""
    lines = []
    for structure in summary["structures"]:
        size = (f" {structure['volume_mm3']:.1f} mm3" if structure.get("volume_mm3") is not None else
                f" {structure['area_mm2']:.1f} mm2" if structure.get("area_mm2") is not None else "")
        name = f" ({structure['label_name']})" if structure["label_name"] else ""
        lines.append(f"{summary['output']}: label {structure['label']}{name}: {structure['voxels']} voxels{size}, "
                     f"{structure['planes']} planes, score {structure['score']:.3f}")
    return "\n".join(lines)
