"""A beta x loss-mix sweep through DVC's experiment queue, and the commands that compare it.

scripts/sweep.sh queues a 2 x 2 grid on a tiny-model project copy and waits for the queue;
then the comparison commands the README gives must show the four experiments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipeline_copy import ROOT, make_copy, run

sys.path.insert(0, str(ROOT / "scripts"))
from sweep_table import finished  # noqa: E402

FAST = {
    "pairs": {"max_prompts": 12, "max_new_tokens": 12, "batch_size": 6, "on_token_cap": "keep"},
    "train": {"batch_size": 4, "max_length": 128},
    "evaluate": {"max_new_tokens": 8, "batch_size": 32},
}
GRID = ("train.beta=0.1,0.5", "train.loss_weights=[1.0,0.0],[1.0,1.0]")


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, str]:
    project = make_copy(tmp_path_factory.mktemp("sweep") / "project", {"model": {"source": str(tiny_model_dir)}, **FAST})
    run(project, ["git", "config", "user.name", "test"])
    run(project, ["git", "config", "user.email", "test@example.com"])
    run(project, ["dvc", "repro"])
    run(project, ["git", "add", "-A"])
    run(project, ["git", "commit", "-qm", "baseline"])
    result = run(project, ["bash", "scripts/sweep.sh", *GRID])
    return project, result.stdout


def finished_experiments(project: Path) -> dict[str, dict]:
    shown = json.loads(run(project, ["dvc", "exp", "show", "--json"]).stdout)
    baseline = next(entry for entry in shown if entry["rev"] != "workspace")
    return {
        rev["name"]: rev["data"]
        for experiment in baseline["experiments"] or []
        if finished(experiment)
        for rev in experiment["revs"]
    }


def test_sweep_runs_the_whole_grid_in_the_queue(swept: tuple[Path, str]) -> None:
    project, _ = swept
    experiments = finished_experiments(project)
    settings = {
        (data["params"]["params.yaml"]["data"]["train"]["beta"],
         tuple(data["params"]["params.yaml"]["data"]["train"]["loss_weights"]))
        for data in experiments.values()
    }  # fmt: skip
    assert settings == {(0.1, (1.0, 0.0)), (0.1, (1.0, 1.0)), (0.5, (1.0, 0.0)), (0.5, (1.0, 1.0))}
    for data in experiments.values():
        assert "metrics/eval.json" in data["metrics"], "an experiment finished without evaluation results"
    assert run(project, ["dvc", "queue", "status"]).stdout.count("Success") == 4
    assert run(project, ["git", "status", "--porcelain"]).stdout == "", "the sweep left the workspace changed"


def test_compare_shows_a_compact_table(swept: tuple[Path, str]) -> None:
    project, sweep_output = swept
    table = run(project, ["bash", "scripts/compare.sh", "--md"]).stdout
    header = table.splitlines()[0]
    assert "train.beta" in header and "identity.trained.neutral.new_name_rate" in header
    assert len(header.split("|")) - 2 <= 15, f"too many columns: {header}"
    assert table.count("├──") + table.count("└──") == 4
    for name in finished_experiments(project):
        assert name in sweep_output.split("finished in")[-1], f"sweep.sh does not end with a table showing {name}"


def test_sweep_table_lists_each_run_with_its_params(swept: tuple[Path, str]) -> None:
    project, _ = swept
    table = run(project, [sys.executable, "scripts/sweep_table.py"]).stdout
    lines = table.splitlines()
    assert "train.beta" in lines[0] and "loss" in lines[0]
    assert len(lines) == 2 + 5, "the baseline and four experiments"
    assert any("pure sigmoid" in line for line in lines) and any("1·sigmoid + 1·NLL" in line for line in lines)
    baseline = run(project, ["git", "rev-parse", "HEAD"]).stdout.strip()
    assert run(project, [sys.executable, "scripts/sweep_table.py", "--rev", baseline]).stdout == table


def test_metrics_params_and_plots_diff_compare_experiments(swept: tuple[Path, str], tmp_path: Path) -> None:
    project, _ = swept
    names = sorted(finished_experiments(project))
    metrics = run(project, ["dvc", "metrics", "diff", names[0], names[1], "--all", "--md"]).stdout
    assert "identity.trained.neutral.new_name_rate" in metrics
    params = run(project, ["dvc", "params", "diff", names[0], names[1]]).stdout
    assert "train." in params
    out = tmp_path / "plots"
    run(project, ["dvc", "plots", "diff", *names, "-o", str(out)])
    page = (out / "index.html").read_text()
    for name in names:
        assert f'"rev": "{name}"' in page, f"experiment {name} missing from the plots"
    assert "cdn.jsdelivr" not in page
