"""Commands that train or score refuse an output in a missing folder before any work, unless --mkdir."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import run_cli

# The inputs need not exist: the output's folder is checked first, so a mistyped -o costs nothing.
COMMANDS = [
    ["curate", "{tmp}/m.csv", "--embeddings", "medfm-clip-small", "--fraction", "0.5", "-o", "{missing}/x.csv"],
    ["finetune", "medfm-interactive", "--data", "{tmp}/m.csv", "-o", "{missing}/a.safetensors"],
    ["train", "seg", "{tmp}/m.csv", "-o", "{missing}/m"],
    ["train", "router", "{tmp}/r.csv", "-o", "{missing}/r"],
    ["train", "grounding", "{tmp}/g.csv", "-o", "{missing}/g"],
    ["train", "captioner", "--data", "{tmp}", "-o", "{missing}/c"],
    ["train", "generator", "{tmp}/m.csv", "-o", "{missing}/gen"],
    ["train", "interactive", "--out", "{missing}/run"],
    ["train", "clip", "--data", "{tmp}", "--out", "{missing}/run"],
    ["train", "abstention", "--data", "{tmp}", "--results", "{missing}/r.json"],
    ["evaluate", "interactive", "{tmp}/m.csv", "--results", "{missing}/r.json"],
    ["evaluate", "clip", "{tmp}/m.csv", "--results", "{missing}/r.json"],
    ["evaluate", "retrieval", "{tmp}/m.csv", "--results", "{missing}/r.json"],
    ["evaluate", "zeroshot", "{tmp}/m.csv", "--report", "{missing}/r.html"],
    ["evaluate", "cls", "--scores", "{tmp}/s.csv", "--labels", "{tmp}/l.csv", "--report", "{missing}/r.html"],
    ["evaluate", "seg", "--pred", "{tmp}/p", "--ref", "{tmp}/r", "--report", "{missing}/r.html"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command[:2]))
def test_a_missing_output_folder_is_refused_before_any_work(command: list[str], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nodir"
    args = [part.format(tmp=tmp_path, missing=missing) for part in command]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert err.strip().endswith("nodir: folder does not exist; create it first or pass --mkdir"), err
    assert len(err.strip().splitlines()) == 1 and not missing.exists()


def test_mkdir_lets_the_command_create_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nodir" / "deeper"
    code, _, err = run_cli(["train", "router", str(tmp_path / "r.csv"), "-o", str(missing / "r"), "--mkdir"], capsys)
    assert missing.is_dir()  # made, then the missing manifest is what fails
    assert code == 2 and "r.csv" in err and "folder does not exist" not in err
