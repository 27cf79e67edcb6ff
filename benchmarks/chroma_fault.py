"""The ``chroma-fault`` section of ``scale_bench.py``: ``index build`` on a Chroma server SIGKILLed at a random moment.

Each run starts ``chroma run`` on loopback with a fresh data folder, builds an index of ``--images``
generated images (chunks of 64, the fake test encoder: the writes, not the embedding, are under test)
and SIGKILLs the server 0.5–2.5 s in; then restarts it on the same folder and runs the same build again.
Reported per run: where the kill landed (the one-line error, or ``finished`` if the build beat it),
how many images the error said were indexed, how many the restarted server held, what the resumed
build added and skipped, and whether the index then holds every image once, with each sampled vector
its own nearest hit.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakeencoder import FakeEncoder


def start_server(chroma: str, port: int, folder: Path) -> subprocess.Popen:
    process = subprocess.Popen([chroma, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError("the Chroma server did not start")
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_chroma_fault(images: int, runs: int, seed: int = 0) -> dict:
    from medfm.errors import MedfmError
    from medfm.index import open_index
    from medfm.index.chroma import ChromaIndex
    from medfm.io import Image, save
    from medfm.tasks import search

    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    search.CHUNK = 64
    encoder, chance, results = FakeEncoder(), random.Random(seed), []
    with tempfile.TemporaryDirectory(prefix="medfm-chroma-fault-") as folder:
        rng = np.random.default_rng(seed)
        paths = [str(save(Image(rng.integers(0, 255, (16, 16)).astype(np.uint8)), Path(folder) / f"{i}.png"))
                 for i in range(images)]
        for run in range(runs):
            data, port = Path(folder) / f"db{run}", free_port()
            url = f"chroma://127.0.0.1:{port}/fault"
            server = start_server(chroma, port, data)
            delay = chance.uniform(0.5, 2.5)
            threading.Timer(delay, server.send_signal, (signal.SIGKILL,)).start()
            try:
                search.build_index(paths, encoder, url)
                stopped = "finished"
            except MedfmError as exc:
                stopped = str(exc)
            server.wait()
            server = start_server(chroma, port, data)
            try:
                held = len(open_index(url)) if ChromaIndex.exists(url) else 0
                report = search.build_index(paths, encoder, url)
                with open_index(url) as store:
                    ids = [i for i, _ in store.records()]
                    vectors = store.vectors(ids[::50])
                    own_hits = all(store.search(v, 1)[0].id == i for i, v in zip(ids[::50], vectors))
            finally:
                server.terminate()
                server.wait()
            results.append({"kill_after_s": round(delay, 2), "stopped": stopped, "held_after_restart": held,
                            "resumed_added": report.added, "resumed_skipped": report.skipped, "records": len(ids),
                            "distinct_ids": len(set(ids)), "sampled_vectors_own_nearest_hit": own_hits})
    return {"images": images, "chunk": 64, "runs": results,
            "all_complete": all(r["records"] == r["distinct_ids"] == images and r["sampled_vectors_own_nearest_hit"]
                                for r in results)}
