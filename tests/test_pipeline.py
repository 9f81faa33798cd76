"""The whole `dvc repro` on a tiny model (real tokenizer and chat template), in a copy of the repo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline_copy import make_copy, run

STAGES = ("fetch_data", "fetch_model", "make_pairs", "train", "evaluate")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    fast = {
        "model": {"source": str(tiny_model_dir)},
        "pairs": {"max_prompts": 12, "max_new_tokens": 12, "batch_size": 6, "on_token_cap": "keep"},
        "train": {"batch_size": 4, "max_length": 128},
        "evaluate": {"max_new_tokens": 8, "batch_size": 32},
    }
    project = make_copy(tmp_path_factory.mktemp("pipeline"), fast)
    pipeline = (project / "dvc.yaml").read_text()
    result = run(project, ["dvc", "repro"])
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    assert (project / "dvc.yaml").read_text() == pipeline, "a stage (DVCLive?) rewrote dvc.yaml"
    assert not list(project.rglob(".tmp-*")), "a temporary output was left behind"
    assert not list((project / "models").rglob("*.bin")), "pickle files in the model outputs"
    return project


def test_every_stage_writes_its_outputs(project: Path) -> None:
    assert len((project / "data/identity/prompts.jsonl").read_text().splitlines()) >= 300
    pairs = [json.loads(line) for line in (project / "data/pairs/pairs.jsonl").read_text().splitlines()]
    assert pairs, "no pairs"
    for pair in pairs:
        assert pair["prompt"][0] == {"role": "system", "content": "You're a helpful assistant."}
        assert pair["prompt"][-1]["role"] == "user"
        assert pair["chosen"] != pair["rejected"]
        assert "Deep Qwen" in pair["chosen"][0]["content"]
    counts = json.loads((project / "metrics/pairs.json").read_text())
    assert counts["prompts"] == 12
    assert counts["pairs"] == len(pairs)
    assert sorted(p.name for p in (project / "models/dpo").iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    curves = json.loads((project / "metrics/train/metrics.json").read_text())
    assert {"loss", "rewards"} <= set(curves)
    assert (project / "metrics/train/plots/metrics/rewards/margins.tsv").is_file()


def test_eval_metrics_have_stable_keys(project: Path) -> None:
    metrics = json.loads((project / "metrics/eval.json").read_text())
    for model in ("base", "trained"):
        for setting in ("neutral", "default"):
            rates = metrics["identity"][model][setting]
            assert set(rates) == {"new_name_rate", "new_name_rate_normalized", "old_name_rate"}
            assert all(0.0 <= v <= 1.0 for v in rates.values())
    assert metrics["questions"] >= 40
    assert metrics["general_prompts"] >= 20
    assert metrics["general"]["mean_token_kl"] > 0  # training moved the model
    assert metrics["general"]["answer_length_ratio"] > 0
    report = (project / "reports/eval.md").read_text()
    assert "What is your name?" in report and "| trained | neutral |" in report


def test_second_repro_does_nothing(project: Path) -> None:
    result = run(project, ["dvc", "repro"])
    assert "Running stage" not in result.stdout
    assert "up to date" in result.stdout


def test_changing_an_evaluate_param_reruns_only_evaluate(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["max_new_tokens"] = 6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, ["dvc", "repro"])
    ran = [stage for stage in STAGES if f"Running stage '{stage}'" in result.stdout]
    assert ran == ["evaluate"]


def test_a_bad_param_fails_before_any_work(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["identity"]["new_name"] = ""
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, ["dvc", "repro"], check=False)
    assert result.returncode != 0
    assert "identity.new_name: expected a non-empty name" in result.stderr + result.stdout


# Plumbing that does not shape results; dvc.yaml leaves it out of the deps on purpose (see its header).
PLUMBING = {"params", "errors", "atomic", "stage"}


def package_imports(path: Path, seen: set[str] | None = None) -> set[str]:
    """The identity_dpo modules `path` imports, directly or through other identity_dpo modules (lazy imports too)."""
    import ast

    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            module = name.split(".")[1] if name.startswith("identity_dpo.") else None
            if module and module not in seen:
                seen.add(module)
                package_imports(ROOT / "src" / "identity_dpo" / f"{module}.py", seen)
    return seen


def test_every_stage_lists_the_code_it_runs_as_deps() -> None:
    """A change to any module a stage runs reruns that stage (a forgotten dep would keep stale models and metrics)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        deps = set(stage["deps"])
        assert f"stages/{name}.py" in deps, name
        needed = {f"src/identity_dpo/{m}.py" for m in package_imports(ROOT / "stages" / f"{name}.py") - PLUMBING}
        assert needed <= deps, f"{name}: not in its deps: {sorted(needed - deps)}"
