"""``medfm train seg`` and ``segment --auto`` on volumes and videos: the plan's 2D/3D choice, 3D training,
sliding-window inference to NIfTI and DICOM SEG, video frames as 2D samples."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clitools import run_cli
from segdata import sphere_volume, write_spheres, write_videos
from medfm.eval.seg_metrics import dice
from medfm.io.formats import load
from medfm.models.registry import create_auto_segmenter, list_auto_architectures
from medfm.train.seg import train_segmenter
from medfm.train.seg_data import fingerprint, read_cases
from medfm.train.seg_plan import make_plan

SMALL_3D = {"batch_size": "2", "patch_size": "[24, 24, 24]", "learning_rate": "0.01"}


@pytest.fixture(scope="module")
def spheres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_spheres(tmp_path_factory.mktemp("spheres"))


@pytest.fixture(scope="module")
def trained_3d(spheres: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("models") / "spheres-model"
    return out, train_segmenter(spheres, out, max_steps=30, plan_overrides=SMALL_3D)


def test_isotropic_volumes_get_a_3d_plan_at_their_median_spacing(spheres):
    print_, labels = fingerprint(read_cases(spheres), None)
    assert print_["kind"] == "volume" and print_["spacing_mm"]["median"] == [1.5, 1.5, 1.5]
    plan = make_plan(print_, labels)
    assert (plan.dims, plan.target_spacing, plan.patch_size) == (3, (1.5, 1.5, 1.5), (32, 32, 32))
    assert plan.batch_size == 16  # 2 x 64^3 voxels per batch, capped at 16 patches
    ct = make_plan({**print_, "modality": ["CT"]}, labels)
    assert ct.normalisation == "ct_clip" and ct.clip[0] < ct.clip[1]


def test_anisotropic_or_thin_volumes_are_trained_slice_by_slice(spheres):
    print_, labels = fingerprint(read_cases(spheres), None)
    thick = {**print_, "spacing_mm": {**print_["spacing_mm"], "median": [0.8, 0.8, 4.0]}}
    thin = {**print_, "shape": {**print_["shape"], "median": [32.0, 32.0, 6.0]}}
    for record in (thick, thin):
        plan = make_plan(record, labels)
        assert (plan.dims, plan.target_spacing, plan.patch_size) == (2, None, (32, 32))


def test_large_volumes_are_resampled_coarser_to_fit_the_cpu(spheres):
    print_, labels = fingerprint(read_cases(spheres), None)
    big = {**print_, "shape": {**print_["shape"], "median": [512.0, 512.0, 256.0]},
           "spacing_mm": {**print_["spacing_mm"], "median": [0.7, 0.7, 1.0]}}
    plan = make_plan(big, labels)
    assert plan.dims == 3 and plan.target_spacing == (2.8, 2.8, 4.0)  # 512 voxels -> 128
    assert plan.patch_size == (64, 64, 64) and plan.batch_size == 2


def test_3d_training_learns_the_spheres(trained_3d):
    out, summary = trained_3d
    plan = json.loads((out / "plan.json").read_text())
    assert plan["dims"] == 3 and plan["patch_size"] == [24, 24, 24]
    assert summary["loss_last_10"] < summary["loss_first_10"]
    # calling every voxel foreground scores about 0.2 on these spheres
    assert summary["validation"]["1"]["dice"]["value"] > 0.6
    assert json.loads((out / "fingerprint.json").read_text())["kind"] == "volume"
    assert "HD95 mm" in (out / "card.md").read_text()  # volumes carry their spacing


def test_auto_segment_of_a_volume_keeps_its_affine_and_matches_monai(trained_3d, tmp_path, capsys):
    from monai.inferers import sliding_window_inference

    from medfm.models.automatic.plan import normalise

    out, _ = trained_3d
    volume, mask = sphere_volume(np.random.default_rng(7), 32)
    affine = np.array([[0, -1.5, 0, 30], [1.5, 0, 0, -12], [0, 0, 1.5, 4], [0, 0, 0, 1]], float)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "new.nii.gz")
    code, stdout, stderr = run_cli(["segment", "--auto", "--model", str(out), str(tmp_path / "new.nii.gz"),
                                    "-o", str(tmp_path / "seg"), "--json"], capsys)
    assert code == 0, stderr
    written = load(tmp_path / "seg" / "new.nii.gz")
    assert np.allclose(written.affine, load(tmp_path / "new.nii.gz").affine) and written.shape == (32, 32, 32, 1, 1)
    labels = np.asarray(written.array[..., 0, 0])
    assert dice(labels > 0, mask > 0) > 0.6
    assert written.provenance.weights_sha256 == json.loads((out / "config.json").read_text())["weights"]["sha256"]
    assert written.provenance.parameters["plan"]["dims"] == 3
    segmenter = create_auto_segmenter(out)
    batch = __import__("torch").from_numpy(normalise(volume[None], segmenter.plan))[None]
    with __import__("torch").no_grad():
        logits = sliding_window_inference(batch, (24, 24, 24), 4, segmenter.network, overlap=0.25, mode="gaussian")
    assert np.array_equal(labels, logits.argmax(1)[0].numpy())


def test_auto_segment_of_a_dicom_series_writes_a_seg_referencing_it(trained_3d, tmp_path, capsys):
    from medfm.io.dicom import scan_dicom
    from medfm.io.dicom.seg import read_seg
    from medfm.io.synthetic import write_dicom_series

    out, _ = trained_3d
    volume, mask = sphere_volume(np.random.default_rng(3), 32)
    files = write_dicom_series(volume, tmp_path / "series", spacing=(1.5, 1.5, 1.5))
    code, _, stderr = run_cli(["segment", "--auto", "--model", str(out), str(tmp_path / "series"), "--suffix", ".dcm",
                               "-o", str(tmp_path / "seg")], capsys)
    assert code == 0, stderr
    seg_path = tmp_path / "seg" / "series.dcm"
    series = scan_dicom(files)[0][0]
    source = load(tmp_path / "series")
    labels = read_seg(seg_path, series, source)
    assert np.array_equal(source.array[..., 0, 0], volume[:, ::-1])  # the reader's j runs the other way
    assert labels.shape == source.spatial_shape and dice(labels > 0, mask[:, ::-1] > 0) > 0.6
    # read the record from the SEG itself: medfm.load stacks a SEG's frames as a volume, which a
    # prediction with a gap between its slices is not
    from pydicom import dcmread

    from medfm.io.dicom.provenance import provenance_text
    from medfm.provenance import Provenance

    record = Provenance.from_json(provenance_text(dcmread(seg_path)))
    assert record.model == "spheres-model" and record.parameters["plan"]["dims"] == 3


def test_video_frames_are_2d_samples_and_come_back_as_a_video(tmp_path, capsys):
    manifest = write_videos(tmp_path / "videos")
    print_, labels = fingerprint(read_cases(manifest), None)
    assert print_["kind"] == "video" and print_["shape"]["median"] == [32.0, 32.0]
    summary = train_segmenter(manifest, tmp_path / "model", max_steps=3, plan_overrides={"batch_size": "2"})
    assert summary["validation"]["1"]["images"] == 5  # the held-out video's frames
    code, _, stderr = run_cli(["segment", "--auto", "--model", str(tmp_path / "model"),
                               str(tmp_path / "videos" / "images" / "video0.nii.gz"), "-o", str(tmp_path / "seg")], capsys)
    assert code == 0, stderr
    assert load(tmp_path / "seg" / "video0.nii.gz").shape == (32, 32, 1, 5, 1)


def test_a_mask_on_another_grid_is_refused_naming_it(spheres, tmp_path, capsys):
    moved = tmp_path / "moved.nii.gz"
    original = nib.load(spheres.parent / "masks" / "case01.nii.gz")
    affine = original.affine.copy()
    affine[0, 3] += 3.0
    nib.save(nib.Nifti1Image(np.asarray(original.dataobj), affine), moved)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,mask\n{spheres.parent}/images/case00.nii.gz,{spheres.parent}/masks/case00.nii.gz\n"
                        f"{spheres.parent}/images/case01.nii.gz,{moved}\n")
    code, _, stderr = run_cli(["train", "seg", str(manifest), "-o", str(tmp_path / "model")], capsys)
    assert code == 2 and "moved.nii.gz: mask geometry" in stderr and "origin [-17.0" in stderr, stderr
    assert len(stderr.strip().splitlines()) <= 2 and "Traceback" not in stderr
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", sorted(name for name, config in list_auto_architectures().items()
                                         if 3 in config.get("dims", [2, 3])))
def test_every_volumetric_architecture_trains_on_volumes(name, spheres, tmp_path):
    summary = train_segmenter(spheres, tmp_path / name, architecture=name, max_steps=2,
                              plan_overrides={"batch_size": "1", "patch_size": "[16, 16, 16]"})
    assert summary["steps"] == 2
    segmenter = create_auto_segmenter(tmp_path / name)
    assert segmenter.plan.dims == 3 and segmenter.config["architecture"] == name
