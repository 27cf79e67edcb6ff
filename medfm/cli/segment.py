"""``medfm segment``: promptable segmentation of one image into a label map file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import CheckpointOption, JsonOption, ProgressOption, parse_numbers, print_json
from medfm.errors import MedfmError

segment_app = typer.Typer()


@segment_app.command("segment")
def segment_command(
    image: Annotated[Path, typer.Argument(help="Image file or DICOM series folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Label map to write: .png, .nii.gz, or .dcm (DICOM SEG, DICOM input).")],
    point: Annotated[list[str] | None, typer.Option("--point", help="x,y[,z][:pos|neg] in pixels (repeatable); z: slice, or frame of a video.")] = None,
    box: Annotated[list[str] | None, typer.Option("--box", help="x0,y0,x1,y1[,z] in pixels (repeatable).")] = None,
    scribble: Annotated[Path | None, typer.Option("--scribble", help="Mask file on the image's grid; nonzero pixels are a positive scribble.")] = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="JSON list of prompts (several labels, negative scribbles).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Segmenter name, or a .json config (default: the shipped segmenter).")] = None,
    checkpoint: CheckpointOption = None,
    propagate: Annotated[bool, typer.Option("--propagate", help="Carry each structure through the volume or video.")] = False,
    rule: Annotated[list[str] | None, typer.Option("--rule", help="With --propagate, a stopping-rule parameter as NAME=VALUE (repeatable): "
                                                                   "min_area, min_score, margin, context, max_intensity_shift.")] = None,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Interactive segmentation from points, boxes and scribbles; writes a label map stamped with its provenance."""
    from medfm.models.registry import DEFAULT_SEGMENTER, create_segmenter
    from medfm.tasks.segment import PropagationRule
    from medfm.tasks.segment_to_file import segment_file

    if rule and not propagate:
        raise MedfmError("--rule sets how --propagate stops; give --propagate too")
    propagation = PropagationRule.from_dict(parse_numbers(rule or [], "--rule")) if propagate else None
    summary = segment_file(image, output, create_segmenter(model or DEFAULT_SEGMENTER, checkpoint), points=point or [],
                           boxes=box or [], scribble=scribble, prompts_file=prompts, propagation=propagation,
                           progress=progress)
    if as_json:
        print_json(summary)
        return
    for structure in summary["structures"]:
        size = (f"{structure['volume_mm3']:.1f} mm3" if structure.get("volume_mm3") is not None else
                f"{structure['area_mm2']:.1f} mm2" if structure.get("area_mm2") is not None else "")
        name = f" ({structure['label_name']})" if structure["label_name"] else ""
        typer.echo(f"{summary['output']}: label {structure['label']}{name}: {structure['voxels']} voxels {size}, "
                   f"{structure['planes']} planes, score {structure['score']:.3f}")


