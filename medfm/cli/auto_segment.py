"""``medfm segment --auto``: a model trained by ``medfm train seg`` over many images, no prompts."""

from __future__ import annotations

import os
from pathlib import Path

from medfm.cli.output import finish_batch
from medfm.errors import MedfmError


def auto_segment_command(inputs: list[Path], out_dir: Path, model: str | None, flips: bool, largest_component: bool,
                         progress: bool, as_json: bool, summary_file: Path | None = None, suffix: str | None = None,
                         catalog: str | None = None, where: list[str] | None = None, ray: str | None = None, workers: int = 2) -> None:
    """One label map per input in ``out_dir``, named after the input; a failed input is reported and the rest go on."""
    from functools import partial

    from medfm.models.registry import create_auto_segmenter
    from medfm.pairs import parse_pairs
    from medfm.scale import open_runner
    from medfm.tasks.auto_segment import auto_segment_files
    from medfm.tasks.batch import catalog_inputs, expand_paths

    if not model:
        raise MedfmError("--auto needs --model MODEL_DIR (a folder written by `medfm train seg`)")
    items = expand_paths(inputs)
    if catalog is not None or where:
        items += catalog_inputs(catalog, parse_pairs(where or [], "where", "modality=CT"))
    if not items:
        raise MedfmError("--auto needs input images: files, folders or --catalog/--where")
    segmenter = create_auto_segmenter(model)
    runner = open_runner(ray, workers, segmenter, partial(create_auto_segmenter, os.path.abspath(model))) if ray else None
    try:
        report = auto_segment_files(items, out_dir, segmenter, suffix=suffix, flips=flips,
                                    largest_component=largest_component, progress=progress, runner=runner)
    finally:
        if runner is not None:
            runner.close()

    def text(result: dict) -> str:
        sizes = ", ".join(f"label {s['label']}: {s['voxels']} voxels" for s in result["structures"]) or "nothing found"
        return f"{result['output']}: {sizes}"

    finish_batch(report, summary_file, as_json, text)
