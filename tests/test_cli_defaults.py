"""Defaults the README promises: the shipped image-text encoder wherever a model is needed and none is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from clitools import run_cli

from medfm.io import Image, save
from medfm.models.registry import DEFAULT_ENCODER

SHIPPED_ENCODER = "medfm-clip-small"  # the README's "default image-text encoder"


@pytest.fixture
def labelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six small PNGs, dark 'normal' and bright 'polyp', in a manifest; the embedding cache in tmp_path."""
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path / "data"))
    rows = []
    for i in range(6):
        label = "polyp" if i % 2 else "normal"
        save(Image(np.full((32, 32), 200 if i % 2 else 30, np.uint8)), tmp_path / f"{i}.png")
        rows.append({"path": f"{i}.png", "diagnosis": label})
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "diagnosis"])
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "manifest.csv"


def test_the_default_encoder_is_the_shipped_one() -> None:
    assert DEFAULT_ENCODER == SHIPPED_ENCODER


def test_index_build_and_fit_probe_default_to_the_shipped_encoder(labelled: Path, tmp_path: Path, capsys) -> None:
    images = [str(tmp_path / f"{i}.png") for i in range(6)]
    code, _, err = run_cli(["index", "build", *images, "--index", str(tmp_path / "ix"), "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["model"]["name"] == SHIPPED_ENCODER
    code, out, err = run_cli(["fit-probe", str(labelled), "--label-column", "diagnosis", "-o", str(tmp_path / "p.json"), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"]["name"] == SHIPPED_ENCODER
    code, _, err = run_cli(["fit-probe", str(labelled), "--label-column", "diagnosis", "-o", str(tmp_path / "q.json"),
                            "--model", "no-such-model"], capsys)
    assert code == 2 and "no-such-model" in err  # --model overrides
