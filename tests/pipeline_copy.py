"""Run the real pipeline (`dvc repro`) in a throw-away copy of this repository (make_copy), and copy such a
project to change it (copy_project)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINE_FILES = (
    "dvc.yaml",
    "params.yaml",
    "stages",
    "src",
    "data/source",
    "data/eval",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
    "scripts",
    "configs",
)
# Held-out sets cut to a few rows (make_copy(small_eval=True)): evaluate.<key> -> (shipped file, written file, rows
# kept per category, at most this many rows). Each category's first rows, so every kind of question is still asked
# (the maker and multi-turn identity questions, every benchmark category) while answer_base and evaluate take seconds.
SMALL_EVAL = {
    "identity_questions": ("identity_questions.jsonl", "few_questions.jsonl", 1, None),
    "general_prompts": ("general_prompts.jsonl", "few_prompts.jsonl", None, 4),
    "general_benchmark": ("general_benchmark.jsonl", "few_benchmark.jsonl", 2, None),
}


def write_small_evalset(project: Path) -> dict[str, str]:
    """The SMALL_EVAL files in the project's data/eval (shipped rows, same schema); the evaluate params naming them."""
    params = {}
    for key, (shipped, name, per_category, limit) in SMALL_EVAL.items():
        lines = (project / "data/eval" / shipped).read_text(encoding="utf-8").splitlines(keepends=True)
        if per_category is not None:
            seen: dict[str, int] = {}
            kept = []
            for line in lines:
                category = json.loads(line)["category"]
                if seen.get(category, 0) < per_category:
                    seen[category] = seen.get(category, 0) + 1
                    kept.append(line)
            lines = kept
        (project / "data/eval" / name).write_text("".join(lines[:limit]), encoding="utf-8")
        params[key] = f"data/eval/{name}"
    return params


def make_copy(dest: Path, params: dict[str, Any] | None = None, small_eval: bool = False) -> Path:
    """A fresh git + DVC project holding the pipeline files, with `params` merged into params.yaml.

    `small_eval`: evaluate the few held-out rows of SMALL_EVAL instead of the shipped sets (66 identity questions
    in 3 settings, 28 general prompts, a 270-question benchmark, each answered by both models).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "node_modules")
            )
        elif source.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = {section: dict(values) for section, values in (params or {}).items()}
    if small_eval:
        params["evaluate"] = {**write_small_evalset(dest), **params.get("evaluate", {})}
    if params:
        merged = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params.items():
            merged[section].update(values)
        (dest / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))
    run(dest, ["git", "init", "-q"])
    run(dest, ["git", "add", "-A"])
    run(dest, ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy"])
    return dest


def copy_project(project: Path, dest: Path, *, history: bool = True) -> Path:
    """A copy of a test's project (outputs included), to change without touching the original.

    With `history`, the git history and the DVC cache too; without, only what a stage script reads (its code,
    params, data and models: no .git, no .dvc), which copies much faster.
    """
    skipped = () if history else (".git", ".dvc", "__pycache__")
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns(*skipped))
    return dest


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's own interpreter first on PATH, so `python stages/...` in dvc.yaml runs in this venv."""
    return {
        **os.environ,
        **(extra or {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AWS_EC2_METADATA_DISABLED": "true",  # without credentials botocore would probe a cloud address
    }


def run(
    cwd: Path, args: Sequence[str], check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if args[0] == "dvc":
        args = [str(Path(sys.executable).parent / "dvc"), *args[1:]]
    result = subprocess.run(list(args), cwd=cwd, env=env(extra_env), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
