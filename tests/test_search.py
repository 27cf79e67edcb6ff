"""`medfm index build` and `medfm search` end to end, with a fake image-text encoder and generated images."""

import json

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture, used by every test below)

from medfm.catalog import ingest
from medfm.io import Image, save

pytestmark = pytest.mark.usefixtures("fake_models")


def write_images(folder, count=12):
    """PNGs of distinct random patterns: even ones bright, odd ones dark."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        base = 170 if i % 2 == 0 else 20
        pixels = (base + rng.integers(0, 60, (32, 32))).astype(np.uint8)
        paths.append(save(Image(pixels), folder / f"img{i:02d}.png"))
    return paths


@pytest.fixture
def images(tmp_path):
    return write_images(tmp_path / "images")


def test_build_from_paths_then_search_by_image_and_text(images, tmp_path, capsys):
    index = str(tmp_path / "ix")
    code, out, err = run_cli(["index", "build", *map(str, images[:5]), "--model", "fake-clip", "--index", index, "--no-progress"], capsys)
    assert code == 0, err
    assert "5 added, 0 already indexed" in out
    # resumable: a second run embeds only what is new; a folder of pictures gives each of them
    code, out, _ = run_cli(["index", "build", str(images[0].parent), "--model", "fake-clip", "--index", index, "--no-progress"], capsys)
    assert code == 0 and "7 added, 5 already indexed" in out

    code, out, err = run_cli(["search", "--index", index, "--image", str(images[3]), "-k", "4", "--json"], capsys)
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 4 and hits[0]["path"] == str(images[3].resolve())
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    # the nearest others are dark like the query
    assert all(int(h["path"][-6:-4]) % 2 == 1 for h in hits)

    code, out, _ = run_cli(["search", "--index", index, "--text", "a bright image", "-k", "3", "--json"], capsys)
    assert code == 0 and all(int(h["path"][-6:-4]) % 2 == 0 for h in json.loads(out))

    code, out, _ = run_cli(["search", "--index", index, "--text", "bright", "-k", "2"], capsys)
    assert code == 0 and len(out.splitlines()) == 2 and out.split()[0] == "1"


def test_build_from_catalog_keeps_ids_and_filters_on_metadata(images, tmp_path, capsys):
    catalog = str(tmp_path / "catalog.db")
    ingest(images[:6], catalog, dataset="train", progress=False)
    ingest(images[6:], catalog, dataset="test", progress=False)
    index = str(tmp_path / "ix")
    code, out, err = run_cli(["index", "build", catalog, "--model", "fake-clip", "--index", index, "--dtype", "f16", "--no-progress"], capsys)
    assert code == 0 and "12 added" in out, err
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["settings"]["dtype"] == "f16"
    code, out, _ = run_cli(["search", "--index", index, "--image", str(images[0]), "--where", "dataset=test", "--json"], capsys)
    hits = json.loads(out)
    assert len(hits) == 6 and {h["dataset"] for h in hits} == {"test"}
    assert {h["id"] for h in hits} == set(range(7, 13)) and all(h["modality"] for h in hits)
    code, _, err = run_cli(["search", "--index", index, "--image", str(images[0]), "--where", "dataset"], capsys)
    assert code == 2 and "where takes KEY=VALUE" in err


def test_bad_image_is_reported_and_the_rest_indexed(images, tmp_path, capsys):
    two_channels = save(Image(np.zeros((8, 8, 1, 1, 2), np.float32)), tmp_path / "two.npz")
    code, out, err = run_cli(["index", "build", str(images[0]), str(two_channels), "--model", "fake-clip",
                              "--index", str(tmp_path / "ix"), "--no-progress"], capsys)
    assert code == 2 and "1 added" in out
    assert "bad file:" in err and "two.npz" in err and "C = 1, 3 or 4" in err and len(err.splitlines()) == 1


def test_a_build_that_indexes_nothing_leaves_no_new_index(images, tmp_path, capsys):
    text = tmp_path / "text.png"
    text.write_text("not a picture")
    args = ["index", "build", str(text), "--model", "fake-clip", "--no-progress", "--index"]
    code, out, err = run_cli([*args, str(tmp_path / "ix")], capsys)
    assert code == 2 and "0 added" in out
    assert err == f"medfm: bad file: {text}: cannot read as png: not an image file Pillow can identify\n"
    assert not (tmp_path / "ix").exists()
    assert run_cli(["index", "build", str(images[0]), "--model", "fake-clip", "--index", str(tmp_path / "kept"),
                    "--no-progress"], capsys)[0] == 0
    assert run_cli([*args, str(tmp_path / "kept")], capsys)[0] == 2
    assert (tmp_path / "kept" / "index.json").exists()  # an index that was there stays, with what it held


def test_refusals_are_one_line_errors(images, tmp_path, capsys):
    index = tmp_path / "ix"
    assert run_cli(["index", "build", str(images[0]), "--model", "fake-clip", "--index", str(index), "--no-progress"], capsys)[0] == 0

    code, _, err = run_cli(["search", "--index", str(index), "--image", str(images[0]), "--model", "other-clip"], capsys)
    assert code == 2 and "built with model 'fake-clip'" in err and "query uses 'other-clip'" in err
    code, _, err = run_cli(["index", "build", str(images[1]), "--model", "other-clip", "--index", str(index), "--no-progress"], capsys)
    assert code == 2 and "built with model 'fake-clip'" in err
    code, _, err = run_cli(["index", "build", str(images[1]), "--model", "no-such-model", "--index", str(index)], capsys)
    assert code == 2 and "unknown model 'no-such-model'" in err
    code, _, err = run_cli(["search", "--index", str(index), "--image", str(images[0]), "--text", "x"], capsys)
    assert code == 2 and "exactly one query" in err

    vectors = next(index.glob("vectors-*.usearch"))
    raw = bytearray(vectors.read_bytes())
    raw[-5] ^= 0xFF
    vectors.write_bytes(bytes(raw))
    code, _, err = run_cli(["search", "--index", str(index), "--text", "bright"], capsys)
    assert code == 2 and "does not match the checksum" in err and len(err.splitlines()) == 1
