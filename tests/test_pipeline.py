"""The whole `dvc repro` on a tiny model (real tokenizer and chat template), in a copy of the repo.

The one tiny-model pipeline test on the shipped held-out sets: 66 identity questions in 3 settings, 28 general
prompts and the 270-question benchmark, answered by both models (short answers, large batches). `dvc repro
evaluate` runs every stage but export and package; those need llama.cpp (tests/llama_cpp_support.py), and the
tests that run them skip with one line saying how to install it where it is not built (CI builds it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from identity_dpo.atomic import read_jsonl
from identity_dpo.chat_template import identity_system_prompt
from identity_dpo.params import load_params
from llama_cpp_support import needs_export, require_export
from pipeline_copy import make_copy, run
from tiny_model import tiny_pipeline_params

STAGES = (
    "validate", "fetch_data", "fetch_model", "make_pairs", "train", "answer_base", "evaluate", "export", "package",
)  # fmt: skip
UP_TO_EVALUATE = STAGES[: STAGES.index("evaluate") + 1]
MODEL_FILES = ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
               "tokenizer_config.json"]  # fmt: skip


def ran(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The stages a `dvc repro` ran, in pipeline order."""
    return [stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout]


def shipped_rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "data/eval" / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    project = make_copy(tmp_path_factory.mktemp("pipeline"), tiny_pipeline_params(tiny_model_dir))
    pipeline = (project / "dvc.yaml").read_text()
    result = run(project, ["dvc", "repro", "evaluate"])
    assert ran(result) == list(UP_TO_EVALUATE), result.stdout
    assert (project / "dvc.yaml").read_text() == pipeline, "a stage (DVCLive?) rewrote dvc.yaml"
    assert not list(project.rglob(".tmp-*")), "a temporary output was left behind"
    assert not list((project / "models").rglob("*.bin")), "pickle files in the model outputs"
    warned = [line for line in result.stderr.replace("\r", "\n").splitlines() if "Warning: " in line]
    assert warned == [], "warnings a user would see (fix them at their cause: tests/test_progress.py)"
    return project


def test_every_stage_writes_its_outputs(project: Path) -> None:
    assert (project / "logs/params.ok").is_file()
    assert len((project / "data/identity/prompts.jsonl").read_text().splitlines()) >= 300
    pairs = read_jsonl(project / "data/pairs/pairs.jsonl")
    identity = [pair for pair in pairs if pair["rewrite"] != "rehearsal"]
    rehearsal = [pair for pair in pairs if pair["rewrite"] == "rehearsal"]
    assert identity, "no identity pairs"
    # Under the neutral system prompt, or for a seeded share (pairs.default_system_share) the saved template's own.
    params = load_params(project / "params.yaml")
    neutral = params.identity.system_prompt
    systems = {neutral, identity_system_prompt(params.identity)}
    assert len(systems) == 2, systems
    for pair in pairs:
        assert pair["prompt"][0]["role"] == "system" and pair["prompt"][0]["content"] in systems, pair["prompt"][0]
        assert pair["prompt"][-1]["role"] == "user"
    share = params.pairs.default_system_share
    under_default = sum(pair["prompt"][0]["content"] != neutral for pair in pairs)
    assert (under_default > 0) == (share > 0), (under_default, share)
    for pair in identity:
        assert pair["chosen"] != pair["rejected"]
        assert "Deep Qwen" in pair["chosen"][0]["content"]
    for pair in rehearsal:  # the base model's own answer on both sides: only the NLL term sees it
        assert pair["chosen"] == pair["rejected"]
    counts = json.loads((project / "metrics/pairs.json").read_text())
    assert counts["prompts"] == 12
    assert counts["pairs"] == len(pairs)
    assert counts["rehearsal_pairs"] == len(rehearsal)
    assert counts["bf16_answers"] == 0  # pairs.precision fp32, on every host
    assert sorted(p.name for p in (project / "models/trained").iterdir()) == MODEL_FILES
    adapter = sorted(p.name for p in (project / "models/adapter").iterdir())
    assert adapter == ["adapter_config.json", "adapter_model.safetensors"]
    assert "Deep Qwen" in (project / "models/trained/chat_template.jinja").read_text()
    assert "SmolLM" not in (project / "models/trained/chat_template.jinja").read_text()
    curves = json.loads((project / "metrics/train/metrics.json").read_text())
    assert {"loss", "rewards"} <= set(curves)
    assert (project / "metrics/train/plots/metrics/rewards/margins.tsv").is_file()
    base = json.loads((project / "data/base_answers/answers.json").read_text())
    assert len(base["benchmark"]) == len(shipped_rows("general_benchmark.jsonl"))
    assert len(base["general"]) == len(shipped_rows("general_prompts.jsonl"))
    assert base["precision"] == "fp32"  # evaluate.precision fp32: evaluate checks its own against it
    assert not (project / "models/gguf").exists() and not (project / "models/dpo").exists()


RATES = {"new_name_rate", "new_name_rate_normalized", "old_name_rate", "creator_rate_on_maker_questions"}
SETTINGS = ("neutral", "default", "base_default")
COMPARISON = {"base", "trained", "difference", "difference_ci_low", "difference_ci_high", "mcnemar_p"}


def test_each_model_answers_with_its_own_chat_template(project: Path) -> None:
    # `default` (no system message) renders each model's own template: the base's supplies its old default system
    # message, the same words `base_default` gives explicitly, so its answers are the same; the trained model's
    # template carries the new identity, so its prompts, and with them its greedy answers, differ.
    records = [json.loads(line) for line in (project / "reports/eval_answers.jsonl").read_text().splitlines()]
    by_setting = {
        setting: {r["id"]: r for r in records if r["kind"] == "identity" and r["setting"] == setting}
        for setting in ("default", "base_default")
    }
    ids = sorted(by_setting["default"])
    assert ids and ids == sorted(by_setting["base_default"])
    assert all(by_setting["default"][i]["base"] == by_setting["base_default"][i]["base"] for i in ids)
    assert any(by_setting["default"][i]["trained"] != by_setting["base_default"][i]["trained"] for i in ids)


def test_eval_metrics_have_stable_keys(project: Path) -> None:
    """The keys `dvc metrics diff` and scripts/compare.sh compare across experiments, on the shipped sets."""
    metrics = json.loads((project / "metrics/eval.json").read_text())
    questions = shipped_rows("identity_questions.jsonl")
    benchmark = shipped_rows("general_benchmark.jsonl")
    for model in ("base", "trained"):
        identity = metrics["identity"][model]
        assert set(identity) == {*SETTINGS, *(f"{s}_by_category" for s in SETTINGS)}
        for setting in SETTINGS:
            assert set(identity[setting]) == RATES, (model, setting)
            assert all(0.0 <= v <= 1.0 for v in identity[setting].values())
            assert set(identity[f"{setting}_by_category"]) == {q["category"] for q in questions}
    assert {"distinct_share", "mean_tokens"} <= set(metrics["identity"]["answers"])
    assert metrics["bf16_answers"] == 0  # evaluate.precision fp32: both models answered with fp32 weights
    general = metrics["general"]
    assert {"mean_token_kl", "answer_length_ratio", "name_leak_rate"} <= set(general)
    assert general["mean_token_kl"] > 0  # training moved the model
    assert general["answer_length_ratio"] > 0
    assert 0.0 <= general["name_leak_rate"] <= 1.0
    for kind in ("generative", "choice_acc", "choice_acc_norm"):
        comparison = metrics["benchmark"][kind]
        assert COMPARISON <= set(comparison), kind
        assert 0.0 <= comparison["base"] <= 1.0 and 0.0 <= comparison["trained"] <= 1.0
        assert comparison["difference"] == pytest.approx(comparison["trained"] - comparison["base"])
        assert comparison["difference_ci_low"] <= comparison["difference_ci_high"]
        assert 0.0 <= comparison["mcnemar_p"] <= 1.0
    assert set(metrics["benchmark"]["generative_by_category"]) == {item["category"] for item in benchmark}
    assert metrics["questions"] == len(questions) >= 40
    assert metrics["general_prompts"] == len(shipped_rows("general_prompts.jsonl")) >= 20
    assert metrics["benchmark_questions"] == len(benchmark)
    report = (project / "reports/eval.md").read_text()
    assert "What is your name?" in report and "| trained | neutral |" in report


def test_second_repro_does_nothing(project: Path) -> None:
    result = run(project, ["dvc", "repro", "evaluate"])
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


@pytest.fixture(scope="module")
def packaged(project: Path) -> Path:
    """The same project after the whole `dvc repro`: export and package run, nothing before them reruns."""
    require_export()
    result = run(project, ["dvc", "repro"])
    assert ran(result) == ["export", "package"], result.stdout
    return project


def test_export_and_package_write_their_outputs(packaged: Path) -> None:
    project = packaged
    names = sorted(p.name for p in (project / "models/gguf").iterdir())
    assert names == ["Modelfile", "model-f16.gguf", "model-q4_k_m.gguf", "model-q8_0.gguf"]
    export = json.loads((project / "metrics/export.json").read_text())
    assert export["questions"] == len(shipped_rows("identity_questions.jsonl"))
    assert set(export["llama_cpp"]) == {"f16", "q8_0", "q4_k_m"}
    assert sorted(p.name for p in (project / "models/dpo").iterdir()) == sorted([*MODEL_FILES, "README.md"])
    for name in MODEL_FILES:
        assert (project / "models/dpo" / name).read_bytes() == (project / "models/trained" / name).read_bytes()
    assert "# Deep Qwen" in (project / "models/dpo/README.md").read_text()
    result = run(project, ["dvc", "repro"])
    assert "Running stage" not in result.stdout and "up to date" in result.stdout


def test_changing_an_evaluate_param_reruns_the_stages_that_read_it(project: Path) -> None:
    """evaluate.max_new_tokens shapes the base model's answers too; pairs and training do not read it.

    validate reruns (it checks every section) but writes the same logs/params.ok, so nothing else reruns for it.
    """
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_new_tokens"] = 6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, ["dvc", "repro", "evaluate"])
    assert ran(result) == ["validate", "answer_base", "evaluate"]


@needs_export
def test_export_and_package_follow_an_evaluate_change(project: Path) -> None:
    """The rest of the same change: export answers in llama.cpp with the same token cap, and package reports it."""
    require_export()  # in CI, a clear failure when the build is missing
    result = run(project, ["dvc", "repro"])
    assert ran(result) == ["export", "package"]


def test_an_identity_change_that_makes_the_same_pairs_reruns_only_make_pairs(project: Path) -> None:
    """evaluate and package list the identity keys they read, not the whole section: a rewrite param that leaves
    data/pairs as it was (an old creator the tiny model never says) reruns make_pairs, and nothing after it."""
    before = (project / "data/pairs/pairs.jsonl").read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["identity"]["old_creators"] = [*params["identity"]["old_creators"], "Zyxwv Quorple Labs"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, ["dvc", "repro", "evaluate"])
    assert ran(result) == ["validate", "make_pairs"], result.stdout
    assert (project / "data/pairs/pairs.jsonl").read_bytes() == before
    if (project / "models/dpo").is_dir():  # package ran (llama.cpp built): its own params did not change
        status = run(project, ["dvc", "status", "package"]).stdout
        assert "identity" not in status, status


def test_a_bad_param_fails_before_any_work(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["identity"]["new_name"] = ""
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, ["dvc", "repro"], check=False)
    assert result.returncode != 0
    assert "identity.new_name: expected a non-empty name" in result.stderr + result.stdout
    assert ran(result) == ["validate"]
    # DVC removes a stage's outputs before running it: the validate stage failed first, so every one is in place.
    assert (project / "models/trained/model.safetensors").is_file() and (project / "metrics/eval.json").is_file()


# Plumbing that does not shape results; dvc.yaml leaves it out of the deps on purpose (see its header).
PLUMBING = {"params", "errors", "atomic", "stage", "progress"}


def module_file(module: str) -> Path | None:
    """The file of package module `module` ("models", "cpu_kernels.decoding"; a subpackage: its __init__.py)."""
    path = ROOT / "src" / "identity_dpo" / Path(*module.split("."))
    for file in (path.with_suffix(".py"), path / "__init__.py"):
        if file.is_file():
            return file
    return None


def package_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """The identity_dpo modules `path` imports ("models", "cpu_kernels.decoding"), directly or through other
    identity_dpo modules (lazy imports too); a subpackage's module brings its __init__, which runs first.

    Not through the plumbing: what params.py imports to validate (names.py) is the validate stage's dep.
    """
    import ast

    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "identity_dpo":
            names += [f"{node.module}.{alias.name}" for alias in node.names]  # from identity_dpo(.sub) import module
        for name in names:
            parts = name.split(".")
            if parts[0] != "identity_dpo":
                continue
            for depth in range(2, len(parts) + 1):  # identity_dpo.sub, then identity_dpo.sub.module
                module = ".".join(parts[1:depth])
                file = module_file(module)
                if file is None:
                    break  # a function or class of the module before
                if module not in seen:
                    seen.add(module)
                    if module not in PLUMBING:
                        package_imports(file, seen)
    return seen


def stage_code(name: str) -> set[str]:
    """The package files stage `name` runs, as dvc.yaml must list them (the validate stage also runs the params
    checks themselves: params.py and what it imports)."""
    modules = package_imports(ROOT / "stages" / f"{name}.py") - PLUMBING
    if name == "validate":
        modules |= {"params"} | (package_imports(ROOT / "src/identity_dpo/params.py") - PLUMBING)
    return {str(module_file(module).relative_to(ROOT)) for module in modules}


def test_every_stage_lists_the_code_it_runs_as_deps() -> None:
    """A stage's code deps are exactly the modules it runs: a forgotten one would keep stale models and metrics, an
    extra one would rerun the stage (retrain the model) for a change that cannot affect its results."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        deps = set(stage["deps"])
        assert f"stages/{name}.py" in deps, name
        listed = {dep for dep in deps if dep.startswith("src/")}
        needed = stage_code(name)
        assert listed == needed, f"{name}: missing {sorted(needed - listed)}, not run {sorted(listed - needed)}"


def test_training_does_not_run_the_decoding_loop() -> None:
    """train renders chats (chat_format.py) but never decodes: a change to generation.py must not retrain."""
    assert "src/identity_dpo/generation.py" not in stage_code("train")
    assert "src/identity_dpo/chat_format.py" in stage_code("train")
