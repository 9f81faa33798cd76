"""A stage killed part-way (SIGKILL) loses nothing, caches nothing partial, and the next `dvc repro` recovers.

What a real interruption is: the kernel's OOM killer SIGKILLs the one process that grew (the stage);
a closed terminal, `kill -9` of the job, or a lost machine takes the whole process group, `dvc` included.
Both are exercised. The moment of the kill is chosen from outside, by instrumentation on the
PYTHONPATH of the processes (tests/stage_harness.py): either a stage is stopped right before it moves
its first (or second) finished output into place, the point where a non-atomic writer would leave half
an output behind, or it is killed in the middle of training, once it has logged a step.

DVC itself deletes a stage's outputs before running it, so after an interrupted `dvc repro` the
previous outputs are not in the workspace: they are in the DVC cache (and in git for the uncached
metrics), and `dvc checkout` / `git checkout` bring them back byte for byte. The stage scripts on their
own never touch a previous output before the new one is complete (test_stage_killed_before_moving_*).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest

from pipeline_copy import copy_project
from pipeline_copy import run as pipeline_run
from stage_harness import (
    TARGET,
    Running,
    cache_objects,
    clean_project,
    contents,
    corrupt_cache_objects,
    dvc,
    dvc_bin,
    harness_env,
    leftovers,
    lock_outs,
    new_project,
    snapshot,
    wait_for,
    write_params,
)

OUTPUTS = ("data/identity", "data/pairs", "data/base_answers", "models", "metrics", "reports", "logs/params.ok")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A clean, uninterrupted `dvc repro` of the same project (shared with test_reproducibility)."""
    return clean_project(tmp_path_factory, tiny_model_dir)


def _runs(project: Path) -> set[str]:
    root = project / ".dvc/cache/runs"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def _start_repro(project: Path, **pause: str) -> Running:
    """`dvc repro evaluate`: every stage the harness projects reproduce (export and package need llama.cpp)."""
    return Running(project, [dvc_bin(), "repro", TARGET], harness_env(project, **pause))


def _pause(project: Path, stage: str, n: int) -> dict[str, str]:
    """Environment that stops `stage` right before the n-th move of a finished output into place."""
    marker = project.parent / f"{project.name}-{stage}-paused-{n}.json"
    marker.unlink(missing_ok=True)
    return {"IDDPO_PAUSE_STAGE": stage, "IDDPO_PAUSE_BEFORE_MOVE": str(n), "IDDPO_PAUSE_MARKER": str(marker)}


def _paused(env: dict[str, str], running: Running) -> dict[str, str]:
    """Wait until the stage has stopped; its pid and the output it was about to move."""
    marker = Path(env["IDDPO_PAUSE_MARKER"])
    stage = env["IDDPO_PAUSE_STAGE"]
    return wait_for(lambda: marker.is_file() and json.loads(marker.read_text()), f"{stage} to pause", running)


def _mid_training(project: Path) -> bool:
    """The train stage has logged at least one step into its (temporary) curves folder."""
    return any(any(tmp.rglob("*.tsv")) for tmp in (project / "metrics").glob(".tmp-train-*"))


def _kill(running: Running, how: str, pid: int) -> int:
    if how == "stage":  # the OOM killer's choice: the stage process alone; dvc sees it fail
        os.kill(pid, signal.SIGKILL)
        code = running.wait()
        assert code != 0, running.output()
        assert "failed to reproduce" in running.output() or "ERROR" in running.output(), running.output()
    else:  # everything: dvc, its shell and the stage
        running.kill_group(signal.SIGKILL)
        code = running.wait()
        assert code == -signal.SIGKILL
    return code


def _assert_nothing_partial_cached(project: Path, reference: Path) -> None:
    """Every cache object is intact and is one a clean run also makes: nothing partial was cached."""
    assert corrupt_cache_objects(project) == []
    extra = set(cache_objects(project)) - set(cache_objects(reference))
    assert not extra, f"cache objects a clean run does not have (partial outputs?): {sorted(extra)}"
    assert _runs(project) <= _runs(reference), "a run-cache entry for an interrupted stage"


def test_repro_recovers_from_every_stage_being_killed(tmp_path: Path, tiny_model_dir: Path, reference: Path) -> None:
    """Kill each stage in turn while `dvc repro` runs it; each next repro goes on; the end equals a clean run."""
    project = new_project(tmp_path / "project", tiny_model_dir)

    # 0. validate, stopped with its check passed but logs/params.ok not moved in; the stage alone is killed:
    #    no other stage runs without it.
    env = _pause(project, "validate", 1)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    assert info["final"] == "logs/params.ok" and leftovers(project), info
    _kill(running, "stage", int(info["pid"]))
    assert not (project / "logs/params.ok").exists() and not (project / "data/identity").exists()
    assert lock_outs(project) == {}
    _assert_nothing_partial_cached(project, reference)

    # 1. validate reruns; fetch_data is stopped with its prompts and metrics complete but not moved in; the stage
    #    alone is killed.
    env = _pause(project, "fetch_data", 1)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    assert info["final"] == "data/identity" and leftovers(project), info
    _kill(running, "stage", int(info["pid"]))
    assert not (project / "data/identity").exists() and not (project / "metrics/data.json").exists()
    assert "fetch_data" not in lock_outs(project)
    _assert_nothing_partial_cached(project, reference)

    # 2. fetch_data reruns (clearing the stale temporaries); fetch_model is stopped before moving its folder
    #    in, and everything is killed, dvc included.
    env = _pause(project, "fetch_model", 1)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    _kill(running, "group", int(info["pid"]))
    assert not (project / "models/base").exists()
    assert set(lock_outs(project)) == {"validate", "fetch_data"}
    assert lock_outs(project)["fetch_data"] == lock_outs(reference)["fetch_data"]
    assert not any(".tmp-identity" in p for p in leftovers(project)), "stale temporaries were not cleared"
    _assert_nothing_partial_cached(project, reference)

    # 3. make_pairs is stopped between its two outputs: data/pairs is in place, metrics/pairs.json is not.
    env = _pause(project, "make_pairs", 2)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    assert info["final"].endswith("metrics/pairs.json")
    _kill(running, "stage", int(info["pid"]))
    assert (project / "data/pairs/pairs.jsonl").is_file() and not (project / "metrics/pairs.json").exists()
    assert "make_pairs" not in lock_outs(project), "DVC recorded a stage that did not finish"
    _assert_nothing_partial_cached(project, reference)
    status = dvc(project, "status", "make_pairs").stdout
    assert "make_pairs" in status and "up to date" not in status

    # 4. train is killed in the middle of training (a step logged), with dvc.
    running = _start_repro(project)
    wait_for(lambda: _mid_training(project), "train to log a step", running)
    _kill(running, "group", 0)
    assert not (project / "models/trained").exists()
    assert "train" not in lock_outs(project)
    _assert_nothing_partial_cached(project, reference)

    # 5. answer_base is stopped before moving the base model's answers in, and everything is killed.
    env = _pause(project, "answer_base", 1)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    assert info["final"] == "data/base_answers/answers.json", info
    _kill(running, "group", int(info["pid"]))
    assert not (project / "data/base_answers/answers.json").exists()
    assert "answer_base" not in lock_outs(project)
    _assert_nothing_partial_cached(project, reference)

    # 6. evaluate is stopped before moving any of its five outputs in; the stage alone is killed.
    env = _pause(project, "evaluate", 1)
    running = _start_repro(project, **env)
    info = _paused(env, running)
    _kill(running, "stage", int(info["pid"]))
    assert not (project / "metrics/eval.json").exists()
    assert "evaluate" not in lock_outs(project)
    _assert_nothing_partial_cached(project, reference)

    # 7. The next repro completes: every output hash, the cache and the run cache equal the clean run's.
    result = dvc(project, "repro", TARGET)
    assert "Running stage 'evaluate'" in result.stdout
    assert lock_outs(project) == lock_outs(reference)
    assert (project / "dvc.lock").read_bytes() == (reference / "dvc.lock").read_bytes()
    assert contents(project, OUTPUTS) == contents(reference, OUTPUTS)
    assert set(cache_objects(project)) == set(cache_objects(reference))
    assert _runs(project) == _runs(reference)
    assert corrupt_cache_objects(project) == []
    assert leftovers(project) == [], "temporaries left after a complete run"
    assert "up to date" in dvc(project, "status", "--with-deps", TARGET).stdout


# What each stage is given to make outputs that differ from the committed ones.
CHANGES = {
    "validate": {"train": {"beta": 0.5}},  # the same logs/params.ok, written anew
    "fetch_data": {"data": {"source": "cases/identity.json"}},
    "fetch_model": {"model": {"dtype": "bfloat16"}},
    "make_pairs": {"pairs": {"seed": 1}},
    "train": {"train": {"beta": 0.5}},
    "answer_base": {"evaluate": {"max_new_tokens": 6}},
    "evaluate": {"evaluate": {"max_new_tokens": 6}},
}


@pytest.fixture(scope="module")
def used_project(tmp_path_factory: pytest.TempPathFactory, reference: Path) -> Path:
    """A project whose outputs the user has: a complete run, committed."""
    project = copy_project(reference, tmp_path_factory.mktemp("used") / "project")
    rows = (project / "data/source/identity.jsonl").read_text(encoding="utf-8").splitlines()
    (project / "cases").mkdir()
    (project / "cases/identity.json").write_text("[" + ",".join(rows[:40]) + "]", encoding="utf-8")
    return project


@pytest.mark.parametrize("stage", list(CHANGES))
def test_stage_killed_before_moving_its_outputs_leaves_the_old_ones(used_project: Path, stage: str) -> None:
    """The stage script on its own (no DVC) killed with its new outputs complete but not moved in."""
    project = used_project
    params = (project / "params.yaml").read_bytes()
    before = snapshot(project, exclude=["params.yaml"])
    try:
        write_params(project, CHANGES[stage])
        env = _pause(project, stage, 1)
        running = Running(project, [sys.executable, f"stages/{stage}.py"], harness_env(project, **env))
        info = _paused(env, running)
        assert any(".tmp-" in p for p in (info["tmp"], *leftovers(project))), info
        os.kill(int(info["pid"]), signal.SIGKILL)
        assert running.wait() == -signal.SIGKILL
        after = snapshot(project, exclude=["params.yaml"])
        # Not one byte, inode or timestamp of what the user had changed; only temporaries were added.
        assert {k: v for k, v in after.items() if ".tmp-" not in k} == before
    finally:
        (project / "params.yaml").write_bytes(params)
        for leftover in leftovers(project):  # what the stage's next run clears
            path = project / leftover
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def test_interrupted_retraining_loses_nothing_the_user_had(used_project: Path, reference: Path) -> None:
    """Change beta, `dvc repro`, kill everything mid-training, change the param back.

    DVC removed the train stage's old outputs from the workspace before running it, but nothing is lost:
    `dvc checkout` brings back the cached model and git the uncached curves, byte for byte, and the
    next `dvc repro` reruns only the validate stage (seconds), not training. (DVC's run cache cannot do it by
    itself: it skips stages with uncached outputs, and `dvc repro` would retrain to the same bytes.)
    """
    project = used_project
    committed = contents(project, OUTPUTS)
    params = (project / "params.yaml").read_bytes()
    write_params(project, CHANGES["train"])
    running = _start_repro(project)
    wait_for(lambda: _mid_training(project), "train to log a step", running)
    _kill(running, "group", 0)
    _assert_nothing_partial_cached(project, reference)
    (project / "params.yaml").write_bytes(params)  # the user changes their mind

    pipeline_run(project, ["git", "checkout", "--", "metrics"])
    dvc(project, "checkout", "--with-deps", TARGET)  # export and package never ran: they have nothing to check out
    assert {path: md5 for path, md5 in contents(project, OUTPUTS).items() if "/.tmp-" not in path} == committed
    # validate had passed with the abandoned beta before train was killed, and dvc.lock recorded it: validate alone
    # reruns (seconds, the same logs/params.ok), and nothing after it.
    result = dvc(project, "repro", TARGET)
    assert re.findall(r"Running stage '(\w+)'", result.stdout) == ["validate"], result.stdout
    assert "up to date" in dvc(project, "status", "--with-deps", TARGET).stdout
    assert {path: md5 for path, md5 in contents(project, OUTPUTS).items() if "/.tmp-" not in path} == committed
    # Only the killed stage's hidden temporaries are left; its next run removes them.
    killed = ("models/.tmp-trained-", "models/.tmp-adapter-", "metrics/.tmp-train-")
    assert all(p.startswith(killed) for p in leftovers(project)), leftovers(project)
