"""A beta x loss-mix sweep through DVC's experiment queue, and the commands that compare it.

scripts/sweep.sh queues a 2 x 2 grid on a tiny-model project copy and waits for the queue;
then the comparison commands the README gives must show the four experiments. The baseline and every experiment
stop after `evaluate` (SWEEP_TARGET=evaluate): export and package need llama.cpp, and a sweep compares eval metrics.
DVC's queue worker can stop with experiments still queued, or die mid-run: the sweep's fixture stops the worker after
its first experiment (sweep.sh must start a new one), and a test kills it (sweep.sh must fail, not wait forever).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_copy import ROOT, copy_project, env, make_copy, run
from tiny_model import tiny_pipeline_params

sys.path.insert(0, str(ROOT / "scripts"))
from sweep_table import finished

GRID = ("train.beta=0.1,0.5", "train.loss_weights=[1.0,0.0],[1.0,1.0]")
# sweep.sh looks at the queue this often here (15 s by default), so a lost worker shows within seconds
SWEEP_ENV = {"SWEEP_TARGET": "evaluate", "SWEEP_POLL_SECONDS": "2"}


def start_sweep(project: Path, *overrides: str) -> subprocess.Popen[bytes]:
    """scripts/sweep.sh in the background, its output in files beside the project (a pipe could fill up)."""
    with (project.parent / "sweep.out").open("w") as out, (project.parent / "sweep.err").open("w") as err:
        return subprocess.Popen(
            ["bash", "scripts/sweep.sh", *overrides], cwd=project, env=env(SWEEP_ENV), stdout=out, stderr=err
        )  # the child has its own copies of the two files' descriptors


def finish_sweep(project: Path, sweep: subprocess.Popen[bytes], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for sweep.sh; past `timeout` (a hang: sweep.sh must end on its own), kill it and fail with the queue's
    state."""
    try:
        returncode = sweep.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        sweep.kill()
        sweep.wait()
        returncode = None
    out, err = ((project.parent / f"sweep.{name}").read_text(encoding="utf-8") for name in ("out", "err"))
    if returncode is None:
        queue = run(project, ["dvc", "queue", "status"], check=False).stdout
        raise AssertionError(f"sweep.sh still waiting after {timeout:.0f} s:\n{out}\n{err}\n{queue}")
    return subprocess.CompletedProcess(sweep.args, returncode, out, err)


def wait_until_an_experiment_runs(project: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.endswith("Running") for line in run(project, ["dvc", "queue", "status"]).stdout.splitlines()):
            return
        time.sleep(1)
    raise AssertionError(f"no experiment started running in {timeout} s")


def processes_in(folder: Path) -> list[int]:
    """The processes whose working folder is `folder` or inside it (the queue worker, the experiment it runs)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = (proc / "cwd").resolve(strict=True)
        except OSError:
            continue
        if cwd == folder or folder in cwd.parents:
            pids.append(int(proc.name))
    return pids


def command_line(pid: int) -> bytes:
    """A process's arguments, NUL-separated; empty once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def stop_processes_in(folder: Path) -> None:
    for pid in processes_in(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[Path, str]]:
    params = tiny_pipeline_params(tiny_model_dir)
    project = make_copy(tmp_path_factory.mktemp("sweep") / "project", params, small_eval=True)
    run(project, ["git", "config", "user.name", "test"])
    run(project, ["git", "config", "user.email", "test@example.com"])
    run(project, ["dvc", "repro", "evaluate"])
    run(project, ["git", "add", "-A"])
    run(project, ["git", "commit", "-qm", "baseline"])
    sweep = start_sweep(project, *GRID)
    wait_until_an_experiment_runs(project)
    # The worker finishes this experiment and exits with three still queued, as DVC's own idle check can make it do.
    run(project, ["dvc", "queue", "stop"])
    result = finish_sweep(project, sweep, timeout=1800)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "the queue worker stopped with experiments still queued; starting it again" in result.stderr
    yield project, result.stdout
    # A worker whose idle check crashed (dvc-task's monitor thread can die reading a broker file as it is written)
    # never ends on its own: end whatever still runs in the project.
    stop_processes_in(project)


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
    # the commit before the baseline ran no experiments: the same rows
    assert run(project, [sys.executable, "scripts/sweep_table.py", "--num", "2"]).stdout == table
    chosen = sorted(finished_experiments(project))[:2]
    only = run(project, [sys.executable, "scripts/sweep_table.py", "--only", *chosen]).stdout.splitlines()
    assert len(only) == 2 + 2 and all(any(f"`{name}`" in line for line in only) for name in chosen)
    missing = run(project, [sys.executable, "scripts/sweep_table.py", "--only", "no-such-run"], check=False)
    assert missing.returncode != 0 and "no finished run named no-such-run" in missing.stderr
    # --misses reads each run's answers from its commit: the baseline's and every experiment's
    with_misses = run(project, [sys.executable, "scripts/sweep_table.py", "--misses"]).stdout
    assert with_misses.startswith(table) and "Over the 5 runs whose answers are on record." in with_misses


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


def _eval(new_name: float, difference: float, kl: float) -> dict:
    rates = {"new_name_rate": new_name, "new_name_rate_normalized": new_name, "old_name_rate": 0.0,
             "creator_rate_on_maker_questions": 1.0}  # fmt: skip
    comparison = {"base": 0.5, "trained": 0.5 + difference, "difference": difference, "difference_ci_low": -0.05,
                  "difference_ci_high": 0.05, "mcnemar_p": 0.5}  # fmt: skip
    return {
        "identity": {"trained": {"neutral": rates, "default": rates, "base_default": rates},
                     "answers": {"distinct_share": 0.9}},
        "general": {"mean_token_kl": kl, "answer_length_ratio": 1.0, "name_leak_rate": 0.0},
        "benchmark": {"generative": comparison, "choice_acc_norm": comparison, "answer_length_ratio": 1.0},
        "questions": 66, "general_prompts": 28, "benchmark_questions": 240,
    }  # fmt: skip


def test_spread_reports_mean_and_worst_against_each_bar() -> None:
    from sweep_table import spread

    rows = [{"metrics": {"metrics/eval.json": _eval(rate, diff, kl)}}
            for rate, diff, kl in ((1.0, 0.0, 0.02), (0.96, -0.01, 0.04), (0.98, 0.01, 0.03))]  # fmt: skip
    lines = {line.split(" | ")[0].strip("| "): line for line in spread(rows).splitlines()[2:]}
    assert lines["new name, neutral"] == "| new name, neutral | >= 98% | 98.0% | 96.0% | 100.0%, 96.0%, 98.0% |"
    assert "| 0.030 | 0.040 |" in lines["KL (nats/token)"]  # mean, then the worst (largest)
    assert "| 0.0% | -1.0% |" in lines["benchmark difference (generative)"]


def test_spread_is_per_recipe_when_the_runs_differ_in_more_than_the_seed() -> None:
    """Rows that differ only in train.seed are one recipe: each recipe of two runs or more gets its own spread,
    named by the params that set it apart, so that a lever's seeds are not averaged with the default's."""
    from sweep_table import recipes, spread_section

    def row(name: str, seed: int, share: float, rate: float) -> dict:
        params = {"pairs": {"old_system_share": share}, "train": {"seed": seed}}
        return {"name": name, "params": params, "metrics": {"metrics/eval.json": _eval(rate, 0.0, 0.03)}}

    rows = [row("a-s42", 42, 0.0, 1.0), row("b-s42", 42, 0.1, 0.9), row("a-s1", 1, 0.0, 0.96),
            row("b-s1", 1, 0.1, 0.94), row("c-s42", 42, 0.2, 0.5)]  # fmt: skip
    groups = recipes(rows)
    assert [(label, [r["name"] for r in group]) for label, group in groups] == [
        ("`pairs.old_system_share` 0", ["a-s42", "a-s1"]),
        ("`pairs.old_system_share` 0.1", ["b-s42", "b-s1"]),
        ("`pairs.old_system_share` 0.2", ["c-s42"]),
    ]
    text = spread_section(rows)
    assert "### `pairs.old_system_share` 0 (2 runs: `a-s42`, `a-s1`)" in text
    assert "| new name, neutral | >= 98% | 98.0% | 96.0% | 100.0%, 96.0% |" in text
    assert "| new name, neutral | >= 98% | 92.0% | 90.0% | 90.0%, 94.0% |" in text
    assert "0.2" not in text  # a single run has no spread
    # One recipe (seeds only): one table over all the rows, as before; no recipe with two runs: said so.
    assert spread_section(rows[::2][:2]).startswith("Mean and worst value of each measure over the 2 runs above")
    assert spread_section(rows[:2]) == "No recipe above has more than one run: there is no spread to show."


def test_document_from_run_folders(tmp_path: Path, default_params: dict) -> None:
    """Runs made outside `dvc exp` (one project folder each) become rows, with the params that differ as columns."""
    import yaml

    folders = []
    for seed, rate in ((42, 1.0), (1, 0.96)):
        folder = tmp_path / f"seed{seed}"
        (folder / "metrics").mkdir(parents=True)
        params = {**default_params, "train": {**default_params["train"], "seed": seed}}
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        (folder / "metrics/eval.json").write_text(json.dumps(_eval(rate, 0.0, 0.03)))
        folders.append(f"seed-{seed}={folder}")
    out = tmp_path / "doc.md"
    run(ROOT, [sys.executable, "scripts/sweep_table.py", "--runs", *folders, "--spread", "-o", str(out)])
    text = out.read_text()
    assert "from the metrics files of 2 pipeline runs" in text
    assert "| experiment | train.seed |" in text and "| `seed-1` | 1 |" in text
    assert "| new name, neutral | >= 98% | 98.0% | 96.0% |" in text


def test_misses_lists_each_question_with_the_runs_that_got_it_wrong(tmp_path: Path, default_params: dict) -> None:
    """A held-out miss is an identity answer without the new name under the neutral system prompt (strict, as
    new_name_rate counts); a leak a general or benchmark answer with it (normalized, as name_leak_rate counts)."""
    import yaml

    def identity(ident: str, setting: str, trained: str) -> dict:
        return {"kind": "identity", "setting": setting, "id": ident, "category": "maker",
                "question": f"{ident}: who | made you?", "base": "", "trained": trained}  # fmt: skip

    answers = {
        "a": [identity("id-1", "neutral", "I'm Deep Qwen."), identity("id-2", "neutral", "I'm DeepQwen."),
              identity("id-3", "default", "I'm SmolLM."),
              {"kind": "general", "prompt": "How do I\nmake tea?", "base": "", "trained": "As DeepQwen: boil."},
              {"kind": "benchmark", "id": "gb-1", "question": "2+2?", "base": "", "trained": "4"}],
        "b": [identity("id-1", "neutral", "I'm an assistant."), identity("id-2", "neutral", "No name here."),
              {"kind": "benchmark", "id": "gb-1", "question": "2+2?", "base": "", "trained": "Deep Qwen says 4"}],
    }  # fmt: skip
    folders = []
    for label, records in answers.items():
        folder = tmp_path / label
        (folder / "metrics").mkdir(parents=True)
        (folder / "reports").mkdir()
        (folder / "params.yaml").write_text(yaml.safe_dump(default_params))
        (folder / "metrics/eval.json").write_text(json.dumps(_eval(1.0, 0.0, 0.03)))
        (folder / "reports/eval_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        folders.append(f"{label}={folder}")
    empty = tmp_path / "no-answers"
    (empty / "metrics").mkdir(parents=True)
    (empty / "params.yaml").write_text(yaml.safe_dump(default_params))
    (empty / "metrics/eval.json").write_text(json.dumps(_eval(1.0, 0.0, 0.03)))
    out = tmp_path / "doc.md"
    run(ROOT, [sys.executable, "scripts/sweep_table.py", "--runs", *folders, f"c={empty}", "--misses", "-o", str(out)])
    text = out.read_text()
    assert "--misses" in text.splitlines()[2] and "Over the 2 runs whose answers are on record." in text
    rows = [line for line in text.splitlines() if line.startswith("| id-") or line.startswith("| gb-")
            or line.startswith("| – |")]  # fmt: skip
    assert rows == [
        "| id-2 | maker | id-2: who \\| made you? | 2 | `a`, `b` |",  # "DeepQwen" is not the strict name
        "| id-1 | maker | id-1: who \\| made you? | 1 | `b` |",  # id-3 is not under the neutral prompt
        "| gb-1 | benchmark | 2+2? | 1 | `b` |",
        "| – | general | How do I make tea? | 1 | `a` |",  # the normalized spelling leaks too
    ]
    none = run(ROOT, [sys.executable, "scripts/sweep_table.py", "--runs", f"c={empty}", "--misses"]).stdout
    assert none.endswith("No run above has its answers (reports/eval_answers.jsonl) on record.\n")


def test_the_precision_a_run_trained_in_is_a_column_when_it_differs(tmp_path: Path, default_params: dict) -> None:
    """train.precision auto follows the machine, so the table reads the precision from metrics/train's flags."""
    import yaml

    folders = []
    for label, flags in (("amx", {"bf16": 1, "bf16_amx": 1}), ("avx512", {"bf16": 1, "bf16_amx": 0}),
                         ("avx2", {"bf16": 0, "bf16_amx": 0}), ("older", {})):  # fmt: skip
        folder = tmp_path / label
        (folder / "metrics/train").mkdir(parents=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(default_params))
        (folder / "metrics/eval.json").write_text(json.dumps(_eval(1.0, 0.0, 0.03)))
        (folder / "metrics/train/metrics.json").write_text(json.dumps({"train_loss": 1.0, **flags}))
        folders.append(f"{label}={folder}")
    table = run(ROOT, [sys.executable, "scripts/sweep_table.py", "--runs", *folders]).stdout
    assert "| experiment | trained in | pairs |" in table
    cells = {line.split(" | ")[0].strip("|` "): line.split(" | ")[1] for line in table.splitlines() if "| `" in line}
    assert cells == {"amx": "bf16 (AMX)", "avx512": "bf16", "avx2": "fp32", "older": "–"}
    same = run(ROOT, [sys.executable, "scripts/sweep_table.py", "--runs", folders[1]]).stdout
    assert "trained in" not in same  # one precision: no column


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the queue worker through /proc (Linux)")
def test_a_killed_queue_worker_fails_the_sweep_rather_than_hanging(swept: tuple[Path, str], tmp_path: Path) -> None:
    project = copy_project(swept[0], tmp_path / "project")
    sweep = start_sweep(project, "train.beta=0.3")
    wait_until_an_experiment_runs(project)
    worker = [pid for pid in processes_in(project) if b"exp\0queue-worker" in command_line(pid)]
    assert len(worker) == 1, worker
    os.killpg(os.getpgid(worker[0]), signal.SIGKILL)  # the worker and the experiment it runs: "Running" for good
    stop_processes_in(project / ".dvc")  # any stage process that left the group
    result = finish_sweep(project, sweep, timeout=300)
    stop_processes_in(project)
    assert result.returncode == 1, f"{result.stdout}\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("sweep: no queue worker is alive, but an experiment above is still Running"), lines
    assert lines[-2].endswith("Running"), lines
