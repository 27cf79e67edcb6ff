"""``medfm segment --auto``: a model trained by ``medfm train seg`` over many images, no prompts."""

from __future__ import annotations

from pathlib import Path

from medfm.cli.output import finish_batch
from medfm.errors import MedfmError


def auto_segment_command(inputs: list[Path], out_dir: Path, model: str | None, flips: bool, largest_component: bool,
                         progress: bool, as_json: bool, summary_file: Path | None = None, suffix: str | None = None,
                         catalog: str | None = None, where: list[str] | None = None) -> None:
    """One label map per input in ``out_dir``, named after the input; a failed input is reported and the rest go on."""
    from medfm.models.registry import create_auto_segmenter
    from medfm.pairs import parse_pairs
    from medfm.tasks.auto_segment import auto_segment_files
    from medfm.tasks.batch import catalog_inputs, expand_paths

    if not model:
        raise MedfmError("--auto needs --model MODEL_DIR (a folder written by `medfm train seg`)")
    items = expand_paths(inputs)
    if catalog is not None or where:
        items += catalog_inputs(catalog, parse_pairs(where or [], "where", "modality=CT"))
    if not items:
        raise MedfmError("--auto needs input images: files, folders or --catalog/--where")
    report = auto_segment_files(items, out_dir, create_auto_segmenter(model), suffix=suffix, flips=flips,
                                largest_component=largest_component, progress=progress)

    def text(result: dict) -> str:
        sizes = ", ".join(f"label {s['label']}: {s['voxels']} voxels" for s in result["structures"]) or "nothing found"
        return f"{result['output']}: {sizes}"

    finish_batch(report, summary_file, as_json, text)
