"""The Chroma backend against a real Chroma server that this module starts on loopback and stops."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakeencoder import fake_models  # noqa: F401  (the fixture)

from medfm.errors import MedfmError
from medfm.index import create_index, open_index
from medfm.models import EncoderInfo

pytest.importorskip("chromadb", reason="chromadb is not installed (test extra; scripts/setup.sh --test)")

INFO = EncoderInfo("model-a", 16, "a" * 64)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_chroma(folder: Path, port: int) -> subprocess.Popen:
    """A Chroma server on 127.0.0.1:``port`` keeping its data in ``folder/db``, once it accepts connections
    (skips the test if the command is missing or the server does not start)."""
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(chroma).exists():
        pytest.skip("the chroma server command is not installed")
    log = folder / "server.log"
    with open(log, "ab") as output:
        process = subprocess.Popen([chroma, "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(folder / "db")],
                                   stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_chroma(process)
                pytest.skip(f"the Chroma server did not start: {log.read_text()[-500:]}")
            time.sleep(0.2)


def stop_chroma(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = start_chroma(tmp_path_factory.mktemp("chroma"), port := _free_port())
    try:
        yield f"chroma://127.0.0.1:{port}"
    finally:
        stop_chroma(process)


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_same_interface_on_a_chroma_server(server):
    data = unit(np.random.default_rng(0).standard_normal((300, 16)))
    store = create_index(f"{server}/images", INFO)
    store.add(range(300), data, [{"path": f"/d/{i}.png", "modality": "ct" if i % 2 else "MR", "label": i % 3} for i in range(300)])

    query = data[11]
    scores = data @ query
    assert [h.id for h in store.search(query, 5, exact=True)] == list(np.argsort(-scores)[:5])
    approximate = store.search(query, 5)
    assert approximate[0].id == 11 and approximate[0].score == pytest.approx(1.0, abs=1e-4)
    assert approximate[0].to_dict()["path"] == "/d/11.png"

    allowed = [i for i in range(300) if i % 2 and i % 3 == 2]
    filtered = store.search(query, 4, where={"modality": "CT", "label": 2}, exact=True)
    assert [h.id for h in filtered] == [allowed[i] for i in np.argsort(-scores[allowed])[:4]]
    assert {h.id for h in store.search(query, 4, where={"modality": "CT", "label": 2})} == {h.id for h in filtered}

    store.delete([11])
    store.update([12], data[11:12], [{"path": "/moved.png"}])
    reopened = open_index(f"{server}/images")
    best = reopened.search(query, 1)[0]
    assert (best.id, best.metadata) == (12, {"path": "/moved.png"})
    assert len(reopened) == 299 and 11 not in reopened.ids()
    np.testing.assert_allclose(reopened.vectors([13, 12]), data[[13, 11]], atol=1e-6)


def test_chroma_refuses_another_model_and_unknown_collections(server):
    store = create_index(f"{server}/refuse", INFO)
    store.add([1], unit(np.ones((1, 16))), [{"path": "/x.png"}])
    with pytest.raises(MedfmError, match="built with model 'model-a'.*query uses 'model-b'"):
        open_index(f"{server}/refuse").check_model(EncoderInfo("model-b", 16, "c" * 64))
    with pytest.raises(MedfmError, match="no such index"):
        open_index(f"{server}/missing")
    with pytest.raises(MedfmError, match="already holds an index"):
        create_index(f"{server}/refuse", INFO)


def test_unreachable_server_is_one_line_error():
    with pytest.raises(MedfmError, match=f"cannot reach the Chroma server at 127.0.0.1:{(port := _free_port())}"):
        open_index(f"chroma://127.0.0.1:{port}/images")


def test_build_and_search_images_on_chroma(server, tmp_path):
    from fakeencoder import FakeEncoder

    from medfm.io import Image, save
    from medfm.tasks.search import build_index, search

    rng = np.random.default_rng(0)
    paths = [save(Image((rng.integers(0, 255, (16, 16)) // (1 + i % 2)).astype(np.uint8)), tmp_path / f"{i}.png") for i in range(6)]
    encoder = FakeEncoder()
    report = build_index(paths[:4], encoder, f"{server}/built")
    assert (report.added, report.skipped) == (4, 0)
    report = build_index(paths, encoder, f"{server}/built")  # resumes
    assert (report.added, report.skipped) == (2, 4)
    with open_index(f"{server}/built") as store:
        hits = search(store, encoder, image=paths[5], k=3)
        assert hits[0].path == str(paths[5].resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        with pytest.raises(MedfmError, match="query uses 'other'"):
            search(store, FakeEncoder("other"), text="bright")


@pytest.mark.usefixtures("fake_models")
def test_build_stops_in_one_line_when_the_server_dies_and_resumes_to_a_clean_runs_records(tmp_path, capsys, monkeypatch):
    from clitools import run_cli

    from medfm.io import Image, save
    from medfm.tasks import search as search_task

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = [str(save(Image(rng.integers(0, 255, (16, 16)).astype(np.uint8)), folder / f"patient-{i:02d}.png"))
              for i in range(40)]
    monkeypatch.setattr(search_task, "CHUNK", 8)  # 5 chunks, each written in its own request
    port = _free_port()
    address = f"chroma://127.0.0.1:{port}"

    def build(collection):
        return run_cli(["index", "build", *images, "--model", "fake-clip", "--index", f"{address}/{collection}", "--no-progress"],
                       capsys)

    process = start_chroma(tmp_path, port)
    try:
        embed_chunk, embedded = search_task.embed_chunk, []

        def embed_after_killing_the_server(encoder, chunk):
            if len(embedded) == 2:  # two chunks written: the server dies while the third is embedded
                process.send_signal(signal.SIGKILL)
                process.wait()
            embedded.append(chunk)
            return embed_chunk(encoder, chunk)

        monkeypatch.setattr(search_task, "embed_chunk", embed_after_killing_the_server)
        code, out, err = build("resumed")
        assert process.returncode == -signal.SIGKILL and len(embedded) == 3
        assert code == 2 and out == ""
        assert err.startswith(f"medfm: error: lost the Chroma server at 127.0.0.1:{port}: ") and err.count("\n") == 1, err
        assert "the build stopped with at least 16 of 40 images indexed: run the same command again" in err
        assert "Traceback" not in err and "patient" not in err

        monkeypatch.setattr(search_task, "embed_chunk", embed_chunk)
        process = start_chroma(tmp_path, port)  # the same data folder
        code, out, err = build("resumed")
        assert code == 0 and "24 added, 16 already indexed, 0 bad" in out, err
        code, out, err = build("clean")
        assert code == 0 and "40 added, 0 already indexed, 0 bad" in out, err

        with open_index(f"{address}/resumed") as resumed, open_index(f"{address}/clean") as clean:
            records = clean.records()
            ids = [i for i, _ in records]
            assert len(set(ids)) == 40 and {m["path"] for _, m in records} == {str(Path(p).resolve()) for p in images}
            assert resumed.records() == records and len(resumed) == 40
            np.testing.assert_array_equal(resumed.vectors(ids), clean.vectors(ids))
            # the server's search graph holds every vector, not only its record table
            for i, vector in zip(ids, clean.vectors(ids)):
                assert resumed.search(vector, 1)[0].id == i
    finally:
        stop_chroma(process)
