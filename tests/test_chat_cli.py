"""`identity-dpo chat` on the tiny model: through a pipe (interactive mode), --prompt, --compare, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT


def chat(*args: str, stdin: str = "", cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "identity_dpo.cli", "chat", *args], input=stdin, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


def test_console_script_is_declared() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["identity-dpo"] == "identity_dpo.cli:main"


def test_prompt_answers_once(tiny_model_dir: Path) -> None:
    result = chat("--model", str(tiny_model_dir), "--prompt", "Who are you?", "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and result.stdout.strip()
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr


def test_interactive_through_a_pipe_keeps_history(tiny_model_dir: Path) -> None:
    # Greedy: the same first message answers the same; the second turn sees the first in its history.
    first = chat("--model", str(tiny_model_dir), "--prompt", "Hello", "--max-new-tokens", "6").stdout.strip()
    result = chat("--model", str(tiny_model_dir), "--max-new-tokens", "6", stdin="Hello\n\nWho are you?\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2, result.stdout  # one answer per message, the empty line skipped
    assert lines[0].strip() == first
    assert "Traceback" not in result.stderr


def test_compare_prints_both_models(tiny_model_dir: Path) -> None:
    result = chat("--model", str(tiny_model_dir), "--base", str(tiny_model_dir), "--compare", "--prompt", "Hi",
                  "--max-new-tokens", "4")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[base", "[trained"]
    assert lines[0].removeprefix("[base]") == lines[1].removeprefix("[trained]")  # the same weights, greedy


def test_system_message_is_used(tiny_model_dir: Path) -> None:
    plain = chat("--model", str(tiny_model_dir), "--prompt", "Hi", "--max-new-tokens", "6")
    system = chat("--model", str(tiny_model_dir), "--prompt", "Hi", "--max-new-tokens", "6", "--system", "Be brief.")
    assert plain.returncode == system.returncode == 0
    assert plain.stdout != system.stdout  # another prompt, another (random-weight) answer


@pytest.mark.parametrize(
    "model, message",
    [
        ("missing-folder", "--model: missing-folder does not exist"),
        ("missing.gguf", "--model: GGUF file missing.gguf does not exist"),
        ("notes.txt", "is a file but not a .gguf"),
        ("empty-folder", "has no config.json"),
    ],
)
def test_a_missing_or_invalid_model_is_one_line(tmp_path: Path, model: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty-folder").mkdir()
    result = chat("--model", model, "--prompt", "Hi", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stderr.startswith("identity-dpo chat: error: ")


def test_default_model_is_models_dpo(tmp_path: Path) -> None:
    result = chat("--prompt", "Hi", cwd=tmp_path)
    assert result.returncode == 2
    assert "--model: models/dpo does not exist" in result.stderr


def test_ctrl_c_exits_cleanly(tiny_model_dir: Path) -> None:
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "identity_dpo.cli", "chat", "--model", str(tiny_model_dir)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                               text=True)  # fmt: skip
    time.sleep(1.0)  # reading stdin or still loading: both end cleanly
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
