"""The embedded index (usearch + SQLite): search against brute force, filters, updates, persistence, refusals."""

import json

import numpy as np
import pytest

from medfm.errors import MedfmError
from medfm.index import create_index, open_index, open_or_create_index
from medfm.index import local
from medfm.models import EncoderInfo

INFO = EncoderInfo("model-a", 16, "a" * 64)
MODALITIES = ("CT", "MR", "US")


def unit(rows):
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def metadata(i):
    return {"path": f"/data/{i}.png", "modality": MODALITIES[i % 3].lower(), "dataset": "a" if i < 300 else "b", "label": i % 2}


@pytest.fixture
def data():
    return unit(np.random.default_rng(0).standard_normal((600, 16)))


@pytest.fixture
def index(tmp_path, data):
    store = create_index(tmp_path / "ix", INFO)
    store.add(range(600), data, [metadata(i) for i in range(600)])
    store.save()
    yield store
    store.close()


def brute_force(data, query, ids, k):
    scores = data[ids] @ query
    order = np.argsort(-scores)[:k]
    return [int(ids[i]) for i in order], scores[order]


def test_exact_search_matches_brute_force(index, data):
    query = unit(np.random.default_rng(1).standard_normal((1, 16)))[0]
    hits = index.search(query, k=10, exact=True)
    expected, scores = brute_force(data, query, np.arange(600), 10)
    assert [h.id for h in hits] == expected
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)
    assert hits[0].path == f"/data/{expected[0]}.png"
    assert hits[0].to_dict()["score"] == pytest.approx(scores[0], abs=1e-5)


def test_approximate_search_finds_nearly_all_true_neighbours(index, data):
    queries = unit(np.random.default_rng(2).standard_normal((50, 16)))
    recall = np.mean([len({h.id for h in index.search(q, 10)} & set(brute_force(data, q, np.arange(600), 10)[0])) / 10
                      for q in queries])
    assert recall >= 0.95


def test_the_same_vectors_build_the_same_graph(tmp_path):
    """usearch's threads make a graph depend on their timing: a small batch is built on one thread, so a
    narrow graph, whose approximate searches differ from build to build otherwise, gives the same answers."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 32)).astype(np.float32)
    queries = vectors[:100] + 0.5 * rng.standard_normal((100, 32)).astype(np.float32)
    model = EncoderInfo("model-a", 32, "a" * 64)
    answers = []
    for name in ("first", "second"):
        store = create_index(tmp_path / name, model, connectivity=4, expansion_add=8, expansion_search=4)
        store.add(range(5000), vectors, [{"path": f"/d/{i}.png"} for i in range(5000)])
        answers.append([[hit.id for hit in store.search(query, 10)] for query in queries])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("exact_limit", [local.EXACT_FILTER_LIMIT, 0])
def test_filters_on_any_stored_key(index, data, monkeypatch, exact_limit):
    # exact_limit 0 forces the oversampled graph search path
    monkeypatch.setattr(local, "EXACT_FILTER_LIMIT", exact_limit)
    query = data[7]
    hits = index.search(query, k=5, where={"modality": "mr", "label": 1})
    allowed = np.array([i for i in range(600) if i % 3 == 1 and i % 2 == 1])
    assert [h.id for h in hits] == brute_force(data, query, allowed, 5)[0]
    assert all(h.metadata["modality"] == "MR" and h.metadata["label"] == "1" for h in hits)
    assert index.search(query, k=5, where={"dataset": "nope"}) == []
    assert {i for i, _ in index.records({"dataset": "b", "modality": "CT"})} == {i for i in range(300, 600) if i % 3 == 0}


def test_add_delete_update_by_id_survive_save_and_open(index, data, tmp_path):
    with pytest.raises(MedfmError, match="already holds id"):
        index.add([3], data[:1], [metadata(3)])
    index.delete([0, 1, 999])
    index.update([2], data[:1], [{"path": "/moved.png", "modality": "CT"}])
    with pytest.raises(MedfmError, match="has no id"):
        index.update([0], data[:1], [{"path": "x"}])
    index.save()
    again = open_index(tmp_path / "ix")
    assert len(again) == 598 and 0 not in again.ids() and 1 not in again.ids()
    best = again.search(data[0], k=1, exact=True)[0]
    assert (best.id, best.path, best.metadata.get("dataset")) == (2, "/moved.png", None)
    np.testing.assert_allclose(again.vectors([2, 5]), data[[0, 5]], atol=1e-6)


def test_only_the_current_generation_stays_on_disk(index, tmp_path):
    index.delete([5])
    index.save()
    names = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert len(names) == 3 and names[0] == "index.json"


def test_save_is_atomic(index, tmp_path, monkeypatch):
    index.delete(list(range(100)))

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(local, "atomic_path", fail)
    with pytest.raises(OSError):
        index.save()
    assert len(open_index(tmp_path / "ix")) == 600  # the previous state, whole


def test_a_disk_that_refuses_the_save_is_one_line_and_leaves_the_saved_index(index, tmp_path):
    import sqlite3

    index.delete(list(range(100)))
    before = sorted(p.name for p in (tmp_path / "ix").iterdir())

    class FullDisk:
        def backup(self, target):
            raise sqlite3.OperationalError("database or disk is full")

    index._db, db = FullDisk(), index._db
    with pytest.raises(MedfmError, match=r"ix: cannot save: database or disk is full$"):
        index.save()
    index._db = db
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == before  # no half-written generation
    assert len(open_index(tmp_path / "ix")) == 600


def test_queries_from_another_model_are_refused(index, tmp_path):
    for other in (EncoderInfo("model-b", 16, "a" * 64), EncoderInfo("model-a", 16, "b" * 64)):
        with pytest.raises(MedfmError, match="built with model 'model-a'.*the query uses") as error:
            index.check_model(other)
        assert other.name in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(MedfmError, match="built with model 'model-a'"):
        open_or_create_index(tmp_path / "ix", EncoderInfo("model-b", 16, "c" * 64))
    with pytest.raises(MedfmError, match="16-d vectors; the query has 8"):
        index.search(np.ones(8), 3)


def test_models_with_random_weights_cannot_store_vectors(index, tmp_path):
    random = EncoderInfo("model-a", 16, None)
    for attempt in (lambda: create_index(tmp_path / "new", random), lambda: index.check_model(random)):
        with pytest.raises(MedfmError, match="no identified weights.*give a checkpoint"):
            attempt()


@pytest.mark.parametrize("role", ["vectors", "metadata"])
def test_a_damaged_file_is_refused(index, tmp_path, role):
    folder = tmp_path / "ix"
    name = json.loads((folder / "index.json").read_text())["files"][role]["name"]
    raw = bytearray((folder / name).read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit: the file would still load, with wrong vectors
    (folder / name).write_bytes(bytes(raw))
    with pytest.raises(MedfmError, match=f"{name} does not match the checksum.*damaged"):
        open_index(folder)


def test_missing_or_broken_manifest_is_refused(index, tmp_path):
    folder = tmp_path / "ix"
    (folder / "index.json").write_text("{not json")
    with pytest.raises(MedfmError, match="index.json is damaged"):
        open_index(folder)
    with pytest.raises(MedfmError, match="is not a medfm index"):
        open_index(tmp_path / "elsewhere")


def test_bad_vectors_and_settings_are_refused(tmp_path):
    store = create_index(tmp_path / "f16", INFO, dtype="f16")
    with pytest.raises(MedfmError, match="16-d vectors"):
        store.add([1], np.ones((1, 8)), [{}])
    with pytest.raises(MedfmError, match="finite and non-zero"):
        store.add([1], np.zeros((1, 16)), [{}])
    with pytest.raises(MedfmError, match="dtype must be one of"):
        create_index(tmp_path / "x", INFO, dtype="f64")
    with pytest.raises(MedfmError, match="already holds an index"):
        create_index(tmp_path / "f16", INFO)
