"""``medfm fuse-labels``: several annotators' masks of one image into one label map."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import print_json

labels_app = typer.Typer()


@labels_app.command("fuse-labels")
def fuse_labels_command(
    masks: Annotated[list[Path], typer.Argument(help="Two or more masks of the same image (binary or label maps).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Fused label map to write: .png, .nii or .nii.gz.")],
    method: Annotated[str, typer.Option("--method", help="staple (SimpleITK's STAPLE, binary or multi-label) or majority.")] = "staple",
) -> None:
    """Fuse annotators' masks; prints per-annotator sensitivity and specificity as JSON."""
    from medfm.io.label_maps import save_segmentation
    from medfm.tasks.label_fusion import fuse_labels

    fused, report = fuse_labels(masks, method)
    print_json({"output": str(save_segmentation(fused, output)), **report})
