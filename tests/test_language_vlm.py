"""Questions and drafts by a local vision-language model: pictures chosen and windowed by medfm, prompts, CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import run_cli
from fakeencoder import FakeEncoder, fake_models  # noqa: F401  (the fixture)
from tinyvlms import tiny_model

from medfm.errors import MedfmError
from medfm.io import Image, load, save
from medfm.io.synthetic import write_dicom_series
from medfm.models.encoders.planes import to_rgb_uint8
from medfm.models.language import LanguageModel, LanguageModelInfo
from medfm.models.registry import create_language_model
from medfm.provenance import pixels_id
from medfm.tasks.search import build_index
from medfm.tasks.vlm import REPORT_INSTRUCTION, ask_model, draft_report_with_model, model_pictures

PATIENT = "Doe^Jane"
CAPTION = "Normal brain without hemorrhage on 03/04/2011."


class RecordingModel(LanguageModel):
    """Answers with a fixed text and keeps what it was given."""

    def __init__(self, max_images: int = 4) -> None:
        self.info = LanguageModelInfo("recorder", "gemma3", "0" * 64, max_images)
        self.calls: list[tuple[list[np.ndarray], str]] = []

    def stream(self, images: Sequence[np.ndarray], prompt: str, *, max_new_tokens: int = 8) -> Iterator[str]:
        self.check_request(images, prompt, max_new_tokens)
        self.calls.append((list(images), prompt))
        yield from ("No ", "acute ", "finding.")


@pytest.fixture
def ct_series(tmp_path: Path) -> Path:
    """A 20-slice CT series (HU rising from -1000 on the first slice to 1000 on the last, plus a
    0–230 ramp along the columns) in a folder named like a patient."""
    volume = np.linspace(-1000, 1000, 20)[None, None, :] + 10 * np.arange(24)[:, None, None] + np.zeros((1, 20, 1))
    volume = volume.astype(np.int16)
    folder = tmp_path / PATIENT
    write_dicom_series(volume, folder)
    return folder


def test_volume_slices_are_chosen_evenly_and_windowed_by_the_modality(ct_series: Path) -> None:
    image = load(ct_series)
    pictures, record = model_pictures(image, 8)
    assert [p["slice_index"] for p in record["planes"]] == [1, 3, 6, 8, 11, 13, 16, 18]
    assert record["window"] == {"center": 40.0, "width": 400.0, "source": "preset"}
    np.testing.assert_array_equal(pictures[2], to_rgb_uint8(image.frame(6), (-160.0, 240.0)))
    assert pictures[0].max() == 0 and pictures[-1].min() == 255  # air black, bone white at the CT window
    assert [p["slice_index"] for p in model_pictures(image, 1)[1]["planes"]] == [10]
    assert len(model_pictures(image, 50)[0]) == 20


def test_video_frames_and_colour_photos(tmp_path: Path) -> None:
    video = Image(np.random.default_rng(0).integers(0, 255, (16, 12, 1, 9, 3)).astype(np.uint8))
    pictures, record = model_pictures(video, 3)
    assert [(p["slice_index"], p["frame_index"]) for p in record["planes"]] == [(0, 1), (0, 4), (0, 7)]
    assert record["window"] is None
    np.testing.assert_array_equal(pictures[1], video.frame(0, 4))
    with pytest.raises(MedfmError, match="at least one picture"):
        model_pictures(video, 0)


def test_ask_model_shares_the_image_limit_and_records_the_choice(ct_series: Path, tmp_path: Path) -> None:
    photo = save(Image(np.full((10, 8, 1, 1, 3), 90, np.uint8)), tmp_path / "photo.png")
    model = RecordingModel(max_images=4)
    result = ask_model([ct_series, photo], "Is there a fracture?", model)
    assert result["answer"] == "No acute finding."
    pictures, prompt = model.calls[0]
    assert len(pictures) == 3 and prompt == "Is there a fracture?"  # 2 slices of the series, the photo's one plane
    assert [p["slice_index"] for p in result["pictures"][0]["planes"]] == [5, 15]
    provenance = result["provenance"]
    assert provenance.kind == "report" and provenance.model == "recorder"
    assert provenance.inputs[0] == pixels_id(load(ct_series).array)
    assert provenance.parameters["pictures"][0]["window"]["source"] == "preset"
    assert PATIENT not in json.dumps(provenance.to_dict())
    with pytest.raises(MedfmError, match="at most 1 image"):
        ask_model([ct_series, photo], "Is there a fracture?", RecordingModel(max_images=1))


@pytest.fixture
def captioned(tmp_path: Path) -> dict:
    metadata = {}
    for i in range(4):
        path = save(Image((15 + np.random.default_rng(i).integers(0, 40, (32, 32))).astype(np.uint8)), tmp_path / f"case{i}.png")
        metadata[str(path)] = {"caption": CAPTION}
    build_index([], FakeEncoder(), tmp_path / "index", metadata=metadata)
    return {"index": tmp_path / "index", "study": save(Image(np.full((32, 32), 12, np.uint8)), tmp_path / "study.png")}


def test_a_draft_puts_the_scrubbed_retrieved_captions_in_the_prompt(captioned: dict) -> None:
    from medfm.index import open_index

    model = RecordingModel()
    with open_index(captioned["index"]) as store:
        result = draft_report_with_model(captioned["study"], model, encoder=FakeEncoder(), index=store, ratio=0.0)
    prompt = model.calls[0][1]
    assert prompt.startswith("Reports of similar past cases:\n1. Normal brain without hemorrhage on [redacted].")
    assert prompt.endswith(REPORT_INSTRUCTION) and "03/04/2011" not in prompt
    assert result["draft"] == "No acute finding." and result["contexts"]
    assert prompt.count(" Normal brain") == len(result["contexts"])
    assert [i for i in result["provenance"].inputs if i.startswith("index-item:")] == [f"index-item:{c['id']}" for c in result["contexts"]]
    alone = RecordingModel()
    draft_report_with_model(captioned["study"], alone)
    assert alone.calls[0][1] == REPORT_INSTRUCTION
    with pytest.raises(MedfmError, match="both the index and its encoder"):
        draft_report_with_model(captioned["study"], alone, encoder=FakeEncoder())


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    torch.set_num_threads(1)
    model, processor = tiny_model("gemma3")
    folder = tmp_path / "tiny-medgemma"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.usefixtures("fake_models")
def test_cli_ask_and_report_with_a_local_model(tiny_folder: Path, ct_series: Path, captioned: dict,
                                               capsys: pytest.CaptureFixture) -> None:
    code, out, err = run_cli(["ask", str(ct_series), "What is shown?", "--model", str(tiny_folder), "--max-new-tokens", "4",
                              "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    expected_pictures, _ = model_pictures(load(ct_series), 8)
    assert result["answer"] == create_language_model(tiny_folder).generate(expected_pictures, "What is shown?", max_new_tokens=4)
    assert result["provenance"]["model"] == "tiny-medgemma" and PATIENT not in out
    code, out, err = run_cli(["ask", str(ct_series), "What is shown?", "--model", str(tiny_folder), "--max-new-tokens", "4"], capsys)
    assert code == 0 and out == result["answer"] + "\n"  # streamed, then a new line
    code, out, err = run_cli(["report", str(captioned["study"]), "--index", str(captioned["index"]), "--model", str(tiny_folder),
                              "--abstain-threshold", "0.1", "--max-new-tokens", "3", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["contexts"][0]["caption"] == "Normal brain without hemorrhage on [redacted]."
    code, out, err = run_cli(["ask", str(ct_series), "What is shown?", "--model", str(tiny_folder), "--choices", "a,b"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--choices apply to zero-shot answers" in err
    for args, message in ((["report", str(captioned["study"])], "needs --index"),
                          (["report", str(captioned["study"]), "--model", str(tiny_folder), "-k", "3"], "give --index too"),
                          (["ask", str(ct_series), "Is this a CT?", "--max-new-tokens", "3"], "give --model FOLDER")):
        code, out, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    (tiny_folder / "config.json").write_text(json.dumps({"model_type": "siglip"}))
    code, out, err = run_cli(["ask", str(ct_series), "What is shown?", "--model", str(tiny_folder)], capsys)
    assert code == 2 and err.count("\n") == 1 and "a 'siglip' checkpoint, not an image-text model" in err
