"""torchrun on two machines that share no file system: rank 0 alone reads the data, the cache and the checkpoint,
and writes; it sends the other ranks what they train on. Each rank runs here in a folder of its own with the same
relative command line, so that none of the paths it is given exists on rank 1's "machine"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from clipdata import write_cache
from liveserver import free_port
from test_pretrain_ddp import images

MEDFM = str(Path(sys.executable).with_name("medfm"))


def on_two_machines(machines: list[Path], args: list[str]) -> None:
    """``medfm ARGS`` as ranks 0 and 1 of a torchrun group, each in its machine's folder; both must succeed."""
    port = free_port()
    processes = []
    for rank, folder in enumerate(machines):
        folder.mkdir(exist_ok=True)
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}
        processes.append(subprocess.Popen([MEDFM, "--threads", "1", *args], cwd=folder, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.monotonic() + 300
    while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
        if any(process.poll() for process in processes):  # one failed: its peer would wait for it until gloo's timeout
            break
        time.sleep(0.2)
    for process in processes:
        process.kill()
    ended = [(process.returncode, rank, process.communicate()[1]) for rank, process in enumerate(processes)]
    failed = sorted(ended, key=lambda end: end[0] == -9)  # the rank that failed first, then those killed here
    assert failed[0][0] == 0, f"rank {failed[0][1]} ended with {failed[0][0]}: {failed[0][2][-2000:]}"


def test_pretrain_ranks_need_neither_the_data_nor_rank_0s_run_folder(tmp_path: Path) -> None:
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    images(machines[0] / "data")
    on_two_machines(machines, ["pretrain", "data", "-o", "encoder", "--method", "mae", "--arch", "vit-tiny",
                               "--max-steps", "2", "--batch-size", "4"])
    assert (machines[0] / "encoder" / "encoder.safetensors").is_file()
    assert list(machines[1].iterdir()) == []


def test_train_clip_ranks_need_neither_the_cache_nor_the_checkpoint(tmp_path: Path) -> None:
    from medfm.train.clip_data import evaluation_prompts

    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    (machines[0] / "data").mkdir(parents=True)
    write_cache(machines[0] / "data" / "cache.pt", extra_texts=evaluation_prompts())  # the prompts: no MiniLM needed
    common = ["train", "clip", "--data", "data", "--out", "run", "--cache", "data/cache.pt", "--epochs", "2", "--batch-size", "24"]
    on_two_machines(machines, [*common, "--stop-after", "1"])
    on_two_machines(machines, [*common, "--resume"])  # rank 0's checkpoint, sent to rank 1
    history = (machines[0] / "run" / "history.jsonl").read_text().splitlines()
    assert [line.split(",")[0] for line in history] == ['{"epoch": 0', '{"epoch": 1']
    assert (machines[0] / "run" / "medfm-clip-small.safetensors").is_file()
    assert list(machines[1].iterdir()) == []
