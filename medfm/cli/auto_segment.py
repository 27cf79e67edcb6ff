"""``medfm segment --auto``: a model trained by ``medfm train seg`` over many images, no prompts."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli.output import print_json
from medfm.errors import MedfmError


def auto_segment_command(inputs: list[Path], out_dir: Path, model: str | None, flips: bool, largest_component: bool,
                         progress: bool, as_json: bool) -> None:
    """One label map per input in ``out_dir``, named after the input."""
    from medfm.models.registry import create_auto_segmenter
    from medfm.tasks.auto_segment import auto_segment_files

    if not model:
        raise MedfmError("--auto needs --model MODEL_DIR (a folder written by `medfm train seg`)")

    def report(done: int, total: int) -> None:
        typer.echo(f"\r{done}/{total}", err=True, nl=done == total)

    results = auto_segment_files(inputs, out_dir, create_auto_segmenter(model), flips=flips,
                                 largest_component=largest_component, progress=report if progress else None)
    if as_json:
        print_json(results)
        return
    for result in results:
        sizes = ", ".join(f"label {s['label']}: {s['voxels']} px" for s in result["structures"]) or "nothing found"
        typer.echo(f"{result['output']}: {sizes}")
