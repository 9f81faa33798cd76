"""The GPU profile (params-gpu.yaml) cannot run here; its params are validated, and its documented command matches it."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from identity_dpo.params import Params, params_from_dict

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
