"""``medfm curate``: k-center greedy, prototype quotas and random choice on hand-made embeddings; the CLI
with an encoder and an index; one-line refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from PIL import Image as PILImage

from medfm.train.curate import cluster_quotas, kcenter_greedy, prototype_selection, select


def unit(rows):
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_kcenter_greedy_takes_the_farthest_point_each_time():
    # three near-duplicates around x, one point at y, one at -x
    embeddings = unit([[1, 0.01], [1, 0], [1, -0.01], [0, 1], [-1, 0]])
    assert kcenter_greedy(embeddings, 3, first=1) == [1, 4, 3]


def test_cluster_quotas_keep_small_clusters_whole_and_share_the_rest():
    assert cluster_quotas([2, 10, 10], 8) == [2, 3, 3]
    assert cluster_quotas([1, 1, 20], 12) == [1, 1, 10]
    assert sum(cluster_quotas([5, 7, 9], 21)) == 21


def test_prototypes_keep_the_rare_group_that_random_choice_tends_to_miss():
    rng = np.random.default_rng(0)
    common = unit(np.array([1.0, 0, 0]) + 0.05 * rng.standard_normal((60, 3)))
    rare = unit(np.array([0, 0, 1.0]) + 0.05 * rng.standard_normal((3, 3)))
    embeddings = np.vstack([common, rare])
    chosen, clusters = prototype_selection(embeddings, 6, n_prototypes=2)
    assert len(chosen) == 6 and len(set(chosen)) == 6
    assert {60, 61, 62} <= set(chosen)  # the rare cluster is kept whole
    assert len(set(clusters[:60])) == 1 and clusters[60] != clusters[0]


def test_select_random_is_seeded_and_of_the_right_size():
    embeddings = unit(np.random.default_rng(1).standard_normal((20, 4)))
    first, _ = select(embeddings, 0.25, "random", seed=3)
    assert len(first) == 5 and first == select(embeddings, 0.25, "random", seed=3)[0]


def _folder(tmp_path, count):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(count):
        shade = 230 if index % 3 else 20
        PILImage.fromarray(np.full((24, 24), shade, np.uint8) + np.uint8(index)).save(folder / f"im{index}.png")
    return folder


@pytest.mark.usefixtures("fake_models")
def test_cli_curates_a_manifest_keeping_its_columns(tmp_path, capsys):
    folder = _folder(tmp_path, 9)
    manifest = tmp_path / "data.csv"
    manifest.write_text("image,label\n" + "".join(f"images/im{i}.png,{'dark' if i % 3 == 0 else 'bright'}\n" for i in range(9)))
    (tmp_path / "out").mkdir()
    code, _, err = run_cli(["curate", str(manifest), "--embeddings", "fake-clip", "--fraction", "0.34", "--method", "kcenter",
                            "-o", str(tmp_path / "out" / "subset.csv")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out" / "subset.csv")))
    assert len(rows) == 3 and set(rows[0]) == {"image", "label"}
    assert all((tmp_path / "out" / row["image"]).resolve().parent == folder for row in rows)
    assert {row["label"] for row in rows} == {"dark", "bright"}  # k-center reaches both ends


@pytest.mark.usefixtures("fake_models")
def test_cli_curate_keeps_every_file_column_findable_from_the_new_manifest(tmp_path, capsys):
    folder = _folder(tmp_path, 6)
    (tmp_path / "masks").mkdir()
    for i in range(6):
        (tmp_path / "masks" / f"m{i}.png").write_bytes((folder / f"im{i}.png").read_bytes())
    manifest = tmp_path / "data.csv"
    manifest.write_text("image,mask,mask_rater2,label\n" + "".join(
        f"images/im{i}.png,masks/m{i}.png,{f'masks/m{i}.png' if i % 2 else ''},lesion\n" for i in range(6)))
    (tmp_path / "elsewhere").mkdir()
    out = tmp_path / "elsewhere" / "subset.csv"
    code, _, err = run_cli(["curate", str(manifest), "--embeddings", "fake-clip", "--fraction", "1", "-o", str(out)], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 6 and {row["label"] for row in rows} == {"lesion"}
    for row in rows:
        assert all((out.parent / row[c]).is_file() for c in ("image", "mask", "mask_rater2") if row[c])
    assert sum(1 for row in rows if row["mask_rater2"]) == 3


@pytest.mark.usefixtures("fake_models")
def test_cli_curates_from_an_index(tmp_path, capsys):
    folder = _folder(tmp_path, 6)
    code, _, err = run_cli(["index", "build", *map(str, sorted(folder.iterdir())), "--index", str(tmp_path / "index"), "--model", "fake-clip"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["curate", str(folder), "--embeddings", str(tmp_path / "index"), "--fraction", "0.5",
                            "-o", str(tmp_path / "subset.csv")], capsys)
    assert code == 0, err
    assert len(list(csv.DictReader(open(tmp_path / "subset.csv")))) == 3
    code, _, err = run_cli(["curate", str(folder), "--embeddings", str(tmp_path / "index"), "--model", "other-clip",
                            "--fraction", "0.5", "-o", str(tmp_path / "subset2.csv")], capsys)
    assert code == 2 and "was built with model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "subset2.csv").exists()


@pytest.mark.usefixtures("fake_models")
@pytest.mark.parametrize(("count", "fraction", "message"), [
    (4, "0", "--fraction must be in (0, 1]; got 0.0"),
    (4, "1.5", "--fraction must be in (0, 1]; got 1.5"),
    (1, "0.5", "curation needs at least 2 images; the data has 1"),
])
def test_cli_refuses_bad_fraction_and_tiny_data(tmp_path, capsys, count, fraction, message):
    folder = _folder(tmp_path, count)
    code, _, err = run_cli(["curate", str(folder), "--embeddings", "fake-clip", "--fraction", fraction,
                            "-o", str(tmp_path / "s.csv")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()
