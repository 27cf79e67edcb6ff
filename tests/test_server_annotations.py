"""Versioned annotations survive a crash: a save killed at any moment leaves only whole versions."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from medfm.io import load
from medfm.server.annotations import AnnotationStore

#: A child process that saves the same label map as new versions until it is killed.
SAVER = """
import sys
import numpy as np
from pathlib import Path
from medfm.io import Image
from medfm.provenance import Provenance
from medfm.server.annotations import AnnotationStore

store = AnnotationStore(Path(sys.argv[1]))
labels = np.zeros((96, 96, 16), np.uint8)
labels[10:60, 20:70, 3:12] = 1
labels[70:90, 70:90, 5:9] = 2
while True:
    saved = store.save(7, "crash", Image(labels, provenance=Provenance("segmentation", "test-model", None)), "nifti", {"labels": {"1": {"name": "a"}, "2": {"name": "b"}}})
    print(saved["version"], flush=True)
"""
EXPECTED = {"1": 50 * 50 * 9, "2": 20 * 20 * 4}


def test_saves_killed_at_random_moments_leave_only_whole_versions(tmp_path: Path):
    root = tmp_path / "annotations"
    rng = random.Random(0)
    for _ in range(4):
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(root)], stdout=subprocess.PIPE, text=True)
        assert saver.stdout.readline().strip()  # at least one save finished
        time.sleep(rng.uniform(0.0, 0.3))  # then die somewhere inside a later save
        saver.send_signal(signal.SIGKILL)
        saver.wait()
    folder = root / "7" / "crash"
    finished = {p.name.replace(".json", ".nii.gz") for p in folder.glob("v*.json")}
    leftovers = [p for p in folder.iterdir() if p.name.startswith(".") or (p.name.endswith(".nii.gz") and p.name not in finished)]
    assert leftovers  # some kill did land inside a save (a draft, or a version file without its sidecar)
    store = AnnotationStore(root)
    (listing,) = store.list(7)
    versions = [v["version"] for v in listing["versions"]]
    assert len(versions) >= 4 and versions == sorted(set(versions))
    for version in versions:  # every listed version is whole: its file loads and holds the full label map
        labels = np.asarray(load(store.file(7, "crash", version)).array)
        counts = {str(v): int(c) for v, c in zip(*np.unique(labels, return_counts=True)) if v}
        assert counts == EXPECTED == store.sidecar(7, "crash", version)["voxels"]
    # after the crashes, saving goes on with a new number above every one used
    saved = store.save(7, "crash", load(store.file(7, "crash", versions[-1])), "nifti", {})
    used = [int(p.name[1:5]) for p in folder.glob("v*.nii.gz")]
    assert saved["version"] == max(used) and saved["voxels"] == EXPECTED
