"""The package layout is an architecture: which layer may import which (README, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medfm

PACKAGE = Path(medfm.__file__).parent

#: Layers each layer must never import (module-level or inside functions).
FORBIDDEN = {
    "io": {"catalog", "models", "index", "scale", "tasks", "train", "eval", "server", "cli"},
    "catalog": {"models", "index", "tasks", "train", "eval", "server", "cli"},
    "models": {"index", "scale", "tasks", "train", "server", "cli"},
    "index": {"scale", "tasks", "train", "eval", "server", "cli"},
    "scale": {"index", "tasks", "train", "eval", "server", "cli"},
    "tasks": {"train", "eval", "server", "cli"},
    "eval": {"tasks", "train", "server", "cli"},
    "train": {"server", "cli"},
    "server": {"cli"},
}


def imported_layers(path: Path) -> set[str]:
    """The medfm subpackages that a module imports anywhere in its code."""
    layers = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        layers.update(name.split(".")[1] for name in names if name.startswith("medfm.") and name.count(".") >= 1)
    return layers


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    offences = [
        f"{path.relative_to(PACKAGE.parent)} imports medfm.{other}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for other in sorted(imported_layers(path) & FORBIDDEN[layer])
    ]
    assert not offences, "\n".join(offences)


def test_the_checker_sees_function_level_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from medfm.tasks.search import search\n    import medfm.cli.output\n")
    assert imported_layers(module) == {"tasks", "cli"}
