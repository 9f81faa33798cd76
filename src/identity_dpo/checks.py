"""Checks of the inputs that can be made without a model: run by the `validate` stage before any stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a check inside a stage comes too late
to keep the previous outputs. Every check here needs only params.yaml and the input files; `dvc repro` runs
them first (the validate stage, which every other stage depends on) and stops there when one fails.

Held-out evaluation sets are checked for duplicate questions and for questions that are also training prompts,
compared after `normalize_question` (case, spacing and end punctuation ignored): either would make the
"held-out" rates measure something else.
"""

from __future__ import annotations

import re
from pathlib import Path

from identity_dpo.data import Prompt, load_prompts, read_jsonl_located
from identity_dpo.errors import DataError, ParamsError
from identity_dpo.generation import check_backend
from identity_dpo.params import Params
from identity_dpo.sources import parse_source

_END_PUNCTUATION = " \t\n.?!,;:…？！。、\"'“”‘’"


def normalize_question(text: str) -> str:
    """What makes two questions "the same" here: case, runs of spaces, and surrounding punctuation ignored."""
    return re.sub(r"\s+", " ", text.casefold()).strip(_END_PUNCTUATION)


def check_inputs(params: Params, accelerate_configs: Path = Path("configs/accelerate")) -> list[Prompt] | None:
    """Every input check that needs no model; returns the training prompts (None for a hub data set, which
    fetch_data loads and checks itself: this stage never touches the network)."""
    check_backend(params.pairs.backend, "pairs.backend")
    check_backend(params.evaluate.backend, "evaluate.backend")
    check_launch_profile(params, accelerate_configs)
    training = training_prompts(params)
    cfg = params.evaluate
    questions = read_texts(cfg.identity_questions, "question", "evaluate.identity_questions", "a held-out question")
    check_held_out(questions, "evaluate.identity_questions", training, params.data.source)
    # General sets: repeated items, and (with rehearsal pairs) items the model is trained to answer as before.
    rehearsal = None
    if params.pairs.rehearsal > 0:
        rehearsal = read_texts(params.pairs.rehearsal_prompts, "prompt", "pairs.rehearsal_prompts", "a general prompt")
        check_held_out(rehearsal, "pairs.rehearsal_prompts", None, "")
    trained_general = None if rehearsal is None else dict((normalize_question(t), w) for w, t in rehearsal)
    general = read_texts(cfg.general_prompts, "prompt", "evaluate.general_prompts", "a general prompt")
    check_held_out(general, "evaluate.general_prompts", None, "", also_trained=trained_general)
    benchmark = read_texts(cfg.general_benchmark, "question", "evaluate.general_benchmark", "a benchmark question")
    check_held_out(benchmark, "evaluate.general_benchmark", None, "", also_trained=trained_general)
    return training


def training_prompts(params: Params) -> list[Prompt] | None:
    """The prompts fetch_data will write, by the same code (so a bad row fails here, before DVC runs fetch_data)."""
    if parse_source(params.data.source, "data.source", allowed=("hf", "local")).kind == "hf":
        return None
    prompts, _ = load_prompts(params.data.source, params.data.split, params.data.on_bad_row)
    return prompts


def check_launch_profile(params: Params, configs: Path) -> None:
    """The accelerate config of train.launch.profile exists (the package and hardware are checked by train)."""
    profile = params.train.launch.profile
    if profile != "none" and not (configs / f"{profile}.yaml").is_file():
        raise ParamsError(f"train.launch.profile: expected a profile with a config in {configs}/, got {profile!r} "
                          f"({configs / f'{profile}.yaml'} does not exist)")  # fmt: skip


def read_texts(path: str, field: str, key: str, what: str) -> list[tuple[str, str]]:
    """(location, text) of the `field` of every row of a JSON-lines file named by the param `key`."""
    try:
        return [(where, row[field]) for where, row in read_jsonl_located(path, {field: str}, what)]
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None


def check_held_out(
    texts: list[tuple[str, str]],
    key: str,
    training: list[Prompt] | None,
    training_source: str,
    also_trained: dict[str, str] | None = None,
) -> None:
    """Refuse a repeated question, and a question that is also a training prompt (the last human turn) or, with
    `also_trained` (normalized text -> location), one of the rehearsal prompts."""
    seen: dict[str, str] = {}
    for where, text in texts:
        norm = normalize_question(text)
        if norm in seen:
            raise DataError(f"{key}: {where}: {text!r} repeats {seen[norm]} (ignoring case, spaces and end "
                            "punctuation); each item once, or it counts twice in the rates")  # fmt: skip
        if also_trained and norm in also_trained:
            raise DataError(f"{key}: {where}: {text!r} is also a rehearsal prompt ({also_trained[norm]}, trained on "
                            "with pairs.rehearsal > 0); an evaluation item must not be trained on")  # fmt: skip
        seen[norm] = where
    if training is None:
        return
    trained = {normalize_question(p.question): p.id for p in training}
    for where, text in texts:
        if normalize_question(text) in trained:
            raise DataError(
                f"{key}: {where}: {text!r} is also a training prompt ({trained[normalize_question(text)]} of "
                f"data.source {training_source}); a held-out question must not be trained on: remove it from one"
            )
