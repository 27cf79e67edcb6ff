"""``medfm report``, ``ask`` and ``evaluate report|vqa``: drafting reports and answering closed questions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import CheckpointOption, JsonOption, print_json

language_app = typer.Typer()
#: Commands that join the ``medfm evaluate`` group.
language_evaluate_app = typer.Typer()

AbstainThresholdOption = Annotated[float | None, typer.Option(
    "--abstain-threshold", help="Similarity under which the router abstains (default: the model's calibrated zero-shot one).")]


def _threshold(encoder, given_threshold: float | None) -> float:
    from medfm.models.registry import abstain_below

    return abstain_below(True, given_threshold, encoder.info.name, encoder.info.weights_sha256, "zero_shot")


@language_app.command()
def report(
    study: Annotated[Path, typer.Argument(help="The study: an image file or a DICOM series folder.")],
    index: Annotated[str, typer.Option("--index", help="Index of captioned past cases (medfm index build --manifest M.csv --columns caption).")],
    k: Annotated[int | None, typer.Option("-k", help="Retrieved cases kept at most.")] = None,
    ratio: Annotated[float | None, typer.Option("--ratio", help="Keep cases at least this fraction as similar as the best.")] = None,
    sentences: Annotated[int | None, typer.Option("--sentences", help="Sentences in the draft at most.")] = None,
    abstain_threshold: AbstainThresholdOption = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Draft a report from the most similar captioned cases; every sentence names its source case."""
    from medfm.cli.output import given
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.tasks.report import draft_report

    with open_index(index) as store:
        encoder = create_encoder(store.model["name"], checkpoint)
        result = draft_report(study, encoder, store, abstain_below=_threshold(encoder, abstain_threshold),
                              **given(k=k, ratio=ratio, max_sentences=sentences))
    if as_json:
        print_json(result)
        return
    routed = ", ".join(f"{axis}: {r['label'] or 'cannot tell'}" for axis, r in result["route"].items())
    typer.echo(f"[{routed}]")
    for sentence in result["sentences"]:
        typer.echo(f"{sentence['text']}  [case {sentence['source']}, similarity {sentence['score']:.3f}]")
    typer.echo("Draft from similar past cases: check every sentence against the study.")


@language_app.command()
def ask(
    arguments: Annotated[list[str], typer.Argument(metavar="IMAGE... QUESTION", help="One or more images, then the question.")],
    choices: Annotated[str | None, typer.Option("--choices", help="Comma-separated possible answers.")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Also return the nearest indexed cases as evidence.")] = None,
    k: Annotated[int, typer.Option("-k", help="Evidence cases.")] = 5,
    model: Annotated[str | None, typer.Option("--model", help="Image-text model (default: the index's, else the default one).")] = None,
    abstain_threshold: AbstainThresholdOption = None,
    checkpoint: CheckpointOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a closed question (modality, body region, a finding's presence, or --choices) about images."""
    from medfm.errors import MedfmError
    from medfm.index import open_index
    from medfm.models import create_encoder
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.tasks.ask import ask as ask_question

    *images, question = arguments
    if not images:
        raise MedfmError("a question needs at least one image before it (medfm ask IMAGE... \"QUESTION\")")
    store = open_index(index) if index else None
    try:
        encoder = create_encoder(model or (store.model["name"] if store else DEFAULT_ENCODER), checkpoint)
        result = ask_question(images, question, encoder, index=store, k=k, abstain_below=_threshold(encoder, abstain_threshold),
                              choices=[c for c in choices.split(",") if c.strip()] if choices else None)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['answer']}  (confidence {result['confidence']:.3f}; {result['prediction']}, similarity {result['similarity']:.3f})")
    for hit in result.get("evidence", []):
        typer.echo(f"    {hit['score']:.4f}  case {hit['id']}" + (f"  {hit['caption'][:80]}" if "caption" in hit else ""))


def _print_evaluation(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['n']} cases")
    for name, estimate in result["metrics"].items():
        typer.echo(f"{name:>10}  {estimate['value']:.4f} [{estimate['low']:.4f}, {estimate['high']:.4f}]")


@language_evaluate_app.command("report")
def evaluate_report(
    pred: Annotated[Path, typer.Argument(help="Drafts: CSV (id,text) or JSON Lines {\"id\", \"text\"}.")],
    gold: Annotated[Path, typer.Argument(help="Reference reports, in the same form.")],
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """BLEU-4, ROUGE-L and clinical-term F1 of drafts against references (METEOR: not available offline)."""
    from medfm.eval.evaluate_text import evaluate_reports

    _print_evaluation(evaluate_reports(pred, gold, n_boot=n_boot, seed=seed), as_json)


@language_evaluate_app.command("vqa")
def evaluate_vqa(
    pred: Annotated[Path, typer.Argument(help="Answers: CSV (id,answer) or JSON Lines {\"id\", \"answer\"}.")],
    gold: Annotated[Path, typer.Argument(help="Reference answers, in the same form.")],
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Exact-match accuracy of closed answers, with a bootstrap interval."""
    from medfm.eval.evaluate_text import evaluate_answers

    _print_evaluation(evaluate_answers(pred, gold, n_boot=n_boot, seed=seed), as_json)
