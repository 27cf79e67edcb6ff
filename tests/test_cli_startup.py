"""The command line starts without torch or the models (their import costs seconds)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "monai", "open_clip", "timm", "transformers", "medfm.models", "rich", "pydicom")


def modules_left_after(code: str) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_importing_the_command_line_imports_no_heavy_library():
    loaded = modules_left_after("import medfm.cli")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_help_imports_no_heavy_library():
    code = ("from medfm.cli import main\nsys.argv = ['medfm', '--help']\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0")
    loaded = modules_left_after(code)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_info_on_a_png_does_not_import_torch(tmp_path):
    from PIL import Image as PILImage

    png = tmp_path / "plane.png"
    PILImage.new("RGB", (32, 32)).save(png)
    code = (f"from medfm.cli import main\nsys.argv = ['medfm', 'info', {str(png)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code")
    loaded = modules_left_after(code)
    assert "torch" not in loaded and "medfm.models" not in loaded


def test_the_public_names_still_load_on_first_use():
    import medfm

    assert medfm.Image.__name__ == "Image" and callable(medfm.load) and callable(medfm.set_threads)
    assert isinstance(medfm.__version__, str)
