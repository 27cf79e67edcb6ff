"""Start-up cost of the ``medfm`` command line against two floors; prints one JSON object.

Run ``python benchmarks/cli_bench.py [--repeats 7]``.

Each command runs ``--repeats`` times in a fresh process (after one warm-up run, so that
every command finds its files in the page cache); the median wall time is reported, and the median CPU time (user + system), which a
busy machine disturbs less.
``medfm`` runs exactly as its console script does (``from medfm.cli import main; main()``)
with this interpreter. The floors are ``dcm2niix -h`` (a compiled converter: what a
command line costs without Python) and ``python -c "import pydicom"`` (the least a
Python DICOM tool imports). ``medfm info`` reads a synthetic 256×256 RGB PNG. Each
medfm command also reports which heavy libraries it imported (it must not import torch).
Targets (issue 11): ``medfm --help`` ≤ 0.3 s, ``medfm info FILE.png`` ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "monai", "rich", "scipy", "SimpleITK", "sqlalchemy", "fastapi", "matplotlib")
RUN_MEDFM = "import sys; from medfm.cli import main\ntry:\n    main()\nfinally:\n    sys.stderr.write(repr(sorted(m for m in {heavy!r} if m in sys.modules)))"
TARGETS_S = {"medfm --help": 0.3, "medfm info FILE.png": 1.0}


def median_seconds(command: list[str], repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of ``command``'s process."""
    subprocess.run(command, capture_output=True, check=True)  # warm-up: page cache
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def medfm_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from medfm.cli import main; main()", *args]


def heavy_imports(*args: str) -> list[str]:
    """The heavy libraries a ``medfm`` command leaves in ``sys.modules``."""
    script = RUN_MEDFM.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True, text=True)
    return json.loads(result.stderr.strip().splitlines()[-1].replace("'", '"'))


def write_png(folder: Path) -> Path:
    import numpy as np
    from PIL import Image as PILImage

    path = folder / "plane.png"
    rng = np.random.default_rng(0)
    PILImage.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        png = write_png(Path(tmp))
        commands = {
            "medfm --help": medfm_command("--help"),
            "medfm info FILE.png": medfm_command("info", str(png)),
            "python -c 'import pydicom'": [sys.executable, "-c", "import pydicom"],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        dcm2niix = shutil.which("dcm2niix")
        if dcm2niix:
            commands["dcm2niix -h"] = [dcm2niix, "-h"]
        measured = {name: median_seconds(command, args.repeats) for name, command in commands.items()}
        imports = {"medfm --help": heavy_imports("--help"), "medfm info FILE.png": heavy_imports("info", str(png))}
    seconds = {name: wall for name, (wall, _) in measured.items()}
    floors = [name for name in ("dcm2niix -h", "python -c 'import pydicom'") if name in seconds]
    result = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "repeats": args.repeats,
        "median_s": {name: round(value, 4) for name, value in seconds.items()},
        "median_cpu_s": {name: round(cpu, 4) for name, (_, cpu) in measured.items()},
        "ratio_to_floor": {name: {floor: round(seconds[name] / seconds[floor], 2) for floor in floors}
                           for name in TARGETS_S},
        "target_s": TARGETS_S,
        "meets_target": {name: seconds[name] <= target for name, target in TARGETS_S.items()},
        "heavy_imports": imports,
    }
    if not dcm2niix:
        result["skipped"] = "dcm2niix is not installed: no dcm2niix floor"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
