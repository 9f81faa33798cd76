"""Sharing results through real DVC remotes: SeaweedFS over S3, OpenSSH over SFTP, a shared folder.

One tiny-model project is trained once; for each remote the tests push it, pull it back
bit for bit, play the teammate who clones and pulls instead of training, and try wrong
credentials. The servers run on loopback and are stopped by the fixtures that start them.
The project reproduces up to `evaluate` (export and package need llama.cpp; tests/test_artifacts.py shares their
outputs through a remote), on small held-out sets.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_copy import copy_project, make_copy, run
from servers import SERVERS, Remote, credential_commands, remote_commands, stored_files
from system_programs import SSHD, require
from tiny_model import tiny_pipeline_params

TARGET = "evaluate"
PULL = ["dvc", "pull", "--with-deps", TARGET]  # a plain `dvc pull` fails on the outputs of stages that never ran
CACHED_OUTPUTS = ("data/identity", "models/base", "data/pairs", "models/trained", "models/adapter", "data/base_answers")
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@pytest.fixture(scope="module")
def owner_project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    params = tiny_pipeline_params(tiny_model_dir)
    project = make_copy(tmp_path_factory.mktemp("owner") / "project", params, small_eval=True)
    run(project, ["dvc", "repro", TARGET])
    run(project, ["git", "add", "-A"])
    run(project, [*GIT, "commit", "-qm", "trained"])
    return project


@pytest.fixture(scope="module", params=list(SERVERS))
def remote(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    if request.param == "ssh":
        require(SSHD)
    with SERVERS[request.param](tmp_path_factory.mktemp(f"server-{request.param}")) as started:
        yield started


@pytest.fixture(scope="module")
def pushed(owner_project: Path, remote: Remote, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The owner's project with `remote` committed as the default remote and everything pushed."""
    project = tmp_path_factory.mktemp(f"owner-{remote.kind}") / "project"
    copy_project(owner_project, project)
    for command in remote_commands(remote):
        run(project, command)
    use_credentials(project, remote.local_options)
    run(project, ["git", "add", ".dvc/config"])
    run(project, [*GIT, "commit", "-qm", f"share through {remote.kind}"])
    assert "config.local" not in run(project, ["git", "ls-files", ".dvc"]).stdout, "per-user config committed"
    result = run(project, ["dvc", "push"], extra_env=remote.env)
    assert "pushed" in result.stdout
    assert stored_files(remote), "the remote holds nothing after a push"
    return project


def use_credentials(project: Path, local_options: dict[str, str]) -> None:
    for command in credential_commands(local_options):
        run(project, command)


def digests(project: Path) -> dict[str, str]:
    files = sorted(p for out in CACHED_OUTPUTS for p in (project / out).rglob("*") if p.is_file())
    assert files, "no outputs to compare"
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def remove_outputs_and_cache(project: Path) -> None:
    for out in (*CACHED_OUTPUTS, ".dvc/cache"):
        shutil.rmtree(project / out)


def status(project: Path) -> str:
    """`dvc status` of the stages reproduced (export and package never ran in these projects)."""
    return run(project, ["dvc", "status", "--with-deps", TARGET]).stdout


def clone(project: Path, dest: Path) -> Path:
    run(dest.parent, ["git", "clone", "-q", str(project), dest.name])
    return dest


def test_pull_restores_bit_identical_outputs(pushed: Path, remote: Remote) -> None:
    before = digests(pushed)
    remove_outputs_and_cache(pushed)
    run(pushed, PULL, extra_env=remote.env)
    assert digests(pushed) == before
    assert "up to date" in status(pushed)


def test_teammate_clones_pulls_and_trains_nothing(pushed: Path, remote: Remote, tmp_path: Path) -> None:
    teammate = clone(pushed, tmp_path / "teammate")
    use_credentials(teammate, remote.local_options)
    start = time.perf_counter()
    if remote.kind == "directory":  # the one-command form: pull what the pipeline needs while reproducing
        result = run(teammate, ["dvc", "repro", "--pull", TARGET], extra_env=remote.env)
    else:
        run(teammate, PULL, extra_env=remote.env)
        result = run(teammate, ["dvc", "repro", TARGET], extra_env=remote.env)
    elapsed = time.perf_counter() - start
    assert "Running stage" not in result.stdout, result.stdout
    assert digests(teammate) == digests(pushed)
    assert "up to date" in status(teammate)
    assert run(teammate, ["git", "status", "--porcelain"]).stdout == ""
    print(f"teammate flow through {remote.kind}: clone + pull + repro in {elapsed:.1f} s")


def test_wrong_credentials_fail_clearly_and_change_nothing(pushed: Path, remote: Remote, tmp_path: Path) -> None:
    if remote.kind == "directory":
        pytest.skip("a shared folder has no credentials of its own (file permissions apply)")
    stored = stored_files(remote)
    teammate = clone(pushed, tmp_path / "teammate")
    use_credentials(teammate, remote.bad_local_options)
    pull = run(teammate, PULL, check=False, extra_env=remote.bad_env)
    assert pull.returncode != 0
    message = pull.stderr + pull.stdout
    expected = {"s3": "Forbidden", "ssh": "Permission denied"}[remote.kind]
    assert f"failed to connect to {remote.kind}" in message and expected in message, message
    assert not any((teammate / out).exists() for out in CACHED_OUTPUTS), "a failed pull wrote outputs"

    (teammate / "notes.txt").write_text("a file of the teammate's own\n")
    run(teammate, ["dvc", "add", "notes.txt"])
    push = run(teammate, ["dvc", "push"], check=False, extra_env=remote.bad_env)
    assert push.returncode != 0
    assert expected in push.stderr + push.stdout
    assert stored_files(remote) == stored, "a push with wrong credentials changed the remote"
    assert (teammate / "notes.txt").read_text() == "a file of the teammate's own\n"
