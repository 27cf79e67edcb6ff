"""Report drafting and closed questions on held-out MedPix-2.0 cases; prints one JSON object.

Run ``python benchmarks/language_medpix.py [--out DIR]`` (needs ``../shared/data``).

The index holds the TRAIN split's MedPix images with their captions (medfm.train.clip_data
splits, by case). The draft's settings (k, ratio, sentences) are chosen on the VAL split by
the mean of ROUGE-L and clinical-term F1 (the target names both); drafts for TEST images are then scored against their own captions, beside the peer
measured in the same run: copying the single nearest indexed caption. Closed questions:
"What imaging modality is this?" and "Which body region is shown?" on every TEST image
(8 modality and 9 region classes), answered zero-shot and by the domain router shipped for the
encoder (medfm-router-small, trained on medfm-clip-small's train split and chosen on its val split:
no test image), with each one's expected calibration error; answers that abstain count as wrong.
Targets (issue 15): draft beats nearest caption on ROUGE-L and clinical-term F1; modality
accuracy ≥ 0.95, region ≥ 0.90.

    python benchmarks/language_medpix.py --questions-only           # the closed questions alone (~2 min)
    python benchmarks/language_medpix.py --write-router-manifest DIR  # then: medfm train router DIR/router.csv -o OUT
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from medfm.eval.bootstrap import bootstrap
from medfm.eval.text_metrics import mentioned_terms, rouge_l, term_f1
from medfm.index import open_or_create_index
from medfm.models import create_encoder
from medfm.models.registry import DEFAULT_ENCODER, question_abstention, router_for
from medfm.paths import shared_data_dir
from medfm.tasks.ask import ask
from medfm.tasks.domains import MODALITIES, REGIONS, threshold_for
from medfm.tasks.embed import embed_paths
from medfm.tasks.report import compose, retrieve
from medfm.tasks.search import build_index
from medfm.train.clip_data import collect

GRID = {"k": (8, 16), "ratio": (0.8, 0.9, 0.95), "max_sentences": (1, 2, 3)}


def drafts(vectors: np.ndarray, encoder, store, threshold: dict[str, float], k: int, ratio: float, max_sentences: int) -> tuple[list[str], list[str]]:
    """(drafts, nearest captions) for each ``(N, D)`` query vector."""
    drafted, nearest = [], []
    for vector in vectors:
        _, contexts, _ = retrieve(vector, encoder, store, k=k, ratio=ratio, abstain_below=threshold)
        drafted.append(" ".join(s.text for s in compose(contexts, max_sentences)))
        nearest.append(next(h.metadata["caption"] for h in store.search(vector, 8) if h.metadata.get("caption")))
    return drafted, nearest


def paired_scores(predictions: list[str], peers: list[str], references: list[str], groups: list[str], name: str = "draft",
                  peer_name: str = "nearest") -> dict:
    rows = {name: np.array([metric(p, r) for p, r in zip(texts, references)])
            for name, metric in (("rouge_l", rouge_l), ("term_f1", term_f1)) for texts in [predictions]}
    peer = {name: np.array([metric(p, r) for p, r in zip(peers, references)]) for name, metric in (("rouge_l", rouge_l), ("term_f1", term_f1))}
    stats = bootstrap(lambda i: {**{f"{name}_{n}": float(v[i].mean()) for n, v in rows.items()},
                                 **{f"{peer_name}_{n}": float(v[i].mean()) for n, v in peer.items()},
                                 **{f"gain_{n}": float((rows[n][i] - peer[n][i]).mean()) for n in rows}},
                      len(references), clusters=groups, n_boot=1000)
    return {name: {k: round(v, 4) for k, v in e.as_dict().items()} for name, e in stats.items()}


def calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the mean |accuracy − confidence| over equal-width confidence bins, weighted by size."""
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def accuracy_statistics(correct: dict[str, np.ndarray], kept: dict[str, np.ndarray]):
    """The bootstrap statistic of :func:`closed_questions`: each method's accuracy with and without abstention
    (``kept``: answered), and the router's paired gain without abstention."""
    def statistics(i: np.ndarray) -> dict[str, float]:
        out = {}
        for m in correct:
            out[f"{m}_with_abstention"] = float((correct[m][i] * kept[m][i]).mean())
            out[f"{m}_without_abstention"] = float(correct[m][i].mean())
        if "router" in correct:
            out["gain_without_abstention"] = float((correct["router"][i] - correct["zero_shot"][i]).mean())
        return out
    return statistics


def closed_questions(test: list, folder: Path, encoder, threshold: dict[str, float]) -> dict:
    """Modality and region accuracy on ``test`` answered zero-shot and by the router shipped for ``encoder``: with the
    encoder's abstention thresholds (``ask``'s default, each axis its own: an abstention counts as wrong) and without
    them, the paired gain, the share abstained and each method's calibration error."""
    router = router_for(encoder)
    result: dict = {"router": None if router is None else {"name": router.info.name, "weights_sha256": router.info.weights_sha256},
                    "abstain_below": threshold, "test_images": len(test), "test_cases": len({s.group for s in test})}
    groups = [s.group for s in test]
    for axis, question, classes in (("modality", "What imaging modality is this?", MODALITIES),
                                    ("region", "Which body region is shown?", REGIONS)):
        correct, kept, confidence = {}, {}, {}
        for method, chosen in (("zero_shot", None), ("router", router)):
            if method == "router" and router is None:
                continue
            answers = [ask([folder / s.path], question, encoder, router=chosen) for s in test]
            correct[method] = np.array([float(a["answer"] == classes[getattr(s, axis)]) for a, s in zip(answers, test)])
            kept[method] = np.array([float(a["similarity"] >= threshold_for(threshold, axis)) for a in answers])
            confidence[method] = np.array([a["confidence"] for a in answers])
        estimate = bootstrap(accuracy_statistics(correct, kept), len(test), clusters=groups, n_boot=1000)
        result[f"test_{axis}_accuracy"] = {name: {k: round(v, 4) for k, v in e.as_dict().items()} for name, e in estimate.items()}
        result[f"test_{axis}_abstained"] = round(float(1 - kept["zero_shot"].mean()), 4)
        result[f"test_{axis}_calibration_error"] = {m: round(calibration_error(confidence[m], correct[m]), 4) for m in correct}
    return result


def write_router_manifest(root: Path, out: Path) -> int:
    """The manifest of ``medfm train router`` for the shipped router: the train and val samples of every dataset
    (medfm-clip-small's splits, so that no measured image is in it); video frames and array rows are written as PNG
    files into ``out``. Returns the rows."""
    import csv

    from PIL import Image

    from medfm.train.clip_data import read_plane

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, sample in enumerate(s for s in collect(root) if s.split in ("train", "val")):
        if sample.frame is None and "::" not in sample.path:
            image = str((root / sample.dataset / sample.path).resolve())
        else:
            image = f"planes/{number}.png"
            (out / "planes").mkdir(exist_ok=True)
            Image.fromarray(read_plane(root, sample)).save(out / image)
        rows.append({"image": image, "modality": sample.modality, "region": sample.region, "split": sample.split})
    with open(out / "router.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["image", "modality", "region", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="Folder for the index (default: a temporary one).")
    parser.add_argument("--captioner", default=None, help="Also score this language model's reports (a name such as "
                        "medfm-captioner, or a model folder), written from each test image alone as `medfm report "
                        "STUDY --model NAME` writes them, against the same nearest captions and the drafts.")
    parser.add_argument("--questions-only", action="store_true", help="Only the closed questions (no index, no drafts).")
    parser.add_argument("--write-router-manifest", type=Path, default=None, metavar="DIR",
                        help="Write DIR/router.csv (and frames as PNG under DIR) for `medfm train router`, then stop.")
    args = parser.parse_args()
    root = shared_data_dir()
    if args.write_router_manifest:
        print(json.dumps({"rows": write_router_manifest(root, args.write_router_manifest),
                          "manifest": str(args.write_router_manifest / "router.csv")}))
        return
    if not (root / "medpix2_image_text_train").is_dir():
        sys.exit(f"skipped: {root}/medpix2_image_text_train is absent")
    samples = [s for s in collect(root) if s.dataset == "medpix2_image_text_train" and s.caption and s.caption.strip()]
    split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    folder = root / "medpix2_image_text_train"
    encoder = create_encoder(DEFAULT_ENCODER)
    threshold = question_abstention(True, None, encoder.info.name, encoder.info.weights_sha256)
    if args.questions_only:
        print(json.dumps(closed_questions(split["test"], folder, encoder, threshold), indent=2))
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="medfm-language-"))
    metadata = {str((folder / s.path).resolve()): {"caption": s.caption} for s in split["train"]}
    build_index([], encoder, out / "index", metadata=metadata)
    store = open_or_create_index(out / "index", encoder.info)
    result: dict = {"encoder": encoder.info.name, "router_threshold": threshold, "images": {n: len(v) for n, v in split.items()},
                    "cases": {n: len({s.group for s in v}) for n, v in split.items()}}
    vectors = {n: embed_paths([folder / s.path for s in split[n]], encoder) for n in ("val", "test")}
    val_refs = [s.caption for s in split["val"]]
    search = []
    for k, ratio, sentences in itertools.product(*GRID.values()):
        drafted, _ = drafts(vectors["val"], encoder, store, threshold, k, ratio, sentences)
        rouge, terms = (float(np.mean([metric(d, r) for d, r in zip(drafted, val_refs)])) for metric in (rouge_l, term_f1))
        search.append({"k": k, "ratio": ratio, "max_sentences": sentences, "val_rouge_l": round(rouge, 4),
                       "val_term_f1": round(terms, 4)})
    chosen = max(search, key=lambda row: row["val_rouge_l"] + row["val_term_f1"])
    result["val_search"] = search
    result["chosen_on_val"] = chosen
    drafted, nearest = drafts(vectors["test"], encoder, store, threshold, chosen["k"], chosen["ratio"], chosen["max_sentences"])
    result["test_report"] = paired_scores(drafted, nearest, [s.caption for s in split["test"]], [s.group for s in split["test"]])
    # term F1 scores 1.0 where neither text names a term: the same comparison on the references that name one
    named = [i for i, s in enumerate(split["test"]) if mentioned_terms(s.caption)]
    result["test_report_references_naming_a_term"] = {"images": len(named), **paired_scores(
        [drafted[i] for i in named], [nearest[i] for i in named], [split["test"][i].caption for i in named],
        [split["test"][i].group for i in named])}
    result["test_examples"] = [{"draft": d, "nearest": n, "reference": s.caption} for d, n, s in list(zip(drafted, nearest, split["test"]))[:3]]
    if args.captioner:
        from medfm.models.registry import create_language_model
        from medfm.tasks.vlm import draft_report_with_model

        model = create_language_model(args.captioner)
        written = [draft_report_with_model(folder / s.path, model)["draft"] for s in split["test"]]
        references, groups = [s.caption for s in split["test"]], [s.group for s in split["test"]]
        result["captioner"] = {"model": model.info.name, "weights_sha256": model.info.weights_sha256,
                               "vs_nearest": paired_scores(written, nearest, references, groups, "captioner"),
                               "vs_draft": paired_scores(written, drafted, references, groups, "captioner", "draft"),
                               "examples": written[:3]}
    # the test drafts as `medfm evaluate report` files (stay outside the repository: MedPix text)
    for name, texts in (("draft", drafted), ("nearest", nearest), ("gold", [s.caption for s in split["test"]])):
        with open(out / f"test_{name}.jsonl", "w") as handle:
            handle.writelines(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
    store.close()
    result.update(closed_questions(split["test"], folder, encoder, threshold))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
