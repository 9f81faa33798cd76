"""Run the real stage scripts and `dvc repro` in throw-away project copies, observed from outside.

Shared by test_bad_input, test_interruption and test_reproducibility (and scripts/bad_input_catalogue.py):
- `clean_project`: one fully reproduced tiny-model project per test session (the expensive part), which
  tests copy with `pipeline_copy.copy_project` and never change;
- `harness_env`: the stage processes run the copy's own `src/` (the code DVC hashes), plus tests/stage_hook.py
  as their `sitecustomize`, which can report which model files a stage opened and pause a stage right before
  it moves an output into place, so a test can kill it at exactly that point. The stage code is unchanged;
  the instrumentation is only on the PYTHONPATH of the processes a test starts;
- `load_stage`: a stage script imported into the test's own process instead, to call its functions directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline_copy import ROOT, make_copy
from pipeline_copy import env as pipeline_env
from pipeline_copy import run as pipeline_run
from tiny_model import tiny_pipeline_params

# The stages up to `evaluate`, in the order `dvc repro evaluate` runs them: what these projects reproduce. export and
# package need llama.cpp (tests/llama_cpp_support.py); tests/test_pipeline.py and tests/test_export.py run them.
STAGES = ("validate", "fetch_data", "fetch_model", "validate_model", "make_pairs", "validate_train", "train",
          "answer_base", "evaluate")  # fmt: skip
TARGET = STAGES[-1]
# Outputs and everything else a stage could write; .git and DVC's own scratch folder are not ours.
_NOT_PROJECT = (".git", ".dvc/tmp")
HOOK = Path(__file__).with_name("stage_hook.py")  # the stage processes' sitecustomize


def new_project(dest: Path, tiny_model_dir: Path) -> Path:
    """A fresh git + DVC copy of the pipeline on the tiny model, nothing run yet.

    Held-out sets cut to a few rows (pipeline_copy.SMALL_EVAL), so answer_base and evaluate take seconds;
    everything else as tests/test_pipeline.py.
    """
    project = make_copy(dest, tiny_pipeline_params(tiny_model_dir), small_eval=True)
    # The repository's .gitignore files: DVC leaves entries that already exist alone, as in a real clone.
    for name in (".gitignore", "data/.gitignore", "models/.gitignore"):
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    git_commit(project, "the repository's .gitignore files")
    return project


_CLEAN: dict[str, Path] = {}


def clean_project(tmp_path_factory: Any, tiny_model_dir: Path) -> Path:
    """One project per test session after `dvc repro evaluate` (every stage but export and package), committed to git.

    Read-only for every test: copy it with pipeline_copy.copy_project before changing anything.
    """
    key = str(tiny_model_dir)
    if key not in _CLEAN:
        project = new_project(tmp_path_factory.mktemp("clean-run"), tiny_model_dir)
        dvc(project, "repro", TARGET)
        git_commit(project, "clean run")
        _CLEAN[key] = project
    return _CLEAN[key]


def git_commit(project: Path, message: str) -> None:
    pipeline_run(project, ["git", "add", "-A"])
    pipeline_run(project, ["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
                           "commit", "-qm", message, "--allow-empty"])  # fmt: skip


# --- processes ---------------------------------------------------------------------------------------------


def hook_dir(project: Path) -> Path:
    """The folder holding the instrumentation (outside the project, so DVC never sees it).

    dvc.yaml runs `PYTHONPATH=src python stages/...`, which replaces any PYTHONPATH a test sets, so the
    folder also holds a `bin/python` that puts the instrumentation back in front and runs the real one.
    """
    folder = project.parent / f"{project.name}-hook"
    if not (folder / "sitecustomize.py").is_file():
        (folder / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HOOK, folder / "sitecustomize.py")
        wrapper = folder / "bin/python"
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH="{folder}${{PYTHONPATH:+{os.pathsep}$PYTHONPATH}}" exec "{sys.executable}" "$@"\n',
            encoding="utf-8",
        )
        wrapper.chmod(0o755)
    return folder


def harness_env(project: Path, **extra: str) -> dict[str, str]:
    base = pipeline_env()
    hook = hook_dir(project)
    return {**base, "PATH": f"{hook / 'bin'}{os.pathsep}{base['PATH']}",
            "PYTHONPATH": f"{hook}{os.pathsep}{project / 'src'}", **extra}  # fmt: skip


def load_stage(name: str) -> Any:
    """This checkout's stages/<name>.py as a module, to call its functions in the test's own process."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    assert spec is not None and spec.loader is not None, name
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dvc_bin() -> str:
    return str(Path(sys.executable).parent / "dvc")


def dvc(project: Path, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([dvc_bin(), *args], cwd=project, env=harness_env(project, **extra),
                            capture_output=True, text=True, check=False)  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def run_stage(
    project: Path, stage: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python stages/<stage>.py` in the project, as `dvc repro` runs it."""
    return subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=project, env=env or harness_env(project),
                          capture_output=True, text=True, check=False, timeout=timeout)  # fmt: skip


class Running:
    """A process started in its own session (so the test can kill it, or its whole group)."""

    def __init__(self, project: Path, args: Sequence[str], env: dict[str, str]) -> None:
        self.log = project.parent / f"{project.name}-{int(time.time() * 1000)}.log"
        self._log_handle = self.log.open("w")
        self.proc = subprocess.Popen(list(args), cwd=project, env=env, stdout=self._log_handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_handle.close()

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.proc.pid, sig)

    def alive(self) -> bool:
        return self.proc.poll() is None


def wait_for(condition: Any, what: str, running: Running | None = None, timeout: float = 180) -> Any:
    """Poll `condition()` until it returns something truthy; fail if `running` ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if running is not None and not running.alive():
            raise AssertionError(f"the process ended before {what}:\n{running.output()[-4000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- what is on disk ---------------------------------------------------------------------------------------


def _files(project: Path, exclude: Iterable[str] = ()) -> Iterable[Path]:
    skipped = {*_NOT_PROJECT, *exclude}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if any(rel == s or rel.startswith(f"{s}/") for s in skipped) or "__pycache__" in path.parts:
            continue
        if path.is_file() or path.is_symlink():
            yield path


def snapshot(project: Path, exclude: Iterable[str] = ()) -> dict[str, tuple[int, int, int]]:
    """Every file (not .git, not DVC's scratch) with inode, size and mtime: any write or replace shows."""
    out = {}
    for path in _files(project, exclude):
        stat = path.lstat()
        out[path.relative_to(project).as_posix()] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return out


def contents(project: Path, under: Iterable[str]) -> dict[str, str]:
    """md5 of every file below the given project paths (byte-identical comparisons)."""
    out = {}
    for top in under:
        root = project / top
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
        for path in paths:
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            out[path.relative_to(project).as_posix()] = digest
    return out


def leftovers(project: Path) -> list[str]:
    """Temporaries (`.tmp-*`) anywhere in the project but DVC's and git's own folders."""
    return sorted(
        p.relative_to(project).as_posix()
        for p in project.rglob(".tmp-*")
        if not any(part in (".git", ".dvc") for part in p.relative_to(project).parts)
    )


def cache_objects(project: Path) -> dict[str, str]:
    """DVC cache objects (relative path -> md5 of the content); DVC names each object by that md5."""
    root = project / ".dvc/cache/files/md5"
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def corrupt_cache_objects(project: Path) -> list[str]:
    """Objects whose content does not hash to their name: what a stage writing into a cached file would cause."""
    bad = []
    for rel, md5 in cache_objects(project).items():
        name = rel.replace("/", "").removesuffix(".dir")
        if name != md5:
            bad.append(rel)
    return bad


def lock_outs(project: Path) -> dict[str, dict[str, str]]:
    """stage -> {output path: md5} from dvc.lock ({} if there is none)."""
    lock = project / "dvc.lock"
    if not lock.is_file():
        return {}
    stages = yaml.safe_load(lock.read_text()).get("stages", {})
    return {name: {o["path"]: o["md5"] for o in stage.get("outs", [])} for name, stage in stages.items()}


def write_params(project: Path, change: dict[str, dict[str, Any]]) -> None:
    """Merge `change` into the project's params.yaml (a new file, never written in place)."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in change.items():
        params[section].update(values)
    replace_file(path, yaml.safe_dump(params, sort_keys=False).encode())


def replace_file(path: Path, data: bytes) -> None:
    """Write a new file and rename it over `path`: a DVC output may be a hard link into the cache."""
    tmp = path.with_name(f"{path.name}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)
