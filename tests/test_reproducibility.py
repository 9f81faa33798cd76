"""Two clean runs with the same params and seeds give the same bytes (docs/reproducibility.md).

Two separate projects are made from the repository and each runs the tiny-model `dvc repro evaluate` (every
stage but export and package, which need llama.cpp) from nothing; their dvc.lock files, which record an md5 for
every dependency and every output (prompts, base model, pairs, trained model and adapter, the base model's answers,
curves, metrics, reports), must be byte-identical. Then copies of both run export and package (GGUF files, the
answers in llama.cpp, the packaged model and its card), which must be byte-identical too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_cpp_support import needs_export, require_export
from pipeline_copy import copy_project
from stage_harness import STAGES, TARGET, clean_project, contents, dvc, lock_outs, new_project

# Every output of every stage, cached by DVC or tracked in git.
OUTPUTS = ("data/identity", "data/pairs", "data/base_answers", "models", "metrics", "reports", "logs/params.ok")


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return clean_project(tmp_path_factory, tiny_model_dir)  # shared with test_interruption and test_bad_input


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    project = new_project(tmp_path_factory.mktemp("second-run") / "project", tiny_model_dir)
    result = dvc(project, "repro", TARGET)
    assert all(f"Running stage '{stage}'" in result.stdout for stage in STAGES), result.stdout
    return project


def test_two_clean_runs_record_identical_hashes_in_dvc_lock(first: Path, second: Path) -> None:
    assert set(lock_outs(first)) == set(STAGES)
    for stage in STAGES:
        assert lock_outs(second)[stage] == lock_outs(first)[stage], f"{stage} made different outputs"
    assert (second / "dvc.lock").read_bytes() == (first / "dvc.lock").read_bytes()


def test_pairs_models_and_metrics_are_byte_identical(first: Path, second: Path) -> None:
    a, b = contents(first, OUTPUTS), contents(second, OUTPUTS)
    assert set(a) == set(b)
    assert [path for path in a if a[path] != b[path]] == []
    assert any(path.startswith("data/pairs/") for path in a) and "metrics/eval.json" in a
    assert "data/base_answers/answers.json" in a and "models/adapter/adapter_model.safetensors" in a


def test_the_runs_say_whether_they_were_deterministic(first: Path) -> None:
    """Generation and evaluation always run on the CPU; training flags a GPU run in its metrics."""
    train = json.loads((first / "metrics/train/metrics.json").read_text(encoding="utf-8"))
    assert train["nondeterministic_kernels"] == 0  # these tests run on a CPU


@needs_export
def test_export_and_package_are_byte_identical(first: Path, second: Path, tmp_path: Path) -> None:
    """The GGUF conversion and quantization, the answers in llama.cpp and the model card, from the same inputs."""
    require_export()  # in CI, a clear failure when the build is missing
    copies = [copy_project(project, tmp_path / name) for project, name in ((first, "first"), (second, "second"))]
    for project in copies:
        result = dvc(project, "repro")
        ran = [stage for stage in ("export", "package") if f"Running stage '{stage}'" in result.stdout]
        assert ran == ["export", "package"] and "Running stage 'train'" not in result.stdout, result.stdout
    a, b = (contents(project, (*OUTPUTS, "dvc.lock")) for project in copies)
    assert "models/gguf/model-q8_0.gguf" in a and "models/dpo/README.md" in a and "metrics/export.json" in a
    assert [path for path in a.keys() | b.keys() if a.get(path) != b.get(path)] == []
