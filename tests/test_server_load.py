"""50 concurrent clients on a real ``medfm serve``: every save becomes its own intact version."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liveserver import start_server
from medfm.io import load
from serverload import ANNOTATION, drive
from servertools import make_data

CLIENTS = 50


def test_fifty_concurrent_clients_lose_no_version(tmp_path):
    data = make_data(tmp_path / "data")
    image_ids = [data["disc"], data["ct"], data["photo"]]
    with start_server(tmp_path / "data") as server:
        runs, seconds = drive(server.url, server.headers, image_ids, clients=CLIENTS, clicks=5)
    assert [run.error for run in runs if run.error] == []
    assert seconds < 60
    for image_id in image_ids:
        mine = [run for run in runs if run.image_id == image_id]
        folder = Path(server.data_dir, "annotations", str(image_id), ANNOTATION)
        versions = sorted(int(p.name[1:5]) for p in folder.glob("v*.json"))
        assert versions == list(range(1, len(mine) + 1))  # one version per client, none lost or doubled
        for run in mine:
            version = run.saved["version"]
            labels = np.asarray(load(folder / f"v{version:04d}.nii.gz").array)
            assert int((labels == 1).sum()) == run.saved["voxels"]["1"] > 0  # the mask this client drew
