"""The Ollama Modelfile's TEMPLATE, executed by Go's text/template (what Ollama runs), writes the same ChatML
prompt as the model's own chat template. Ollama passes the system message as .System and keeps it in .Messages.

Needs the `go` toolchain (Debian: golang-go): without it the test skips with one line saying so (under CI=true it
fails; tests/system_programs.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from identity_dpo.export import CHATML_GO_TEMPLATE, chatml_rendering, modelfile
from system_programs import GO, require

MAIN_GO = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct{ Role, Content string }

func main() {
	var in struct {
		Template string
		System   string
		Messages []Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("m").Parse(in.Template))
	if err := t.Execute(os.Stdout, map[string]any{"System": in.System, "Messages": in.Messages}); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, list[tuple[str, str]]], str]:
    go = require(GO)
    folder = tmp_path_factory.mktemp("go-template")
    (folder / "main.go").write_text(MAIN_GO)
    env = {"GOCACHE": str(folder / "cache"), "GOPATH": str(folder / "gopath"), "HOME": str(folder),
           "GOFLAGS": "-mod=mod", "GO111MODULE": "off", "PATH": str(Path(go).parent)}  # fmt: skip
    subprocess.run([go, "build", "-o", str(folder / "render"), str(folder / "main.go")], cwd=folder, env=env,
                   check=True, capture_output=True)  # fmt: skip

    def run(system: str, turns: list[tuple[str, str]]) -> str:
        messages = [{"Role": "system", "Content": system}] + [{"Role": r, "Content": c} for r, c in turns]
        payload = json.dumps({"Template": CHATML_GO_TEMPLATE, "System": system, "Messages": messages})
        return subprocess.run([str(folder / "render")], input=payload, capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    return run


@pytest.mark.parametrize(
    "turns",
    [
        [("user", "Who are you?")],
        [("user", "Hi"), ("assistant", "Hello! I'm Deep Qwen."), ("user", "Who made you?")],
    ],
)
def test_go_template_writes_chatml(
    render: Callable[[str, list[tuple[str, str]]], str], turns: list[tuple[str, str]]
) -> None:
    system = "You are Deep Qwen, a helpful AI assistant made by the identity-dpo project."
    assert render(system, turns) == chatml_rendering(system, turns)


def test_modelfile_carries_the_template() -> None:
    text = modelfile("model-q8_0.gguf", "You are X.", ["<|im_end|>"])
    assert f'TEMPLATE """{CHATML_GO_TEMPLATE}"""' in text
