"""The GPU profile (params-gpu.yaml) cannot run here: its params are validated, its documented command matches it, and
the optional vLLM generation backend is selected by params and refused clearly where it is not installed."""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import re
import shlex
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity_dpo.errors import ParamsError
from identity_dpo.params import Params, params_from_dict
from stage_harness import load_stage

ROOT = Path(__file__).resolve().parents[1]


def overrides() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params-gpu.yaml").read_text())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def with_overrides(base: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for dotted, value in flat.items():
        *parents, last = dotted.split(".")
        node = merged
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return merged


def documented_overrides() -> dict[str, Any]:
    """The -S KEY=VALUE pairs of the `dvc exp run` command in docs/scale-up.md (DVC reads each VALUE as YAML)."""
    text = (ROOT / "docs/scale-up.md").read_text()
    commands = [c for c in re.findall(r"```bash\n(.*?)```", text, re.S) if "dvc exp run -n qwen-0.5b-gpu" in c]
    assert len(commands) == 1, "docs/scale-up.md must hold the GPU profile's command exactly once"
    words = shlex.split(commands[0].replace("\\\n", " "), comments=True)
    sets = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    return {key: yaml.safe_load(value) for key, value in (s.split("=", 1) for s in sets)}


def test_gpu_profile_params_are_valid(default_params: dict[str, Any]) -> None:
    params = params_from_dict(with_overrides(default_params, flatten(overrides())))
    assert isinstance(params, Params)
    assert params.model.source.startswith("hf:Qwen/Qwen2.5-0.5B-Instruct@")
    assert re.fullmatch(r"[0-9a-f]{40}", params.model.source.rsplit("@", 1)[1]), "pin the model to a commit"
    assert params.identity.old_names == ["Qwen"] and params.identity.new_name == "Deep Qwen"
    assert params.pairs.max_prompts == 0  # the full data set
    assert params.train.precision == "bf16"
    assert params.train.max_length >= params.pairs.max_new_tokens + 64  # room for the prompt
    assert (params.train.launch.profile, params.train.launch.processes) == ("none", 1)  # one GPU
    assert params.train.batch_size * params.train.grad_accum == 8  # the lesson's 8 pairs per step


def test_every_override_is_a_known_key(default_params: dict[str, Any]) -> None:
    """A key that params.yaml does not have would be a typo that params.py reports; check it here first."""
    known = set(flatten(default_params))
    assert set(flatten(overrides())) <= known


def test_documented_command_applies_exactly_the_profile() -> None:
    assert documented_overrides() == flatten(overrides())


# --- the generation backend: vLLM is selected by params, and refused clearly where it is not installed ------


def test_gpu_profile_generates_with_vllm(default_params: dict[str, Any]) -> None:
    params = params_from_dict(with_overrides(default_params, flatten(overrides())))
    assert (params.pairs.backend, params.evaluate.backend) == ("vllm", "vllm")
    assert params_from_dict(default_params).pairs.backend == "transformers"  # the default stays transformers


def test_unknown_backend_names_the_key(default_params: dict[str, Any]) -> None:
    default_params["evaluate"]["backend"] = "vlm"
    with pytest.raises(ParamsError, match=r"evaluate\.backend: expected one of transformers, vllm, got 'vlm'"):
        params_from_dict(default_params)


@pytest.mark.parametrize(
    ("stage", "key"),
    [("make_pairs", "pairs.backend"), ("answer_base", "evaluate.backend"), ("evaluate", "evaluate.backend")],
)
def test_missing_vllm_is_refused_before_anything_loads(
    stage: str, key: str, default_params: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    section = key.split(".")[0]
    default_params[section]["backend"] = "vllm"
    monkeypatch.chdir(tmp_path)  # an empty folder: reading any input or weights would fail differently
    with pytest.raises(ParamsError) as error:
        load_stage(stage).main(params_from_dict(default_params))
    assert str(error.value) == (
        f"{key}: backend vllm needs the vllm package, which is not installed (on a machine with a CUDA GPU: "
        "pip install vllm; see docs/scale-up.md), or use transformers"
    )


class FakeVLLM:
    """Stands in for the vllm package: records what the backend asks for and answers with fixed token ids."""

    def __init__(self, answers: list[list[int]], finish_reasons: list[str]) -> None:
        self.answers, self.finish_reasons = answers, finish_reasons
        self.engines: list[dict[str, Any]] = []
        self.requests: list[tuple[list[dict[str, Any]], Any]] = []

    def module(self) -> types.ModuleType:
        fake = self
        module = types.ModuleType("vllm")
        module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)

        class LLM:
            def __init__(self, **kwargs: Any) -> None:
                fake.engines.append(kwargs)

            def generate(self, prompts: list[dict[str, Any]], sampling: Any, use_tqdm: bool) -> list[Any]:
                fake.requests.append((prompts, sampling))
                return [
                    types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids, finish_reason=reason)])
                    for ids, reason in zip(fake.answers, fake.finish_reasons, strict=True)
                ]

        module.LLM = LLM
        module.SamplingParams = lambda **kwargs: types.SimpleNamespace(**kwargs)
        return module


def test_vllm_backend_answers_through_the_same_interface(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from identity_dpo import generation
    from identity_dpo.chat_format import render_prompt
    from identity_dpo.generation import Generation, generate, stop_token_ids
    from identity_dpo.models import load_model

    model, tokenizer = load_model(tiny_model_dir)
    stops = stop_token_ids(model, tokenizer)
    stop = stops[0]
    hello = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    world = tokenizer(" world", add_special_tokens=False)["input_ids"]
    fake = FakeVLLM([[*hello, stop], [*hello, *world]], ["stop", "length"])
    monkeypatch.setitem(sys.modules, "vllm", fake.module())
    monkeypatch.setattr(generation, "_engines", {})
    conversations = [[{"role": "user", "content": "Who are you?"}], [{"role": "user", "content": "Hi"}]]

    answers = generate(model, tokenizer, conversations, max_new_tokens=7, batch_size=1, backend="vllm")

    assert answers == [Generation("Hello", len(hello), True), Generation("Hello world", len(hello) + len(world), False)]
    assert [e["model"] for e in fake.engines] == [str(tiny_model_dir)]  # the folder the model was loaded from
    prompts, sampling = fake.requests[0]
    assert prompts == [{"prompt_token_ids": render_prompt(tokenizer, c)} for c in conversations]
    assert (sampling.temperature, sampling.max_tokens, sampling.stop_token_ids) == (0.0, 7, stops)
    generate(model, tokenizer, conversations, max_new_tokens=7, batch_size=1, backend="vllm")
    assert len(fake.engines) == 1, "the engine of a folder is built once"
    # The precision reaches vLLM as the dtype it loads the folder in: fp32 on request, bf16 in a new engine.
    generate(model, tokenizer, conversations, max_new_tokens=7, batch_size=1, backend="vllm", precision="bf16")
    assert [e["dtype"] for e in fake.engines] == ["float32", "bfloat16"]


def test_transformers_backend_is_the_default(tiny_model_dir: Path) -> None:
    from identity_dpo.generation import generate
    from identity_dpo.models import load_model

    model, tokenizer = load_model(tiny_model_dir)
    conversations = [[{"role": "user", "content": "Who are you?"}], [{"role": "user", "content": "Hi there"}]]
    default = generate(model, tokenizer, conversations, max_new_tokens=6, batch_size=2)
    assert generate(model, tokenizer, conversations, max_new_tokens=6, batch_size=2, backend="transformers") == default
