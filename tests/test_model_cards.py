"""The shipped models' cards report what their evaluation commands wrote: every number in a card's
results tables is read from the markdown and compared with the JSON committed beside the card,
and that JSON is for the weights that ship."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.models.registry import list_encoders, list_segmenters

CARDS = Path(__file__).resolve().parents[1] / "medfm" / "models" / "cards"


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every pipe table of ``text`` as rows of {header: cell}, markup (``**``) stripped."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")])
        elif block:
            if len(block) > 2 and set(block[1][0]) <= set("-: "):
                tables.append([dict(zip(block[0], row, strict=True)) for row in block[2:]])
            block = []
    return tables


def table_with(text: str, header: str) -> list[dict[str, str]]:
    found = [table for table in markdown_tables(text) if header in table[0]]
    assert len(found) == 1, f"one table with a {header!r} column expected"
    return found[0]


def as_printed(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def read_card(name: str) -> tuple[str, dict]:
    return (CARDS / f"{name}.md").read_text(), json.loads((CARDS / f"{name}.results.json").read_text())


@pytest.mark.parametrize("name", ["medfm-clip-small", "medfm-interactive"])
def test_card_names_the_command_that_writes_its_results_for_the_shipped_weights(name: str) -> None:
    card, results = read_card(name)
    assert f"--results medfm/models/cards/{name}.results.json" in card
    assert "--manifest-only" in card
    config = {**list_encoders(), **list_segmenters()}[name]
    assert results["model"] == name and results["weights_sha256"] == config["weights"]["sha256"]


def test_interactive_card_table_matches_its_results() -> None:
    card, results = read_card("medfm-interactive")
    names = {"HC18": "hc18", "Kvasir-SEG": "kvasir", "PH2": "ph2", "all images": None}
    rows = table_with(card, "box Dice")
    assert [row["dataset"] for row in rows] == list(names)
    for row in rows:
        summary = results["all"] if names[row["dataset"]] is None else results["datasets"][names[row["dataset"]]]
        clicks = summary["click_dice"]
        assert row["images"] == str(summary["images"]), row["dataset"]
        assert row["box Dice"] == as_printed(summary["box_dice"], 3), row["dataset"]
        for column, count in (("1 click", 1), ("2 clicks", 2), ("3 clicks", 3), ("5 clicks", 5), ("10 clicks", 10)):
            assert row[column] == as_printed(clicks[count - 1], 3), (row["dataset"], column)
        assert row["NoC@80"] == as_printed(summary["noc@80"], 2) and row["NoC@90"] == as_printed(summary["noc@90"], 2)
        assert row["never ≥ 0.90"] == str(summary["failures@90"]), row["dataset"]
    datasets = results["datasets"].values()
    mean_box = sum(s["box_dice"] for s in datasets) / len(datasets)
    mean_click = sum(s["click_dice"][0] for s in datasets) / len(datasets)
    assert f"Mean of the three datasets: box {mean_box:.3f}, one click {mean_click:.3f}." in card


def test_interactive_card_zoom_tuning_table_matches_its_json_and_the_config() -> None:
    card = (CARDS / "medfm-interactive.md").read_text()
    tuning = json.loads((CARDS / "medfm-interactive.zoom-tuning.json").read_text())["settings"]
    assert "--results medfm/models/cards/medfm-interactive.zoom-tuning.json" in card
    rows = table_with(card, "tuning box Dice, all")
    config = list_segmenters()["medfm-interactive"]
    shipped = f"margin {config['zoom_margin']:.1f} (shipped)" if config["zoom"] else "no zoom"
    assert shipped in [row["setting"] for row in rows]
    for row in rows:
        setting = "off" if row["setting"] == "no zoom" else row["setting"].split()[1]
        measured = tuning[setting]
        assert row["tuning box Dice, all"] == as_printed(measured["all"]["box_dice"], 3), setting
        assert row["Kvasir-SEG box"] == as_printed(measured["kvasir"]["box_dice"], 3), setting
        assert row["tuning one click, all"] == as_printed(measured["all"]["one_click_dice"], 3), setting
        assert row["Kvasir-SEG one click"] == as_printed(measured["kvasir"]["one_click_dice"], 3), setting
        assert row["NoC@90"] == as_printed(measured["all"]["noc@90"], 2), setting


def test_clip_card_tables_match_its_results() -> None:
    card, results = read_card("medfm-clip-small")
    measures = {row["measure"]: row["value"] for row in table_with(card, "measure")}
    expected = {
        f"zero-shot modality accuracy, 8 classes, {sum(d['n'] for d in results['per_dataset'].values())} images":
            as_printed(results["modality_accuracy"], 3),
        f"zero-shot body-region accuracy, 9 classes, {sum(d['n'] for d in results['per_dataset'].values())} images":
            as_printed(results["region_accuracy"], 3),
        f"MedPix caption → image recall@10 ({results['medpix_queries']} captions, {results['medpix_images']} images)":
            as_printed(results["text_to_image_recall@10"], 3),
        "MedPix caption → image recall@1": as_printed(results["text_to_image_recall@1"], 3),
        "throughput, `encode_planes`, 256² uint8 planes, batch 32, 1 CPU thread":
            f"{results['images_per_second_1_thread_batch_32']:.0f} images/s",
    }
    assert measures == expected
    names = {"BCCD": "bccd_blood_cells", "fundus (DRIVE + CHASE_DB1)": "fundus_vessels", "HC18": "hc18_fetal_head_us",
             "Kvasir-SEG": "kvasir_seg_polyp", "MedPix": "medpix2_image_text_train", "PH2": "ph2_dermoscopy",
             "PneumoniaMNIST": "pneumoniamnist", "POCUS (frames of 2 patient groups)": "pocus_lung_ultrasound_video"}
    rows = table_with(card, "modality accuracy")
    assert [row["dataset"] for row in rows] == list(names) and set(names.values()) == set(results["per_dataset"])
    for row in rows:
        dataset = results["per_dataset"][names[row["dataset"]]]
        assert row["test images"] == str(dataset["n"]), row["dataset"]
        assert row["modality accuracy"] == as_printed(dataset["modality_accuracy"], 2), row["dataset"]
        assert row["region accuracy"] == as_printed(dataset["region_accuracy"], 2), row["dataset"]
    assert f"sha256 `{results['manifest_sha256']}`" in card


def test_markdown_tables_are_read_by_header() -> None:
    text = "intro\n\n| a | b |\n|---|---|\n| 1 | **2** |\n| 3 | 4 |\n\nafter\n| x |\n|---|\n| y |\n"
    assert markdown_tables(text) == [[{"a": "1", "b": "2"}, {"a": "3", "b": "4"}], [{"x": "y"}]]


def test_clip_card_abstention_table_matches_its_calibration_and_the_config() -> None:
    card = (CARDS / "medfm-clip-small.md").read_text()
    results = json.loads((CARDS / "medfm-clip-small.abstention.json").read_text())
    assert "--results medfm/models/cards/medfm-clip-small.abstention.json" in card
    assert results["weights_sha256"] == list_encoders()["medfm-clip-small"]["weights"]["sha256"]
    rows = table_with(card, "threshold (cosine)")
    assert [row["answer"].split(",")[0] for row in rows] == ["zero-shot", "zero-shot", "text search"]
    for row, key in zip(rows, ("zero_shot_modality", "zero_shot_region", "search"), strict=True):
        measured = results[key]
        threshold = as_printed(measured["threshold"], 4)
        assert row["threshold (cosine)"] == threshold, key
        assert row["test AUROC in-set vs out-of-set"] == as_printed(measured["test_auroc"], 3), key
        assert row["in-set kept"] == as_printed(measured["test_in_set_kept"], 3), key
        assert row["out-of-set abstained"] == as_printed(measured["test_out_of_set_abstained"], 3), key
        assert row["test cases"] == f"{measured['test_n']['in_set']} + {measured['test_n']['out_of_set']}", key
    stored = list_encoders()["medfm-clip-small"]["abstention"]
    assert stored["zero_shot"] == results["zero_shot_modality"]["threshold"] and stored["search"] == results["search"]["threshold"]
    assert stored["zero_shot_region"] == results["zero_shot_region"]["threshold"]


def test_adapter_recipe_card_table_matches_its_results() -> None:
    """The Kvasir-SEG adapter recipe (medfm finetune over medfm-interactive): every number of its table is measured."""
    card = (CARDS / "medfm-interactive-kvasir-dd-adapter.md").read_text()
    results = json.loads((CARDS / "medfm-interactive-kvasir-dd-adapter.results.json").read_text())
    assert "--results medfm/models/cards/medfm-interactive-kvasir-dd-adapter.results.json" in card
    assert results["base_weights_sha256"] == list_segmenters()["medfm-interactive"]["weights"]["sha256"]
    rows = table_with(card, "held-out box Dice")
    assert [row["method"] for row in rows] == ["base (no fine-tuning)", "lora", "dd-adapter", "full"]
    for row in rows:
        method = "base" if row["method"].startswith("base") else row["method"]
        assert row["held-out box Dice"] == as_printed(results["held_out"][method]["box_dice"], 3), method
        assert row["held-out 1-click Dice"] == as_printed(results["held_out"][method]["click_dice"], 3), method
        if method != "base":
            measured = results["methods"][method]
            assert row["trainable parameters"] == f"{measured['trainable_parameters']:,}", method
            assert row["file"] == f"{measured['adapter_bytes'] / 1e6:.2f} MB ({100 * measured['adapter_fraction_of_base']:.1f} %)", method
            assert row["steps"] == str(measured["steps"]), method


def test_adapter_card_zoom_table_matches_its_evaluations() -> None:
    """The Kvasir-SEG adapter card's zoom-in rows: what `medfm evaluate interactive` wrote for the shipped base and adapter."""
    from medfm.models.registry import WEIGHTS_DIR, sha256_of

    card = (CARDS / "medfm-interactive-kvasir-dd-adapter.md").read_text()
    shipped = {"base (no fine-tuning)": list_segmenters()["medfm-interactive"]["weights"]["sha256"],
               "dd-adapter (shipped)": sha256_of(WEIGHTS_DIR / "medfm-interactive-kvasir-dd-adapter.safetensors")}
    rows = table_with(card, "held-out box Dice, zoom-in")
    assert [row["model"] for row in rows] == list(shipped)
    for row, name in zip(rows, ("base", "dd-adapter"), strict=True):
        path = f"medfm/models/cards/medfm-interactive-kvasir-dd-adapter.zoom-{name}.json"
        assert f"--results {path}" in card
        report = json.loads((CARDS.parents[2] / path).read_text())
        assert report["weights_sha256"] == shipped[row["model"]]
        kvasir = report["datasets"]["kvasir"]
        assert row["held-out box Dice, zoom-in"] == as_printed(kvasir["box_dice"], 3), name
        assert row["held-out 1-click Dice, zoom-in"] == as_printed(kvasir["click_dice"][0], 3), name


def test_adapter_card_from_scratch_row_is_what_its_benchmark_wrote() -> None:
    card = (CARDS / "medfm-interactive-kvasir-dd-adapter.md").read_text()
    path = "medfm/models/cards/medfm-interactive-kvasir-dd-adapter.scratch.json"
    assert f"--results {path}" in card
    results = json.loads((CARDS.parents[2] / path).read_text())
    rows = {row["model"]: row for row in table_with(card, "box Dice, held out")}
    for model, measured in (("base (no fine-tuning)", "base"), ("from scratch", "scratch")):
        assert rows[model]["box Dice, held out"] == as_printed(results["held_out"][measured]["box_dice"], 3)
        assert rows[model]["1-click Dice, held out"] == as_printed(results["held_out"][measured]["click_dice"], 3)
    scratch = results["methods"]["scratch"]
    assert rows["from scratch"]["steps on polyps"].startswith(f"{scratch['steps']} (kept step {scratch['kept_step']} ")
    assert rows["from scratch"]["trainable parameters"] == f"{scratch['trainable_parameters']:,}"
    assert results["methods"]["scratch"]["learning_rate"] == 2e-3


def test_shipped_adapter_is_the_measured_one_and_loads_over_the_shipped_base() -> None:
    from medfm.models.registry import WEIGHTS_DIR, create_segmenter, sha256_of

    results = json.loads((CARDS / "medfm-interactive-kvasir-dd-adapter.results.json").read_text())
    shipped = WEIGHTS_DIR / "medfm-interactive-kvasir-dd-adapter.safetensors"
    assert sha256_of(shipped) == results["methods"]["dd-adapter"]["adapter_sha256"]
    assert shipped.stat().st_size <= 0.1 * results["base_weights_bytes"]
    assert create_segmenter("medfm-interactive", adapter=shipped).info.weights_sha256 == sha256_of(shipped)

def test_clip_card_interval_table_matches_its_retrieval_and_zero_shot_results() -> None:
    card = (CARDS / "medfm-clip-small.md").read_text()
    results = {name: json.loads((CARDS / f"medfm-clip-small.{name}.json").read_text())
               for name in ("retrieval", "zeroshot-modality", "zeroshot-region")}
    sha256 = list_encoders()["medfm-clip-small"]["weights"]["sha256"]
    for name, result in results.items():
        assert f"--results medfm/models/cards/medfm-clip-small.{name}.json" in card
        assert result["model"] == {"name": "medfm-clip-small", "weights_sha256": sha256}
    overall = results["retrieval"]["image_to_image"]["overall"]
    text = results["retrieval"]["text_to_image"]
    expected = [overall["precision@1"], overall["precision@10"], overall["mAP"],
                results["retrieval"]["image_to_image"]["by_class"]["medpix2_image_text_train"]["mAP"],
                text["recall@1"], text["recall@10"],
                results["zeroshot-modality"]["accuracy"], results["zeroshot-modality"]["macro_auc"],
                results["zeroshot-region"]["accuracy"], results["zeroshot-region"]["macro_auc"]]
    rows = table_with(card, "95 % interval")
    assert [(row["value"], row["95 % interval"]) for row in rows] == [
        (as_printed(e["value"], 3), f"{as_printed(e['low'], 3)}–{as_printed(e['high'], 3)}") for e in expected]
    assert f"({results['retrieval']['n']} images)" in rows[0]["measure (test split)"]
    assert f"({text['queries']} captions, {text['images']} images)" in rows[4]["measure (test split)"]


def test_every_shipped_weights_file_has_a_card_naming_its_sha256() -> None:
    from medfm.models.registry import WEIGHTS_DIR, sha256_of

    for weights in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        card = CARDS / f"{weights.stem}.md"
        assert card.is_file(), f"{weights.name} has no card {card.name}"
        config = CARDS.parent / "configs" / f"{weights.stem}.json"
        text = card.read_text() + (config.read_text() if config.is_file() else "")
        assert sha256_of(weights) in text, f"{weights.name}: its sha256 is in neither its card nor its config"


def test_grounding_card_table_is_what_its_benchmark_wrote_for_the_shipped_head() -> None:
    from medfm.models.registry import list_grounders

    card, results = read_card("medfm-grounding-small")
    config = list_grounders()["medfm-grounding-small"]
    assert results["grounder"] == "medfm-grounding-small" and results["grounder_weights_sha256"] == config["weights"]["sha256"]
    assert "python benchmarks/text_segment_bench.py > medfm/models/cards/medfm-grounding-small.results.json" in card
    names = {"Kvasir-SEG": "kvasir", "HC18": "hc18", "PH2": "ph2"}
    rows = table_with(card, "text, grounding head")
    assert [row["dataset"] for row in rows] == list(names)
    columns = {"text, grounding head": "text_grounding", "text, CAM": "text_cam", "centre prior": "centre_prior", "true box": "true_box"}
    for row in rows:
        measured = results["held_out"][names[row["dataset"]]]
        assert row["images"] == str(measured["n"]) and row["words found"] == as_printed(measured["grounding_found_rate"], 2)
        for column, key in columns.items():
            assert row[column] == as_printed(measured[key][0], 3), (row["dataset"], column)
    assert f"threshold {results['chosen_threshold']['grounding']}" in card


def test_router_card_table_is_what_its_benchmark_wrote_for_the_shipped_router() -> None:
    from medfm.models.registry import list_routers

    card, results = read_card("medfm-router-small")
    config = list_routers()["medfm-router-small"]
    assert results["router"] == {"name": "medfm-router-small", "weights_sha256": config["weights"]["sha256"]}
    assert "python benchmarks/language_medpix.py --questions-only > medfm/models/cards/medfm-router-small.results.json" in card
    assert f"the {results['test_images']} MedPix-2.0 TEST images" in card
    rows = table_with(card, "router, with abstention")
    assert [row["axis"] for row in rows] == ["modality", "region"]
    for row in rows:
        accuracy = results[f"test_{row['axis']}_accuracy"]
        for column, key in (("router", "router_without_abstention"), ("zero-shot", "zero_shot_without_abstention"),
                            ("router, with abstention", "router_with_abstention"),
                            ("zero-shot, with abstention", "zero_shot_with_abstention")):
            assert row[column] == as_printed(accuracy[key]["value"], 3), (row["axis"], column)
        assert row["gain"].startswith(f"{accuracy['gain_without_abstention']['value']:+.3f}")
        assert row["abstained"] == as_printed(results[f"test_{row['axis']}_abstained"], 3)
        assert row["ECE router"] == as_printed(results[f"test_{row['axis']}_calibration_error"]["router"], 3)
    for axis in ("modality", "region"):
        chosen = config["training"]["axes"][axis]
        assert f"{axis}: {config['input_sizes'][axis]}², C {chosen['C']}, val accuracy" in card.replace("\n", " ")


def test_the_rare_class_table_in_the_generation_docs_is_what_its_runs_wrote() -> None:
    import re

    docs = Path(__file__).parent.parent / "docs"
    first, second = (json.loads((docs / name).read_text())["classifier"]
                     for name in ("generation.rare-class.json", "generation.rare-class.seed1000.json"))
    rows = {row["probe: training data"].replace("*", "").strip(): row
            for row in table_with((docs / "generation.md").read_text(), "probe: training data")}
    keys = {"real only": "real_only", "real + 300 synthetic MR": "real_plus_synthetic", "difference (second run)": "difference",
            "real only, class-weighted": "real_only_class_weighted",
            "real + 300 synthetic MR, class-weighted": "real_plus_synthetic_class_weighted",
            "difference, class-weighted (second run)": "difference_class_weighted"}
    assert set(rows) == set(keys)
    for label, key in keys.items():
        for column, measure in (("balanced accuracy", "balanced_accuracy"), ("MR recall", "recall MR"), ("AUC", "auc")):
            printed = [float(n) for n in re.findall(r"[-+]?\d+\.\d+", rows[label][column].replace("−", "-"))]
            value = first[key][measure]
            assert printed[:3] == [round(value["value"], 3), round(value["low"], 3), round(value["high"], 3)], (label, column)
            if "second run" in label:
                assert printed[3] == round(second[key][measure]["value"], 3), (label, column)


def test_the_nnunet_table_in_the_automatic_segmentation_docs_is_what_its_runs_wrote() -> None:
    import re

    docs = Path(__file__).parent.parent / "docs"
    rows = table_with((docs / "automatic-segmentation.md").read_text(), "Dice ratio medfm / nnU-Net")
    checked = 0
    for minutes in (10, 30):
        runs = json.loads((docs / f"automatic-segmentation.nnunet-{minutes}min.json").read_text())
        for dataset, label in (("hc18", "HC18"), ("fundus_vessels", "fundus vessels")):
            run = runs[dataset][dataset]
            for tool in ("medfm", "nnunet"):
                row, = [row for row in rows if row["dataset"] == label and row["budget"] == f"{minutes} min"
                        and row["tool"].startswith("medfm" if tool == "medfm" else "nnU-Net")]
                dice = run[tool]["val_dice"]
                printed = [float(n) for n in re.findall(r"\d+\.\d+", row["held-out Dice (95 % CI)"])]
                assert printed == [round(dice["value"], 3), round(dice["low"], 3), round(dice["high"], 3)], (label, tool)
                assert int(row["steps"].replace(",", "")) == run[tool]["steps"], (label, tool)
                if tool == "medfm":
                    assert row["Dice ratio medfm / nnU-Net"].strip("* ") == f"{run['dice_ratio_medfm_over_nnunet']:.2f}"
                checked += 1
    assert checked == 8
