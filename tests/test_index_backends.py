"""The server backends behind the same Index interface: a real Chroma server that this module starts on
loopback and stops, and milvus-lite (Milvus embedded in this process, data in a temporary folder)."""

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.index import create_index, open_index
from medfm.models import EncoderInfo
from medfm.scale import LocalRunner
from fakeencoder import fake_models  # noqa: F401  (the fixture)

INFO = EncoderInfo("model-a", 16, "a" * 64)
BACKENDS = ["chroma", "milvus-lite"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_chroma(folder: Path, port: int) -> subprocess.Popen:
    """A Chroma server on 127.0.0.1:``port`` keeping its data in ``folder/db``, once it accepts connections
    (skips the test if chromadb or its command is missing, or the server does not start)."""
    pytest.importorskip("chromadb", reason="chromadb is not installed (test extra; scripts/setup.sh --test)")
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
def chroma_server(tmp_path_factory):
    process = start_chroma(tmp_path_factory.mktemp("chroma"), port := _free_port())
    try:
        yield f"chroma://127.0.0.1:{port}"
    finally:
        stop_chroma(process)


@pytest.fixture(scope="module")
def milvus_lite(tmp_path_factory):
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (milvus extra; scripts/setup.sh)")
    pytest.importorskip("milvus_lite", reason="milvus-lite is not installed (milvus extra; scripts/setup.sh)")
    return str(tmp_path_factory.mktemp("milvus") / "store.db")


@pytest.fixture(params=BACKENDS)
def server(request):
    """Where collections go: ``PREFIX/NAME`` is an index location of the backend."""
    return request.getfixturevalue("chroma_server" if request.param == "chroma" else "milvus_lite")


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_same_interface_on_a_server(server):
    data = unit(np.random.default_rng(0).standard_normal((300, 16)))
    store = create_index(f"{server}/images", INFO)
    store.add(range(300), data, [{"path": f"/d/{i}.png", "modality": "ct" if i % 2 else "MR", "label": i % 3} for i in range(300)])
    assert len(store) == 300 and store.ids() == set(range(300))

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
    assert all(h.metadata == {"path": f"/d/{h.id}.png", "modality": "CT", "label": "2"} for h in filtered)
    assert [i for i, _ in store.records({"modality": "ct", "label": "2"})] == allowed
    assert store.search(query, 4, where={"modality": "US"}) == []

    with pytest.raises(MedfmError, match="already holds id"):
        store.add([3], data[:1], [{"path": "/again.png"}])
    with pytest.raises(MedfmError, match="has no id"):
        store.update([1000], data[:1], [{"path": "/new.png"}])
    store.delete([11, 5000])
    store.update([12], data[11:12], [{"path": "/moved.png"}])
    store.save()
    store.close()
    reopened = open_index(f"{server}/images")
    best = reopened.search(query, 1)[0]
    assert (best.id, best.metadata) == (12, {"path": "/moved.png"})
    assert len(reopened) == 299 and 11 not in reopened.ids()
    np.testing.assert_allclose(reopened.vectors([13, 12]), data[[13, 11]], atol=1e-6)
    with pytest.raises(MedfmError, match="has no id.*11"):
        reopened.vectors([13, 11])


def test_the_graph_is_the_large_profiles_and_expansion_search_changes_the_server_side(server):
    """Both servers build the embedded ``large`` profile's graph (their own defaults lose recall at scale)
    and take the number of candidates a search examines, as the embedded index does."""
    data = unit(np.random.default_rng(5).standard_normal((300, 16)))
    assert create_index(f"{server}/empty", INFO).search(data[0], 5) == []  # searched without counting first
    store = create_index(f"{server}/graph", INFO)
    store.add(range(300), data, [{"path": f"/d/{i}.png"} for i in range(300)])
    with pytest.raises(MedfmError, match="positive number of candidates, got 0"):
        store.set_expansion_search(0)
    store.set_expansion_search(40)
    exact = [h.id for h in store.search(data[7], 10, exact=True)]
    assert [h.id for h in store.search(data[7], 10)] == exact
    if server.startswith("chroma://"):
        import chromadb
        from chromadb.config import Settings

        address = urlsplit(server)
        client = chromadb.HttpClient(host=address.hostname, port=address.port, settings=Settings(anonymized_telemetry=False))
        graph = client.get_collection("graph", embedding_function=None).configuration["hnsw"]
        assert (graph["space"], graph["max_neighbors"], graph["ef_construction"], graph["ef_search"]) == ("cosine", 32, 128, 40)
    else:
        assert store.expansion_search == 40


def test_search_equals_the_embedded_exact_search(server, tmp_path):
    data = unit(np.random.default_rng(3).standard_normal((200, 16)))
    metadata = [{"path": f"/d/{i}.png", "dataset": "a" if i < 120 else "b", "modality": ("CT", "MR")[i % 2]} for i in range(200)]
    embedded = create_index(tmp_path / "local", INFO)
    remote = create_index(f"{server}/same", INFO)
    for store in (embedded, remote):
        store.add(range(200), data, metadata)
    for query in unit(np.random.default_rng(4).standard_normal((5, 16))):
        for where in (None, {"dataset": "b"}, {"dataset": "a", "modality": "mr"}):
            truth = [(h.id, h.metadata) for h in embedded.search(query, 10, where=where, exact=True)]
            assert [(h.id, h.metadata) for h in remote.search(query, 10, where=where)] == truth
            assert [(h.id, h.metadata) for h in remote.search(query, 10, where=where, exact=True)] == truth


def test_chroma_takes_more_ids_than_one_sqlite_statement_holds(chroma_server):
    """The server looks ids up in one SQLite statement of at most 32,766 variables; an index build adds 50,000 at once."""
    count = 33_000
    data = unit(np.random.default_rng(6).standard_normal((count, 16)))
    store = create_index(f"{chroma_server}/many", INFO)
    store.add(range(count), data, [{"path": f"/d/{i}.png"} for i in range(count)])
    with pytest.raises(MedfmError, match="already holds id"):
        store.add(range(count), data, [{"path": "/again.png"}] * count)
    np.testing.assert_allclose(store.vectors(range(count)), data, atol=1e-6)
    store.delete(range(count))
    assert len(store) == 0


def test_refuses_another_model_and_unknown_collections(server):
    store = create_index(f"{server}/refuse", INFO)
    store.add([1], unit(np.ones((1, 16))), [{"path": "/x.png"}])
    with pytest.raises(MedfmError, match="built with model 'model-a'.*query uses 'model-b'"):
        open_index(f"{server}/refuse").check_model(EncoderInfo("model-b", 16, "c" * 64))
    with pytest.raises(MedfmError, match="no such index"):
        open_index(f"{server}/missing")
    with pytest.raises(MedfmError, match="already holds an index"):
        create_index(f"{server}/refuse", INFO)


def test_a_chroma_address_that_never_answers_is_refused_after_the_timeout(monkeypatch):
    pytest.importorskip("chromadb")
    monkeypatch.setenv("MEDFM_INDEX_TIMEOUT_S", "0.5")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(MedfmError, match=rf"^the Chroma server at 127.0.0.1:{port} did not answer within 0.5 s "
                                             r"\(MEDFM_INDEX_TIMEOUT_S\)$"):
            open_index(f"chroma://127.0.0.1:{port}/images")


def test_a_milvus_address_that_never_answers_is_refused_within_the_timeout_not_pymilvus_default(monkeypatch):
    pytest.importorskip("pymilvus")
    monkeypatch.setenv("MEDFM_INDEX_TIMEOUT_S", "0.5")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(MedfmError, match=f"^cannot reach the Milvus server at 127.0.0.1:{port}: "):
            open_index(f"http://127.0.0.1:{port}/images")
        assert time.monotonic() - started < 5  # pymilvus alone waits 10 s for a server that never answers


@pytest.mark.parametrize("scheme, engine", [("chroma", "Chroma"), ("http", "Milvus")])
def test_unreachable_server_is_one_line_error(scheme, engine):
    pytest.importorskip("chromadb" if scheme == "chroma" else "pymilvus")
    with pytest.raises(MedfmError, match=f"cannot reach the {engine} server at 127.0.0.1:{(port := _free_port())}"):
        open_index(f"{scheme}://127.0.0.1:{port}/images")


class _Interrupted(Exception):
    pass


class _AfterChunks(LocalRunner):
    """A local build that calls ``then`` once ``chunks`` chunks are written."""

    def __init__(self, model, chunks, then):
        super().__init__(model)
        self.chunks = chunks
        self.then = then

    def map(self, work, payloads):
        for done, result in enumerate(super().map(work, payloads)):
            if done == self.chunks:
                self.then()
            yield result


def _die():
    raise _Interrupted


def _images(folder, count):
    from medfm.io import Image, save

    rng = np.random.default_rng(0)
    return [save(Image((rng.integers(0, 255, (16, 16)) // (1 + i % 2)).astype(np.uint8)), folder / f"{i}.png") for i in range(count)]


def test_build_resumes_and_searches_images(server, tmp_path, monkeypatch):
    from fakeencoder import FakeEncoder

    from medfm.tasks import search as search_task
    from medfm.tasks.search import build_index, search

    paths = _images(tmp_path, 8)
    encoder = FakeEncoder()
    location = f"{server}/built"
    monkeypatch.setattr(search_task, "CHUNK", 2)
    with pytest.raises(_Interrupted):
        build_index(paths[:6], encoder, location, runner=_AfterChunks(encoder, 2, _die))
    with open_index(location) as store:
        assert len(store) == 4  # the chunks written before the interruption
    report = build_index(paths[:6], encoder, location)
    assert (report.added, report.skipped) == (2, 4)
    report = build_index(paths, encoder, location)
    assert (report.added, report.skipped) == (2, 6)
    with open_index(location) as store:
        assert len(store) == 8 and len(store.ids()) == 8
        hits = search(store, encoder, image=paths[5], k=3)
        assert hits[0].path == str(paths[5].resolve()) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        with pytest.raises(MedfmError, match="query uses 'other'"):
            search(store, FakeEncoder("other"), text="bright")


def test_build_that_adds_nothing_leaves_no_collection(server, tmp_path):
    from fakeencoder import FakeEncoder

    from medfm.tasks.search import build_index

    (tmp_path / "text.png").write_text("not a picture")
    report = build_index([tmp_path / "text.png"], FakeEncoder(), f"{server}/nothing")
    assert report.added == 0 and len(report.bad) == 1
    with pytest.raises(MedfmError, match="no such index"):
        open_index(f"{server}/nothing")


def test_milvus_lite_gone_mid_build_is_one_line_and_the_build_resumes(milvus_lite, tmp_path, monkeypatch, capfd):
    from fakeencoder import FakeEncoder
    from milvus_lite.server_manager import server_manager_instance

    from medfm.tasks import search as search_task
    from medfm.tasks.search import build_index

    paths = _images(tmp_path, 6)
    encoder = FakeEncoder()
    store = str(tmp_path / "gone.db")
    monkeypatch.setattr(search_task, "CHUNK", 2)
    with pytest.raises(MedfmError, match=r"^Milvus index .*gone\.db/built: ") as error:
        build_index(paths, encoder, f"{store}/built", runner=_AfterChunks(encoder, 2, lambda: server_manager_instance.release_server(store)))
    assert "\n" not in str(error.value) and "Traceback" not in capfd.readouterr().err
    report = build_index(paths, encoder, f"{store}/built")  # milvus-lite starts again from its log
    assert (report.added, report.skipped) == (2, 4)
    with open_index(f"{store}/built") as index:
        assert len(index) == 6


def test_milvus_lite_that_hangs_mid_build_is_one_line_within_the_timeout_and_the_build_resumes(milvus_lite, tmp_path,
                                                                                                monkeypatch, capfd):
    """The server stops answering (its third insert takes 3 s) with its connection open: only the request
    timeout ends the wait, as pymilvus leaves a transport error raw."""
    import time

    from fakeencoder import FakeEncoder
    from milvus_lite.adapter.grpc.servicer import MilvusServicer

    from medfm.index import IndexUnavailableError
    from medfm.tasks import search as search_task
    from medfm.tasks.search import build_index

    paths = _images(tmp_path, 6)
    encoder = FakeEncoder()
    location = f"{tmp_path / 'hang.db'}/built"
    monkeypatch.setattr(search_task, "CHUNK", 2)
    monkeypatch.setenv("MEDFM_INDEX_TIMEOUT_S", "1")
    insert, inserts = MilvusServicer.Insert, []

    def slow_after_two(self, request, context):
        inserts.append(request)
        if len(inserts) > 2:
            time.sleep(3)
        return insert(self, request, context)

    monkeypatch.setattr(MilvusServicer, "Insert", slow_after_two)
    started = time.monotonic()
    with pytest.raises(IndexUnavailableError) as error:
        build_index(paths, encoder, location)
    assert time.monotonic() - started < 2.5 and len(inserts) == 3
    assert str(error.value) == (f"Milvus index {location}: the server did not answer within 1 s (MEDFM_INDEX_TIMEOUT_S); the "
                                "build stopped with at least 4 of 6 images indexed: run the same command again once the server "
                                "is back to index the rest")
    assert "Traceback" not in capfd.readouterr().err
    monkeypatch.setattr(MilvusServicer, "Insert", insert)
    time.sleep(2.5)  # the hung insert finishes on the server: the re-run must not write it twice
    report = build_index(paths, encoder, location)
    assert report.added + report.skipped == 6 and report.skipped >= 4
    with open_index(location) as index:
        assert len(index) == 6 and sorted(index.ids()) == sorted(set(index.ids()))


def test_milvus_locations_are_checked(tmp_path, monkeypatch):
    with pytest.raises(MedfmError, match="must look like PATH.db/COLLECTION"):
        open_index(tmp_path / "store.db")
    with pytest.raises(MedfmError, match="must look like http://HOST:PORT/COLLECTION"):
        open_index("http://127.0.0.1:19530")
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # as if the milvus extra were not installed
    with pytest.raises(MedfmError, match=r"pip install 'medfm\[milvus\]'"):
        create_index(tmp_path / "store.db" / "images", INFO)


@pytest.mark.usefixtures("fake_models")
@pytest.mark.parametrize("failure", ["dies", "hangs"])
def test_build_stops_in_one_line_when_the_chroma_server_fails_and_resumes_to_a_clean_runs_records(failure, tmp_path, capsys,
                                                                                                 monkeypatch):
    """The server is SIGKILLed (dies), or SIGSTOPped (hangs with its connections open: only the request
    timeout ends the wait) while the third of five chunks is embedded."""
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

        def embed_after_failing_the_server(encoder, chunk):
            if len(embedded) == 2:  # two chunks written
                if failure == "dies":
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                else:
                    process.send_signal(signal.SIGSTOP)
            embedded.append(chunk)
            return embed_chunk(encoder, chunk)

        monkeypatch.setattr(search_task, "embed_chunk", embed_after_failing_the_server)
        monkeypatch.setenv("MEDFM_INDEX_TIMEOUT_S", "2")
        code, out, err = build("resumed")
        assert len(embedded) == 3 and code == 2 and out == ""
        if failure == "dies":
            assert process.returncode == -signal.SIGKILL
            assert err.startswith(f"medfm: error: lost the Chroma server at 127.0.0.1:{port}: "), err
        else:
            assert process.poll() is None  # still there, stopped
            assert err.startswith(f"medfm: error: the Chroma server at 127.0.0.1:{port} did not answer within 2 s "
                                  "(MEDFM_INDEX_TIMEOUT_S)"), err
        assert err.count("\n") == 1, err
        assert "the build stopped with at least 16 of 40 images indexed: run the same command again" in err
        assert "Traceback" not in err and "patient" not in err

        monkeypatch.setattr(search_task, "embed_chunk", embed_chunk)
        if failure == "dies":
            process = start_chroma(tmp_path, port)  # the same data folder
        else:
            process.send_signal(signal.SIGCONT)
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
