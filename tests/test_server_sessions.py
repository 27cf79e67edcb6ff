"""Segmentation sessions without HTTP: video propagation, independence, expiry."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from medfm.io import Image
from medfm.models.registry import create_segmenter
from medfm.server.sessions import SegmentationSession, SessionNotFound, SessionStore, interaction
from servertools import disc_volume


@pytest.fixture(scope="module")
def segmenter():
    return create_segmenter("medfm-interactive")


def test_propagation_along_frames_of_a_video(segmenter):
    video = Image(disc_volume(slices=5)[:, :, None, :])  # (I, J, 1, T): five frames
    session = SegmentationSession(1, video)
    lock = threading.RLock()
    session.interact(segmenter, lock, 0, 2, 1, interaction([(24, 24)], [1], None, None))
    assert session.propagate(segmenter, lock, 1, "t") == (0, 2)
    assert all(session.labels[24, 24, 0, t] == 1 for t in range(5))
    session.undo()
    assert session.labels[:, :, 0, [0, 1, 3, 4]].sum() == 0 and session.labels[24, 24, 0, 2] == 1


def test_scribbles_and_boxes_refine_one_structure_and_labels_do_not_mix(segmenter):
    session = SegmentationSession(1, Image(disc_volume(slices=1)))
    lock = threading.RLock()
    session.interact(segmenter, lock, 0, 0, 1, interaction([], [], (12, 12, 36, 36), None))
    session.interact(segmenter, lock, 0, 0, 2, interaction([], [], None, ([(2, 2), (8, 2)], True)))
    plane = session.plane(0, 0)
    assert plane[24, 24] == 1 and set(np.unique(plane)) <= {0, 1, 2}
    record = session.label_image(segmenter.info).provenance
    assert [p["label"] for p in record.prompts] == [1, 2] and record.model == "medfm-interactive"


def test_sessions_are_independent_and_expire_when_idle():
    image = Image(np.zeros((8, 8, 1)))
    store = SessionStore(idle_seconds=0.05, max_bytes=2**30)
    first, second = (store.add(SegmentationSession(1, image)) for _ in range(2))
    assert first.id != second.id and first.labels is not second.labels
    assert store.get(first.id) is first
    time.sleep(0.1)
    with pytest.raises(SessionNotFound, match="expired"):
        store.get(second.id)


def test_a_session_hashes_its_image_once_however_often_it_propagates(segmenter, monkeypatch) -> None:
    import medfm.server.sessions as sessions_module

    calls = []
    real = sessions_module.pixels_id
    monkeypatch.setattr(sessions_module, "pixels_id", lambda array: calls.append(array.shape) or real(array))
    session = SegmentationSession(1, Image(disc_volume(slices=5)))
    lock = threading.RLock()
    session.interact(segmenter, lock, 2, 0, 1, interaction([(24, 24)], [1], None, None))
    for _ in range(3):
        session.propagate(segmenter, lock, 1, "k")
    assert session.label_image(segmenter.info).provenance.inputs == (real(session.image.array),)
    assert len(calls) == 1
