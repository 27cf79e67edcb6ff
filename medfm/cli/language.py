"""``medfm report``, ``ask`` and ``evaluate report|vqa``: drafting reports and answering closed questions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medfm.cli.output import CheckpointOption, JsonOption, MkdirOption, print_json

language_app = typer.Typer()
#: Commands that join the ``medfm evaluate`` group.
language_evaluate_app = typer.Typer()

AbstainThresholdOption = Annotated[float | None, typer.Option(
    "--abstain-threshold", help="Similarity under which the answer abstains, for every question (default: the model's "
                           "zero-shot thresholds calibrated for each label set).")]


def _threshold(encoder, given_threshold: float | None) -> float | dict[str, float]:
    from medfm.models.registry import question_abstention

    return question_abstention(True, given_threshold, encoder.info.name, encoder.info.weights_sha256)


ModelFolderOption = Annotated[Path | None, typer.Option(
    "--model", help="The language model that writes the text: medfm-captioner (shipped; from the image alone), a folder "
                    "`medfm train captioner` wrote, or a local vision-language checkpoint folder (MedGemma/Gemma 3, "
                    "PaliGemma, Qwen2-VL, LLaVA).")]
MaxTokensOption = Annotated[int | None, typer.Option("--max-new-tokens", help="Tokens the language model writes at most.")]


@language_app.command()
def report(
    study: Annotated[Path, typer.Argument(help="The study: an image file or a DICOM series folder.")],
    index: Annotated[str | None, typer.Option("--index", help="Index of captioned past cases (medfm index build --manifest M.csv --columns caption).")] = None,
    model: ModelFolderOption = None,
    k: Annotated[int | None, typer.Option("-k", help="Retrieved cases kept at most.")] = None,
    ratio: Annotated[float | None, typer.Option("--ratio", help="Keep cases at least this fraction as similar as the best.")] = None,
    sentences: Annotated[int | None, typer.Option("--sentences", help="Sentences in the draft at most.")] = None,
    max_new_tokens: MaxTokensOption = None,
    abstain_threshold: AbstainThresholdOption = None,
    checkpoint: CheckpointOption = None,
    sr: Annotated[Path | None, typer.Option("--sr", help="Also write the draft as a DICOM Comprehensive SR (.dcm), "
                                             "marked machine-generated, referencing the study when it is DICOM.")] = None,
    mkdir: MkdirOption = False,
    as_json: JsonOption = False,
) -> None:
    """Draft a report from the most similar captioned cases (every sentence names its source case),
    or with --model, by a local vision-language model (the retrieved cases, with --index, in its prompt)."""
    from medfm.cli.output import given
    from medfm.errors import MedfmError
    from medfm.index import open_index
    from medfm.models import create_encoder

    if model is None and index is None:
        raise MedfmError("a report needs --index (captioned past cases), --model (a local vision-language model), or both")
    if model is not None and sentences is not None:
        raise MedfmError("--sentences applies to the retrieval draft; with --model, bound the text with --max-new-tokens")
    if model is None and max_new_tokens is not None:
        raise MedfmError("--max-new-tokens bounds a language model's text; give --model FOLDER too")
    if index is None and (k is not None or ratio is not None):
        raise MedfmError("-k and --ratio choose retrieved cases; give --index too")
    series = None
    if sr is not None:  # checked, and the study read once with the series an SR references, before any work
        from medfm.tasks.report import check_sr_path
        from medfm.tasks.segment_to_file import load_input

        check_sr_path(sr)
        study, series = load_input(study)
    store = open_index(index) if index else None
    try:
        encoder = create_encoder(store.model["name"], checkpoint) if store else None
        threshold = _threshold(encoder, abstain_threshold) if encoder else None
        if model is not None:
            from medfm.models.registry import create_language_model
            from medfm.tasks.vlm import draft_report_with_model

            result = draft_report_with_model(study, create_language_model(model), encoder=encoder, index=store,
                                             abstain_below=threshold, **given(k=k, ratio=ratio, max_new_tokens=max_new_tokens))
        else:
            from medfm.tasks.report import draft_report

            result = draft_report(study, encoder, store, abstain_below=threshold,
                                  **given(k=k, ratio=ratio, max_sentences=sentences))
    finally:
        if store is not None:
            store.close()
    if sr is not None:
        from medfm.tasks.report import save_report_sr

        save_report_sr(result, sr, series)
    if as_json:
        print_json(result)
        return
    if model is not None:
        typer.echo(result["draft"])
        typer.echo(f"Draft by {result['provenance'].model} from {len(result['contexts'])} similar past case(s): check it against the study.")
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
    templates: Annotated[Path | None, typer.Option("--templates", help="Zero-shot prompts for the answers, as classify --templates "
                                                   "reads them (one template per line, or a .json prompt set of optimize-prompts "
                                                   "with label phrasings).")] = None,
    index: Annotated[str | None, typer.Option("--index", help="Also return the nearest indexed cases as evidence.")] = None,
    k: Annotated[int, typer.Option("-k", help="Evidence cases.")] = 5,
    model: Annotated[str | None, typer.Option("--model", help="Image-text encoder name (default: the index's, else the default one), "
                                               "or a local vision-language checkpoint folder, which also answers open questions.")] = None,
    max_new_tokens: MaxTokensOption = None,
    prompts: Annotated[Path | None, typer.Option("--prompts", help="With --model FOLDER: the instruction and demonstrations "
                                                                  "chosen for it by optimize-prompts --vlm (a JSON file).")] = None,
    abstain_threshold: AbstainThresholdOption = None,
    checkpoint: CheckpointOption = None,
    router: Annotated[Path | None, typer.Option("--router", help="The domain router that answers modality and region "
                                                "questions: a folder `medfm train router` wrote (default: the one shipped "
                                                "for the encoder's weights; zero-shot without one).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Answer a closed question (modality, body region, a finding's presence, or --choices) about images,
    or any question with --model FOLDER (a local vision-language model)."""
    from medfm.errors import MedfmError
    from medfm.index import open_index
    from medfm.models import create_encoder, list_encoders
    from medfm.models.registry import DEFAULT_ENCODER
    from medfm.tasks.ask import ask as ask_question
    from medfm.tasks.ask import routing_model
    from medfm.tasks.classify import read_templates

    *images, question = arguments
    if not images:
        raise MedfmError("a question needs at least one image before it (medfm ask IMAGE... \"QUESTION\")")
    if model is not None and model not in list_encoders() and Path(model).is_dir():
        _ask_language_model(images, question, Path(model), max_new_tokens, prompts, as_json,
                            unused={"--choices": choices, "--templates": templates, "--index": index, "--checkpoint": checkpoint,
                                    "--router": router})
        return
    if max_new_tokens is not None or prompts is not None:
        raise MedfmError(f"{'--max-new-tokens' if max_new_tokens is not None else '--prompts'} applies to a language model; "
                         "give --model FOLDER (a checkpoint folder) too")
    prompts, phrasings = read_templates(templates) if templates else (None, None)
    store = open_index(index) if index else None
    try:
        encoder = create_encoder(model or (store.model["name"] if store else DEFAULT_ENCODER), checkpoint)
        result = ask_question(images, question, encoder, index=store, k=k, abstain_below=_threshold(encoder, abstain_threshold),
                              choices=[c for c in choices.split(",") if c.strip()] if choices else None,
                              router=routing_model(encoder, router), templates=prompts, phrasings=phrasings)
    finally:
        if store is not None:
            store.close()
    if as_json:
        print_json(result)
        return
    if "image_prediction" in result:
        typer.echo(f"{result['answer']}  (recorded in the DICOM header: {result['prediction']}; the pixels read as "
                   f"{result['image_prediction']}, confidence {result['image_confidence']:.3f})")
    else:
        typer.echo(f"{result['answer']}  (confidence {result['confidence']:.3f}; {result['prediction']}, similarity {result['similarity']:.3f})")
    for hit in result.get("evidence", []):
        typer.echo(f"    {hit['score']:.4f}  case {hit['id']}" + (f"  {hit['caption'][:80]}" if "caption" in hit else ""))


def _ask_language_model(images: list[str], question: str, folder: Path, max_new_tokens: int | None, prompts: Path | None,
                        as_json: bool, unused: dict[str, object]) -> None:
    from medfm.cli.output import given
    from medfm.errors import MedfmError
    from medfm.models.registry import create_language_model
    from medfm.tasks.vlm import ask_model, read_prompt_set, stream_answer

    given_options = [name for name, value in unused.items() if value is not None]
    if given_options:
        raise MedfmError(f"{', '.join(given_options)} apply to zero-shot answers, not to a language model's (--model FOLDER)")
    model = create_language_model(folder)
    options = given(max_new_tokens=max_new_tokens, prompts=read_prompt_set(prompts, model) if prompts else None)
    if as_json:
        print_json(ask_model(images, question, model, **options))
        return
    pieces, _ = stream_answer(images, question, model, **options)
    for piece in pieces:  # printed as the model writes: a large model on a CPU takes seconds per sentence
        typer.echo(piece, nl=False)
    typer.echo()


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
    """BLEU-4, ROUGE-L, METEOR (exact and stem matches; no WordNet synonyms offline) and clinical-term F1 of
    drafts against references."""
    from medfm.eval.evaluate_text import evaluate_reports

    _print_evaluation(evaluate_reports(pred, gold, n_boot=n_boot, seed=seed), as_json)


@language_evaluate_app.command("vqa")
def evaluate_vqa(
    pred: Annotated[Path, typer.Argument(help="Answers: CSV (id,answer) or JSON Lines {\"id\", \"answer\"}.")],
    gold: Annotated[Path, typer.Argument(help="Reference answers, in the same form, with an optional 'type' column: "
                                            "closed (default; exact match) or open (recall of the reference's words).")],
    n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap resampling.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Accuracy of closed answers (exact match) and word recall of open answers, with bootstrap intervals."""
    from medfm.eval.evaluate_text import evaluate_answers

    _print_evaluation(evaluate_answers(pred, gold, n_boot=n_boot, seed=seed), as_json)
