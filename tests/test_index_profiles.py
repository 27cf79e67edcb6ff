"""Index profiles and search expansion: the settings a large collection needs, chosen by name and kept on disk."""

import json

import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from test_search import write_images

from medfm.errors import MedfmError
from medfm.index import create_index, open_index
from medfm.index.local import PROFILES
from medfm.models import EncoderInfo

INFO = EncoderInfo("model-a", 16, "a" * 64)


def _vectors(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 16)).astype(np.float32)


def test_large_profile_is_recorded_and_reopens_with_its_settings(tmp_path):
    store = create_index(tmp_path / "ix", INFO, profile="large")
    store.add(range(50), _vectors(50), [{"dataset": "a"}] * 50)
    store.save()
    saved = json.loads((tmp_path / "ix" / "index.json").read_text())["settings"]
    assert saved == PROFILES["large"] and saved != PROFILES["default"]
    reopened = open_index(tmp_path / "ix")
    assert reopened.settings == PROFILES["large"]
    hits = reopened.search(_vectors(50)[7], k=1)
    assert hits[0].id == 7


def test_settings_beside_a_profile_override_it(tmp_path):
    store = create_index(tmp_path / "ix", INFO, profile="large", dtype="f32")
    assert store.settings == {**PROFILES["large"], "dtype": "f32"}


def test_unknown_profile_is_refused_with_the_choices(tmp_path):
    with pytest.raises(MedfmError, match="unknown index profile 'huge'; choose from default, large"):
        create_index(tmp_path / "ix", INFO, profile="huge")


def test_expansion_search_is_changed_without_rebuilding_and_kept(tmp_path):
    store = create_index(tmp_path / "ix", INFO)
    store.add(range(20), _vectors(20), [{}] * 20)
    store.set_expansion_search(200)
    store.save()
    reopened = open_index(tmp_path / "ix")
    assert reopened.settings["expansion_search"] == 200
    assert [hit.id for hit in reopened.search(_vectors(20)[3], k=1)] == [3]
    with pytest.raises(MedfmError, match="expansion_search must be a positive"):
        reopened.set_expansion_search(0)


@pytest.mark.usefixtures("fake_models")
def test_index_build_takes_the_profile_by_name(tmp_path, capsys):
    images = write_images(tmp_path / "images", count=3)
    index = tmp_path / "ix"
    code, out, err = run_cli(["index", "build", *map(str, images), "--model", "fake-clip", "--index", str(index),
                              "--profile", "large", "--no-progress"], capsys)
    assert code == 0 and "3 added" in out, err
    assert json.loads((index / "index.json").read_text())["settings"] == PROFILES["large"]
    code, _, err = run_cli(["index", "build", *map(str, images), "--model", "fake-clip", "--index",
                            str(tmp_path / "other"), "--profile", "huge", "--no-progress"], capsys)
    assert code == 2 and "unknown index profile 'huge'" in err
