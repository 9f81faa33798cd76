"""What a stage shows while it works: progress bars that count answers to the right total, one short line per
training log step, and no warnings a user can do nothing about."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_dpo.answers import EvalSet, IdentityQuestion, answer_all
from identity_dpo.benchmark import BenchmarkItem, choice_log_likelihoods
from identity_dpo.chat_format import render_prompt
from identity_dpo.cpu_kernels.decoding import greedy_decode
from identity_dpo.generation import generate, sample
from identity_dpo.models import load_model
from identity_dpo.params import IdentityParams, params_from_dict
from identity_dpo.progress import FinishedRows, log_line
from identity_dpo.training import TrainingProgress
from tiny_model import FAST_PARAMS, make_pairs

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = IdentityParams(old_names=["SmolLM"], new_name="Deep Qwen", system_prompt="You're a helpful assistant.")
# What TRL's DPO trainer logs at one step (the values of a real run, fewer keys).
STEP_LOG = {
    "loss": 0.51234, "grad_norm": 6.379, "learning_rate": 9.4e-4, "entropy": 2.474, "num_tokens": 1024.0,
    "rewards/chosen": 0.2238, "rewards/rejected": -1.0, "rewards/accuracies": 0.75, "rewards/margins": 1.2345,
    "logps/chosen": -1740.0, "epoch": 0.05263,
}  # fmt: skip


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tell me about the number {i}{'!' * i}"}] for i in range(n)]


def bar_counts(stderr: str, desc: str) -> list[tuple[int, int]]:
    """Every (done, total) the bar titled `desc` showed, in order (tqdm's carriage-return updates)."""
    return [(int(n), int(total)) for n, total in re.findall(rf"{re.escape(desc)}: +\d+%\|[^|]*\| *(\d+)/(\d+)", stderr)]


def assert_counts_up_to(stderr: str, desc: str, total: int) -> None:
    counts = bar_counts(stderr, desc)
    assert counts, f"no bar titled {desc!r} in: {stderr!r}"
    assert all(t == total for _, t in counts), counts
    done = [n for n, _ in counts]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total, counts


@pytest.fixture(autouse=True)
def bars_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


# --- the training log --------------------------------------------------------------------------------------------


def test_a_log_step_is_one_short_line() -> None:
    line = log_line(3, 16, STEP_LOG)
    assert line == "step  3/16  loss 0.512  rewards/margins 1.23  rewards/accuracies 0.75  lr 9.4e-04"
    assert log_line(12, 16, {"loss": 0.5}) == "step 12/16  loss 0.5"
    summary = {"train_runtime": 12.58, "train_samples_per_second": 6.041, "train_loss": 18.87, "epoch": 1.0}
    assert log_line(16, 16, summary) == "trained 16 steps in 12.6 s, mean loss 18.9"
    assert log_line(16, 16, {"epoch": 1.0}) is None  # nothing a user follows


def test_the_training_callback_prints_the_line_on_rank_zero_only(capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import TrainerControl, TrainerState

    progress = TrainingProgress()
    for rank_zero in (True, False):
        state = TrainerState(global_step=3, max_steps=16, is_world_process_zero=rank_zero)
        progress.on_log(None, state, TrainerControl(), logs=dict(STEP_LOG))
    out = capsys.readouterr().out
    assert out == log_line(3, 16, STEP_LOG) + "\n"


@pytest.fixture(scope="module")
def train_stage(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> subprocess.CompletedProcess[str]:
    """stages/train.py run as `dvc repro` runs it, in a folder holding its inputs: the tiny model and 12 pairs."""
    project = tmp_path_factory.mktemp("train-stage")
    shutil.copytree(tiny_model_dir, project / "models/base")
    (project / "data/pairs").mkdir(parents=True)
    (project / "data/pairs/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in make_pairs(12)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["train"].update(FAST_PARAMS["train"])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "PYTHONWARNINGS")}
    env |= {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "stages/train.py")], cwd=project, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


def test_the_train_stage_prints_one_line_per_step(train_stage: subprocess.CompletedProcess[str]) -> None:
    assert train_stage.returncode == 0, train_stage.stderr
    steps = 3  # 12 pairs, 4 a step, logged every step (params.yaml: train.logging_steps 1)
    lines = [line for line in train_stage.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == [f"{k}/{steps}" for k in range(1, steps + 1)]
    assert all(len(line) <= 100 and "loss" in line and "rewards/margins" in line for line in lines)
    assert f"trained {steps} steps in " in train_stage.stdout
    assert "{'" not in train_stage.stdout, "a raw log dict was printed"
    assert_counts_up_to(train_stage.stderr, "Training", steps)


def test_the_train_stage_shows_no_warnings(train_stage: subprocess.CompletedProcess[str]) -> None:
    """Fixed at their cause: the deprecated `gradient_checkpointing` argument (FutureWarning) and pinned memory
    without an accelerator (UserWarning); any other warning a user would see fails here too."""
    assert train_stage.returncode == 0, train_stage.stderr
    warned = [line for line in train_stage.stderr.replace("\r", "\n").splitlines() if re.search(r"\w+Warning: ", line)]
    assert warned == []


# --- the bars count answers ---------------------------------------------------------------------------------------


def test_greedy_decoding_reports_each_row_as_it_ends(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    prompts = [render_prompt(tokenizer, c) for c in conversations(5)]
    free = greedy_decode(model, prompts, 6, [], 0)
    stops = [free[0][0]]  # the first row ends at its first token; the others run on to the token cap or that token
    ended: list[int] = []
    ours = greedy_decode(model, prompts, 6, stops, 0, on_finished=ended.append)
    assert sum(ended) == len(prompts)
    assert ended[0] < len(prompts) and len(ended) > 1, "every row was reported at the end, not as it ended"
    assert ours == greedy_decode(model, prompts, 6, stops, 0), "watching the rows changed the answers"


def test_finished_rows_counts_each_row_once() -> None:
    import torch

    ended: list[int] = []
    rows = FinishedRows(stops=[2], on_finished=ended.append)
    rows.put(torch.tensor([[7, 8, 9], [7, 8, 9], [7, 8, 9]]))  # the prompts
    rows.put(torch.tensor([5, 2, 5]))
    rows.put(torch.tensor([2, 2, 6]))  # row 1 pads with the stop token once it ended: not counted again
    rows.put(torch.tensor([2, 2, 6]))
    rows.end()
    assert ended == [1, 1]


def test_generation_bars_count_answers_to_the_total(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    greedy = generate(model, tokenizer, conversations(7), max_new_tokens=5, batch_size=3, desc="Greedy answers")
    sampled = sample(
        model, tokenizer, conversations(7), max_new_tokens=5, batch_size=3, temperature=1.0, seed=0,
        desc="Sampled answers",
    )  # fmt: skip
    assert len(greedy) == len(sampled) == 7
    stderr = capsys.readouterr().err
    assert_counts_up_to(stderr, "Greedy answers", 7)
    assert_counts_up_to(stderr, "Sampled answers", 7)


def test_evaluation_bars_count_every_question(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], default_params: dict[str, Any]
) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    questions = [IdentityQuestion(f"q{i}", f"Who are you, {i}?", "name") for i in range(2)]
    items = [BenchmarkItem(f"b{i}", "math", f"What is {i} + {i}?", str(2 * i), (), ("7",)) for i in range(3)]
    evalset = EvalSet(questions, ["Name a colour.", "Say hello."], items)
    default_params["evaluate"].update({"max_new_tokens": 4, "batch_size": 4})
    params = params_from_dict(default_params).evaluate

    answers = answer_all(model, tokenizer, evalset, IDENTITY, params, "Be SmolLM.", who="Tiny")

    stderr = capsys.readouterr().err
    settings = len(answers.identity)  # neutral, default and base_default
    assert settings == 3
    assert_counts_up_to(stderr, "Tiny answering the evaluation questions", settings * 2 + 2 + 3)
    assert_counts_up_to(stderr, "Tiny scoring the multiple choice", 3)
    choice_log_likelihoods(model, tokenizer, items * 13, None)  # more than one scoring batch
    assert_counts_up_to(capsys.readouterr().err, "Scoring multiple choice", 39)


def test_tqdm_disable_turns_the_bars_off(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    generate(model, tokenizer, conversations(2), max_new_tokens=3, batch_size=2, desc="Hidden answers")
    assert "Hidden answers" not in capsys.readouterr().err
