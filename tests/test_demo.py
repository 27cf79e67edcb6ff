"""``medfm demo``: builds the examples, catalogues them once, and says so the second time."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

import medfm
from medfm import demo
from medfm.cli import main

EXPECTED_MODALITIES = {"CT": 3, "MR": 1, "OT": 6}  # DICOM CT x3 (one synthetic series), MR, then files without modality


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDFM_DATA_DIR", str(tmp_path / "medfm-data"))
    monkeypatch.delenv("MEDFM_CATALOG", raising=False)
    return tmp_path / "medfm-data"


def test_build_examples_writes_readable_images_once(tmp_path: Path) -> None:
    items = demo.build_examples(tmp_path / "examples")
    assert len(items) == 10 and all(item.exists() for item in items)
    series = tmp_path / "examples" / "phantom_ct_dicom"
    assert len(list(series.glob("*.dcm"))) == demo.PHANTOM_SHAPE[2]
    ct = medfm.load(series)
    assert ct.modality == "CT" and ct.spatial_shape == demo.PHANTOM_SHAPE
    assert ct.spacing == pytest.approx(demo.PHANTOM_SPACING)
    cine = medfm.load(tmp_path / "examples" / "phantom_cine.mp4")
    assert cine.num_frames == demo.PHANTOM_SHAPE[2] and cine.num_channels == 1
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "examples").rglob("*")}
    assert demo.build_examples(tmp_path / "examples") == items
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "examples").rglob("*")} == stamps
    assert not list((tmp_path / "examples").glob(".medfm-tmp-*"))


def test_run_catalogues_the_examples_once(data_dir: Path) -> None:
    first = demo.run()
    assert first.folder == data_dir / "demo"
    assert first.report.added == 10 and first.report.bad == []
    assert Counter(record.modality for record in first.records) == EXPECTED_MODALITIES
    assert {record.dataset for record in first.records} == {"demo"}
    assert (data_dir / "catalog.db").exists()
    second = demo.run()
    assert second.report.added == second.report.updated == 0
    assert [r.id for r in second.records] == [r.id for r in first.records]


def test_cli_demo_prints_the_table_without_patient_data(data_dir: Path, capsys, monkeypatch) -> None:
    def medfm_demo() -> list[str]:
        monkeypatch.setattr(sys, "argv", ["medfm", "demo"])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code in (0, None)
        return capsys.readouterr().out.splitlines()

    lines = medfm_demo()
    assert lines[0] == f"Examples in {data_dir / 'demo'}"
    assert "10 images added" in lines[1]
    assert lines[2].split() == ["id", "modality", "shape", "spacing", "dataset", "path"]
    assert len(lines) == 3 + 10
    assert any("64x64x24x1x1" in line and "0.8x0.8x2.5" in line and "phantom_ct_dicom" in line for line in lines)
    output = "\n".join(lines)
    for identifier in ("Phantom^Synthetic", "SYNTH0001", "CompressedSamples", "19700101"):
        assert identifier not in output
    again = medfm_demo()
    assert "already catalogued, nothing added" in again[1]
    assert len(again) == 3 + 10
