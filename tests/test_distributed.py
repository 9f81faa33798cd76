"""The train stage in 2 real processes on the CPU (DDP over gloo, `accelerate launch`), through `dvc repro`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from identity_dpo.atomic import read_jsonl
from pipeline_copy import make_copy, run
from tiny_model import tiny_pipeline_params

RANK_LINE = re.compile(
    r"train: rank (?P<rank>\d) of (?P<world>\d) \((?P<kind>\w+)\): (?P<steps>\d+) optimizer steps, "
    r"weights checksum (?P<start>\S+) -> (?P<end>\S+)"
)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, str]:
    params = tiny_pipeline_params(tiny_model_dir)
    # 2 processes x 2 pairs = the 4 pairs per step of the single-process pipeline test
    params["train"].update(batch_size=2, launch={"profile": "cpu_ddp", "processes": 2})
    project = make_copy(tmp_path_factory.mktemp("distributed"), params)
    result = run(project, ["dvc", "repro", "train"])
    return project, result.stdout + result.stderr


def test_training_ran_in_both_ranks_in_step(two_process_run: tuple[Path, str]) -> None:
    _, output = two_process_run
    ranks = {int(m["rank"]): m for m in RANK_LINE.finditer(output)}
    assert sorted(ranks) == [0, 1], output[-3000:]
    pairs_per_step = 2 * 2
    for line in ranks.values():
        assert (line["world"], line["kind"]) == ("2", "MULTI_CPU")
        assert int(line["steps"]) >= 1
        assert line["end"] != line["start"], "training did not change the weights"
    # Each rank trained on other pairs; equal weights afterwards mean the gradients were averaged (DDP).
    assert ranks[0]["start"] == ranks[1]["start"]
    assert ranks[0]["end"] == ranks[1]["end"]
    assert int(ranks[0]["steps"]) == -(-_pair_count(two_process_run[0]) // pairs_per_step)


def test_both_ranks_trained_in_the_precision_auto_picks_here(two_process_run: tuple[Path, str]) -> None:
    """train.precision auto under cpu_ddp: bf16 autocast in every rank where the CPU has native bf16 (the rank that
    prints says which instructions), fp32 elsewhere; the metrics record which."""
    from identity_dpo.launch import bf16_refusal

    project, output = two_process_run
    bf16 = bf16_refusal() is None
    assert json.loads((project / "metrics/train/metrics.json").read_text())["bf16"] == int(bf16)
    assert ("train: bf16 mixed precision on the CPU" in output) is bf16, output[-3000:]


def test_rank_zero_saved_a_model_that_loads(two_process_run: tuple[Path, str], tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    project, _ = two_process_run
    out = project / "models/trained"
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    assert any((a != b).any() for a, b in zip(model.parameters(), base.parameters(), strict=True))
    adapter = sorted(p.name for p in (project / "models/adapter").iterdir())
    assert adapter == ["adapter_config.json", "adapter_model.safetensors"]
    assert (project / "metrics/train/metrics.json").is_file()
    assert not list(project.rglob(".tmp-*")), "a temporary output was left behind"
    assert not list((project / "metrics").rglob("rank-*")), "another rank wrote into the outputs"


def _pair_count(project: Path) -> int:
    return len(read_jsonl(project / "data/pairs/pairs.jsonl"))
