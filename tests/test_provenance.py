"""Provenance: one frozen record, exact round trips through dicts and through every writer and ``medfm.load``."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from clitools import run_cli
from fakeencoder import fake_models  # noqa: F401  (the fixture)
from fakesegmenter import ThresholdSegmenter, fake_segmenter  # noqa: F401  (the fixture)

import medfm
from medfm.errors import MedfmError
from medfm.io.dicom import scan_dicom
from medfm.io.label_maps import save_segmentation
from medfm.io.synthetic import write_dicom_series
from medfm.models.segmenters import Prompt, Scribble
from medfm.provenance import PROVENANCE_VERSION, Provenance, pixels_id
from medfm.server.annotations import AnnotationStore
from medfm.server.sessions import SegmentationSession, interaction
from medfm.tasks.segment import propagate, segment

SHA = "ab" * 32


def full_record() -> Provenance:
    """A record with every field set, nested values included."""
    return Provenance(
        kind="generation", model="gen-small", weights_sha256=SHA, adapter="lora-kvasir", adapter_sha256="cd" * 32,
        inputs=("pixels-sha256:" + "0" * 64, "text-sha256:" + "1" * 64),
        prompts=[{"boxes": [[1.5, 2, 3, 4]], "label": 2, "label_name": "polyp", "mask_input": None}],
        structures=[{"label": 2, "label_name": "polyp", "planes": [{"slice_index": 0, "frame_index": 3, "score": 0.875}]}],
        parameters={"seed": 7, "steps": 20, "condition": "melanoma", "guidance": 1.5, "where": {"modality": "CT"}},
        synthetic=True,
    )


def test_dict_and_json_round_trips_are_exact_and_the_record_is_frozen():
    record = full_record()
    as_dict = record.to_dict()
    assert as_dict["provenance_version"] == PROVENANCE_VERSION and as_dict["parameters"]["where"] == {"modality": "CT"}
    assert json.loads(json.dumps(as_dict)) == as_dict  # strict JSON values only
    again = Provenance.from_dict(json.loads(json.dumps(as_dict)))
    assert again == record and again.to_dict() == as_dict and hash(again) == hash(record)
    assert Provenance.from_json(record.to_json()) == record
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.model = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        record.parameters["seed"] = 8  # type: ignore[index]
    with pytest.raises(TypeError):
        record.prompts[0]["label"] = 3  # type: ignore[index]


def test_numpy_values_become_plain_json_and_non_finite_scores_null():
    record = Provenance("segmentation", "m", None, structures=[{"planes": [{"score": np.float32(0.5)}, {"score": float("nan")}]}],
                        parameters={"size": np.int64(3), "shape": np.array([2, 3])})
    assert record.to_dict()["structures"][0]["planes"] == [{"score": 0.5}, {"score": None}]
    assert record.to_dict()["parameters"] == {"size": 3, "shape": [2, 3]}
    assert type(record.to_dict()["parameters"]["size"]) is int


@pytest.mark.parametrize("change,message", [
    ({"surprise": 1}, "unknown keys surprise"),
    ({"provenance_version": PROVENANCE_VERSION + 1}, "newer than this medfm reads"),
    ({"kind": "poem"}, "kind must be one of segmentation, classification"),
    ({"weights_sha256": "abc"}, "weights_sha256 must be 64 lower-case hex"),
    ({"adapter_sha256": None}, "adapter with its sha256, or neither"),
    ({"model": ""}, "needs the model's name"),
    ({"parameters": {"when": object()}}, "parameters.when must hold JSON values"),
])
def test_from_dict_refuses_what_it_cannot_read_whole(change, message):
    record = {**full_record().to_dict(), **change}
    with pytest.raises(MedfmError, match=message):
        Provenance.from_dict(record)
    without_created = {k: v for k, v in full_record().to_dict().items() if k != "created"}
    with pytest.raises(MedfmError, match="lacks created"):
        Provenance.from_dict(without_created)


def test_a_record_from_before_versioning_reads_as_a_segmentation():
    legacy = {"model": "medfm-interactive", "weights_sha256": SHA, "medfm_version": "0.1.0", "axis": "k",
              "prompts": [{"points": [[1, 2]]}], "structures": [{"label": 1, "label_name": None}]}
    record = Provenance.from_dict(legacy)
    assert (record.kind, record.model, record.medfm_version) == ("segmentation", "medfm-interactive", "0.1.0")
    assert record.parameters == {"axis": "k"} and record.to_dict()["prompts"] == [{"points": [[1, 2]]}]


@pytest.fixture
def photo() -> medfm.Image:
    pixels = np.zeros((60, 80), np.uint8)  # (rows, columns)
    pixels[20:40, 10:50] = 200
    return medfm.Image(pixels.T)


@pytest.fixture
def ball() -> medfm.Image:
    grid = np.mgrid[:24, :24, :12]
    return medfm.Image((sum((g - c) ** 2 for g, c in zip(grid, (12, 12, 6))) <= 25).astype(np.float32) * 100,
                       np.diag([0.7, 0.7, 1.5, 1]))


def test_png_label_map_and_plain_png_keep_the_record(photo, tmp_path):
    scribble = Scribble([(12.0, 25.0), (20.0, 25.0)], positive=True)
    labels = segment(photo, [Prompt(boxes=[(5, 15, 60, 45)], label=3, label_name="organ"),
                             Prompt(scribbles=[scribble], label=4)], ThresholdSegmenter())
    save_segmentation(labels, tmp_path / "labels.png")
    back = medfm.load(tmp_path / "labels.png")
    assert back.provenance == labels.provenance and back.provenance.prompts[0]["label_name"] == "organ"
    assert back.provenance.inputs == (pixels_id(photo.array),) and back.provenance.structures[1]["planes"][0]["score"] == 1.0
    medfm.save(back, tmp_path / "copy.png")  # the generic writer keeps it too: load → save loses nothing
    assert medfm.load(tmp_path / "copy.png").provenance == labels.provenance


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_label_map_keeps_the_record_and_stays_a_label_map(ball, tmp_path, suffix):
    import nibabel as nib

    labels = propagate(ball, ThresholdSegmenter(), {6: [Prompt(points=[(12, 12)], point_labels=[1], label_name="ball")]})
    save_segmentation(labels, tmp_path / f"seg{suffix}")
    back = medfm.load(tmp_path / f"seg{suffix}")
    assert back.provenance == labels.provenance and back.provenance.parameters["axis"] == "k"
    assert len(back.provenance.structures[0]["planes"]) > 3
    assert nib.load(tmp_path / f"seg{suffix}").header.get_intent()[0] == "label"
    assert np.array_equal(back.array, labels.array)
    medfm.save(back, tmp_path / f"copy{suffix}")
    assert medfm.load(tmp_path / f"copy{suffix}").provenance == labels.provenance


def test_writers_refuse_a_label_map_without_provenance_and_leave_nothing(ball, tmp_path):
    anonymous = ball.with_array((ball.array > 0).astype(np.uint8))
    assert anonymous.provenance is None
    for name in ("seg.nii.gz", "seg.png"):
        with pytest.raises(MedfmError, match=f"{name}: the label map has no provenance") as error:
            save_segmentation(anonymous, tmp_path / name)
        assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_generic_save_refuses_a_format_that_would_drop_the_record(photo, tmp_path, capsys):
    labels = segment(photo, [Prompt(boxes=[(5, 15, 60, 45)])], ThresholdSegmenter())
    for name in ("seg.jpg", "seg.tiff", "seg.nrrd"):
        with pytest.raises(MedfmError, match="cannot carry the image's provenance.*write .nii, .nii.gz, .png"):
            medfm.save(labels, tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    save_segmentation(labels, tmp_path / "seg.png")
    code, _, err = run_cli(["convert", str(tmp_path / "seg.png"), str(tmp_path / "seg.bmp")], capsys)
    assert code == 2 and "seg.bmp: bmp cannot carry the image's provenance" in err and not (tmp_path / "seg.bmp").exists()
    code, _, err = run_cli(["convert", str(tmp_path / "seg.png"), str(tmp_path / "seg.nii.gz")], capsys)
    assert code == 0, err
    code, out, err = run_cli(["info", str(tmp_path / "seg.nii.gz"), "--json"], capsys)
    assert code == 0 and json.loads(out)["provenance"] == labels.provenance.to_dict()


def test_dicom_seg_carries_the_whole_record_and_names_its_algorithm(tmp_path):
    stored = np.zeros((40, 32, 10), np.int16)  # (columns, rows, slices) as DICOM stores them
    stored[5:15, 3:9, 2:7] = 100
    write_dicom_series(stored, tmp_path / "ct")
    ct = medfm.load(tmp_path / "ct")
    (series,), _ = scan_dicom(sorted((tmp_path / "ct").iterdir()))
    i, j, k = np.argwhere(ct.array[..., 0, 0] > 50)[0]
    prompts = {int(k): [Prompt(points=[(float(i), float(j))], point_labels=[1], label=2, label_name="bright box")]}
    labels = propagate(ct, ThresholdSegmenter(), prompts)
    labels.provenance = dataclasses.replace(labels.provenance, adapter="tiny-adapter", adapter_sha256="ef" * 32)
    save_segmentation(labels, tmp_path / "seg.dcm", series)

    back = medfm.load(tmp_path / "seg.dcm")
    assert back.provenance == labels.provenance
    assert back.provenance.prompts[0]["points"] == ((float(i), float(j)),) and back.provenance.prompts[0]["slice_index"] == k
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    segment_description = seg.SegmentSequence[0]
    algorithm = segment_description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "fake-threshold" and algorithm.AlgorithmVersion == "0" * 64
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert "adapter_sha256=" + "ef" * 32 in algorithm.AlgorithmParameters
    assert segment_description.SegmentAlgorithmType == "SEMIAUTOMATIC" and segment_description.SegmentLabel == "bright box"


def test_dicom_seg_of_random_weights_is_versioned_by_medfm_and_never_unknown(tmp_path):
    write_dicom_series(np.full((16, 16, 3), 100, np.int16), tmp_path / "ct")
    ct = medfm.load(tmp_path / "ct")
    (series,), _ = scan_dicom(sorted((tmp_path / "ct").iterdir()))
    labels = ct.with_array((ct.array[..., 0] > 50).astype(np.uint8))
    with pytest.raises(MedfmError, match="seg.dcm: the label map has no provenance"):
        save_segmentation(labels, tmp_path / "seg.dcm", series)
    assert not (tmp_path / "seg.dcm").exists()
    labels.provenance = Provenance("segmentation", "auto-net", None)
    save_segmentation(labels, tmp_path / "seg.dcm", series)
    description = hd.seg.segread(tmp_path / "seg.dcm").SegmentSequence[0]
    algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "auto-net" and algorithm.AlgorithmVersion == f"medfm {medfm.__version__}"
    assert description.SegmentAlgorithmType == "AUTOMATIC"  # no prompt: nobody steered it
    assert medfm.load(tmp_path / "seg.dcm").provenance == labels.provenance


@pytest.mark.usefixtures("fake_segmenter")
def test_the_servers_saved_annotation_has_the_clis_record_layout(ball, tmp_path, capsys):
    medfm.save(ball, tmp_path / "ball.nii.gz")
    code, out, err = run_cli(["segment", str(tmp_path / "ball.nii.gz"), "--box", "6,6,18,18,6", "--model", "fake-threshold",
                              "-o", str(tmp_path / "cli.nii.gz"), "--json"], capsys)
    assert code == 0, err
    cli = json.loads(out)["provenance"]

    image = medfm.load(tmp_path / "ball.nii.gz")
    segmenter = ThresholdSegmenter()
    session = SegmentationSession(1, image)
    session.interact(segmenter, threading.RLock(), 6, 0, 1, interaction([], [], (6, 6, 18, 18), None))
    store = AnnotationStore(tmp_path / "annotations")
    saved = store.save(1, "ball", session.label_image(segmenter.info), "nifti", {"image_id": 1})
    server = store.sidecar(1, "ball", saved["version"])["provenance"]

    assert set(server) == set(cli) and server["provenance_version"] == cli["provenance_version"]
    same = ("kind", "model", "weights_sha256", "medfm_version", "inputs", "synthetic", "adapter", "adapter_sha256")
    assert {key: server[key] for key in same} == {key: cli[key] for key in same}
    assert set(server["prompts"][0]) == set(cli["prompts"][0]) and server["prompts"][0]["boxes"] == cli["prompts"][0]["boxes"]
    assert server["structures"][0]["planes"] == cli["structures"][0]["planes"] == [{"slice_index": 6, "frame_index": 0, "score": 1.0}]
    assert set(server["structures"][0]) == set(cli["structures"][0])
    saved_file = medfm.load(store.file(1, "ball", saved["version"]))
    assert saved_file.provenance.to_dict() == server  # the file and its sidecar say the same
    assert np.array_equal(saved_file.array, medfm.load(tmp_path / "cli.nii.gz").array)


@pytest.mark.usefixtures("fake_models")
def test_classification_and_search_results_carry_their_provenance(tmp_path):
    from medfm.index import open_or_create_index
    from medfm.models import create_encoder
    from medfm.tasks.classify import classify
    from medfm.tasks.embed import content_sha256
    from medfm.tasks.search import build_index, search

    bright = medfm.save(medfm.Image(np.full((24, 24), 230, np.uint8)), tmp_path / "bright.png")
    dark = medfm.save(medfm.Image(np.full((24, 24), 10, np.uint8)), tmp_path / "dark.png")
    encoder = create_encoder("fake-clip")
    build_index([bright, dark], encoder, tmp_path / "ix")
    with open_or_create_index(tmp_path / "ix", encoder.info) as index:
        results = classify([bright, dark], encoder, labels=["bright", "dark"], index=index, k=1)
        hits = search(index, encoder, text="a bright image", k=1)
        filtered = search(index, encoder, image=dark, k=1, where={"modality": "CT"}, exact=True)
    first, second = (result["provenance"] for result in results)
    assert first.kind == "classification" and first.model == "fake-clip" and first.weights_sha256 == encoder.info.weights_sha256
    assert first.inputs == (f"file-sha256:{content_sha256(bright)}",) and second.inputs == (f"file-sha256:{content_sha256(dark)}",)
    assert first.parameters["method"] == "zero-shot" and first.parameters["classes"] == ("bright", "dark")
    assert first.parameters["evidence"] == {"index": str(tmp_path / "ix"), "size": 2, "k": 1}
    assert [hit.path for hit in hits] == [str(bright.resolve())] and hits.provenance.kind == "search"
    assert hits.provenance.inputs[0].startswith("text-sha256:") and hits.provenance.model == "fake-clip"
    assert "bright" not in json.dumps(hits.provenance.to_dict())  # the query text itself is not recorded
    assert hits.provenance.parameters == {"index": str(tmp_path / "ix"), "size": 2, "k": 1, "where": {}, "exact": False,
                                            "abstain_below": None}
    assert filtered == [] and filtered.provenance.inputs == (f"file-sha256:{content_sha256(dark)}",)
    assert filtered.provenance.parameters["where"] == {"modality": "CT"} and filtered.provenance.parameters["exact"] is True


def test_the_record_module_sits_below_every_layer():
    """io (the lowest layer) imports it, so it imports nothing of medfm but its errors (and the version, lazily)."""
    import ast

    import medfm.provenance

    tree = ast.parse(Path(medfm.provenance.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medfm")}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names if alias.name.startswith("medfm")}
    assert imported == {"medfm.errors", "medfm"}


def test_older_and_foreign_nifti_comments(tmp_path):
    import nibabel as nib

    legacy = {"model": "medfm-interactive", "weights_sha256": SHA, "medfm_version": "0.1.0", "prompts": [], "structures": []}
    for name, comment in (("legacy.nii.gz", json.dumps(legacy)), ("foreign.nii.gz", "made by hand, see notes")):
        nifti = nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4))
        nifti.header.extensions.append(nib.nifti1.Nifti1Extension(6, comment.encode()))
        nib.save(nifti, tmp_path / name)
    assert medfm.load(tmp_path / "legacy.nii.gz").provenance.weights_sha256 == SHA
    assert medfm.load(tmp_path / "foreign.nii.gz").provenance is None


def test_a_damaged_seg_record_is_a_one_line_error_naming_the_series(tmp_path):
    import pydicom

    from medfm.io.dicom.provenance import PRIVATE_CREATOR, PRIVATE_GROUP

    write_dicom_series(np.full((16, 16, 3), 100, np.int16), tmp_path / "ct")
    ct = medfm.load(tmp_path / "ct")
    (series,), _ = scan_dicom(sorted((tmp_path / "ct").iterdir()))
    labels = ct.with_array((ct.array[..., 0] > 50).astype(np.uint8))
    labels.provenance = Provenance("segmentation", "auto-net", SHA)
    save_segmentation(labels, tmp_path / "seg.dcm", series)
    dataset = pydicom.dcmread(tmp_path / "seg.dcm")
    dataset.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x00].value = '{"provenance_version": 1, "kind": "segmentation"'
    dataset.save_as(tmp_path / "seg.dcm")
    with pytest.raises(MedfmError, match=r"series 1001.*provenance record is not valid JSON") as error:
        medfm.load(tmp_path / "seg.dcm")
    assert "\n" not in str(error.value)
