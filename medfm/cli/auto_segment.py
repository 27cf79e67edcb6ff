"""``medfm segment --auto``: a model trained by ``medfm train seg`` over many images, no prompts."""

from __future__ import annotations

from pathlib import Path

from medfm.cli.output import finish_batch
from medfm.errors import MedfmError


def auto_segment_command(inputs: list[Path], out_dir: Path, model: str | None, flips: bool, largest_component: bool,
                         progress: bool, as_json: bool, summary_file: Path | None = None) -> None:
    """One label map per input in ``out_dir``, named after the input; a failed input is reported and the rest go on."""
    from medfm.models.registry import create_auto_segmenter
    from medfm.tasks.auto_segment import auto_segment_files
    from medfm.tasks.batch import expand_paths

    if not model:
        raise MedfmError("--auto needs --model MODEL_DIR (a folder written by `medfm train seg`)")
    if not inputs:
        raise MedfmError("--auto needs input images: files or folders")
    report = auto_segment_files(expand_paths(inputs), out_dir, create_auto_segmenter(model), flips=flips,
                                largest_component=largest_component, progress=progress)

    def text(result: dict) -> str:
        sizes = ", ".join(f"label {s['label']}: {s['voxels']} px" for s in result["structures"]) or "nothing found"
        return f"{result['output']}: {sizes}"

    finish_batch(report, summary_file, as_json, text)
