"""`dvc artifacts get` fetches the model and its GGUF by name (dvc.yaml `artifacts:`), from a clone of the repository,
through the project's remote (a local folder), with no DVC cache of its own: what a teammate does instead of cloning.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from llama_cpp_support import require_export
from pipeline_copy import make_copy, run
from tiny_model import tiny_pipeline_params

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def test_artifacts_are_declared() -> None:
    artifacts = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]
    assert artifacts["identity-dpo-model"]["path"] == "models/dpo"
    assert artifacts["identity-dpo-gguf"]["path"] == "models/gguf/model-q8_0.gguf"
    for artifact in artifacts.values():
        assert artifact["type"] == "model" and artifact["desc"] and artifact["labels"]


def digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path]:
    """The owner's trained tiny project, pushed to a local-folder remote, and a bare clone of its git repository."""
    require_export()  # the whole pipeline: export and package too
    root = tmp_path_factory.mktemp("artifacts")
    project = make_copy(root / "owner", tiny_pipeline_params(tiny_model_dir), small_eval=True)
    run(project, ["dvc", "repro"])
    run(project, ["dvc", "remote", "add", "-d", "shared", str(root / "remote")])
    run(project, ["git", "add", "-A"])
    run(project, [*GIT, "commit", "-qm", "trained and shared"])
    run(project, ["dvc", "push"])
    shutil.rmtree(project / ".dvc/cache")  # the files can come from the remote only (the workspace keeps its hardlinks)
    # A registered version (GTO's tag format, what `gto register` writes): `dvc artifacts get` fetches the latest.
    for name in ("identity-dpo-model", "identity-dpo-gguf"):
        run(project, [*GIT, "tag", "-a", f"{name}@v0.1.0", "-m", f"Registering artifact {name} version v0.1.0"])
    run(root, ["git", "clone", "-q", "--bare", str(project), "origin.git"])
    return project, root / "origin.git"


@pytest.mark.parametrize(
    "name, path", [("identity-dpo-model", "models/dpo"), ("identity-dpo-gguf", "models/gguf/model-q8_0.gguf")]
)
def test_artifacts_get_through_the_remote(shared: tuple[Path, Path], tmp_path: Path, name: str, path: str) -> None:
    project, origin = shared
    teammate = tmp_path / "teammate"
    teammate.mkdir()
    result = run(teammate, ["dvc", "artifacts", "get", str(origin), name], extra_env={"DVC_STUDIO_OFFLINE": "1"})
    fetched = teammate / Path(path).name
    assert fetched.exists(), result.stdout + result.stderr
    assert digest(fetched) == digest(project / path)
    if name == "identity-dpo-model":
        assert (fetched / "README.md").read_text().startswith("---\nlicense: apache-2.0\n")
    assert not (teammate / ".dvc").exists(), "artifacts get made a DVC project"
    assert os.listdir(teammate) == [fetched.name]
