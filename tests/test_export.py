"""The export and package stages on the tiny model: GGUF files from llama.cpp's own converter and quantizer, an
Ollama Modelfile, the answers in llama.cpp scored beside the transformers rate, and the packaged model with its card.

Needs llama-cpp-python built from its source distribution and llama.cpp's converter unpacked from it
(`bash scripts/setup_export.sh`); without them every test here skips with one line saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT
from identity_dpo.atomic import read_jsonl
from identity_dpo.chat_template import identity_system_prompt, old_name_mentions, rename_model_folder
from identity_dpo.params import params_from_dict
from llama_cpp_support import needs_export, require_export

# Without the llama.cpp build every test here skips with one line saying how to install it; CI builds it (.ci/run),
# and there a missing build fails these tests instead.
pytestmark = needs_export
QUESTIONS = 6
GENERAL = 3
BENCHMARK = 4
MAX_NEW_TOKENS = 6
TRAINED_GENERAL = "A short answer of the trained model."  # the transformers answers the GGUF lengths are measured by


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{stage}.py")], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A project holding what export and package read: a renamed tiny model, the eval metrics, questions, params."""
    require_export()
    project = tmp_path_factory.mktemp("export")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["evaluate"]["max_new_tokens"] = MAX_NEW_TOKENS
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = params_from_dict(raw)
    trained = shutil.copytree(tiny_model_dir, project / "models/trained")
    rename_model_folder(trained, identity_system_prompt(params.identity), params.identity.new_name,
                        params.identity.old_names)  # fmt: skip
    questions = (ROOT / "data/eval/identity_questions.jsonl").read_text().splitlines()[:QUESTIONS]
    (project / "data/eval").mkdir(parents=True)
    (project / "data/eval/identity_questions.jsonl").write_text("\n".join(questions) + "\n")
    general = (ROOT / "data/eval/general_prompts.jsonl").read_text().splitlines()[:GENERAL]
    (project / "data/eval/general_prompts.jsonl").write_text("\n".join(general) + "\n")
    bench = (ROOT / "data/eval/general_benchmark.jsonl").read_text().splitlines()[:BENCHMARK]
    (project / "data/eval/general_benchmark.jsonl").write_text("\n".join(bench) + "\n")
    rates = {"new_name_rate": 0.0, "new_name_rate_normalized": 0.0, "old_name_rate": 0.0}
    (project / "metrics/train").mkdir(parents=True)
    eval_metrics = {"identity": {m: {"neutral": rates, "default": rates} for m in ("base", "trained")},
                    "general": {"mean_token_kl": 0.12, "name_leak_rate": 0.0,
                                "benchmark": {"base_accuracy": 0.5, "trained_accuracy": 0.48}},
                    "benchmark": {"generative": {"base": 0.5, "trained": 0.25}},
                    "questions": QUESTIONS, "general_prompts": GENERAL}  # fmt: skip
    (project / "metrics/eval.json").write_text(json.dumps(eval_metrics))
    records = [{"kind": "general", "prompt": json.loads(row)["prompt"], "trained": TRAINED_GENERAL} for row in general]
    records += [{"kind": "benchmark", "id": json.loads(line)["id"], "trained": "Paris"} for line in bench]
    (project / "reports").mkdir()
    (project / "reports/eval_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (project / "metrics/train/metrics.json").write_text(json.dumps({"train_loss": 1.26, "step": 16, "epoch": 1.0}))
    result = run_stage(project, "export")
    assert result.returncode == 0, result.stderr
    return project


def test_export_writes_gguf_files_and_a_modelfile(project: Path) -> None:
    names = sorted(p.name for p in (project / "models/gguf").iterdir())
    assert names == ["Modelfile", "model-f16.gguf", "model-q4_k_m.gguf", "model-q8_0.gguf"]
    for name in names[1:]:
        assert (project / "models/gguf" / name).read_bytes()[:4] == b"GGUF"
    modelfile = (project / "models/gguf/Modelfile").read_text()
    assert modelfile.startswith("FROM ./model-q8_0.gguf\n")
    assert 'SYSTEM """You are Deep Qwen, a helpful AI assistant made by the identity-dpo project."""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|im_start|>"' in modelfile
    assert "{{ .System }}" in modelfile and "{{- range $i, $_ := .Messages }}" in modelfile


def test_gguf_stores_the_renamed_template(project: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(project / "models/gguf/model-q8_0.gguf")
    field = reader.fields["tokenizer.chat_template"]
    template = bytes(field.parts[field.data[0]]).decode()
    assert "You are Deep Qwen, a helpful AI assistant made by the identity-dpo project." in template
    assert "SmolLM" not in template


def test_llama_cpp_answers_like_transformers(project: Path) -> None:
    """f16 in llama.cpp gives the greedy answers transformers gives (the same prompt tokens, the same weights)."""
    from identity_dpo.chat_format import with_system
    from identity_dpo.generation import generate
    from identity_dpo.models import load_model

    rows = read_jsonl(project / "reports/export_answers.jsonl")
    assert len(rows) == 3 * (QUESTIONS + GENERAL + BENCHMARK)
    f16 = [r["answer"] for r in rows if r["file"] == "model-f16.gguf" and r["kind"] == "identity"]
    model, tokenizer = load_model(project / "models/trained")
    lines = (project / "data/eval/identity_questions.jsonl").read_text().splitlines()
    questions = [json.loads(line)["question"] for line in lines]
    conversations = [with_system([{"role": "user", "content": q}], "You're a helpful assistant.") for q in questions]
    expected = [g.text for g in generate(model, tokenizer, conversations, max_new_tokens=MAX_NEW_TOKENS, batch_size=8)]
    assert sum(a == b for a, b in zip(f16, expected, strict=True)) >= QUESTIONS - 1, (f16, expected)


def test_export_metrics_sit_beside_the_transformers_rate(project: Path) -> None:
    metrics = json.loads((project / "metrics/export.json").read_text())
    assert metrics["questions"] == QUESTIONS and metrics["setting"] == "neutral"
    assert metrics["transformers"]["new_name_rate"] == 0.0
    assert set(metrics["llama_cpp"]) == {"f16", "q8_0", "q4_k_m"}
    for entry in metrics["llama_cpp"].values():
        keys = {"new_name_rate", "new_name_rate_normalized", "old_name_rate", "new_name_rate_gap", "bytes"}
        assert keys <= set(entry)
        assert entry["within_2_points"] is True  # random weights never say the name: 0 and 0


def test_export_measures_general_ability_in_llama_cpp(project: Path) -> None:
    """Per GGUF: the name leak, the general answers' length against the transformers answers (same tokenizer) and
    the benchmark's generative accuracy, from the answers it wrote, beside the transformers results."""
    from transformers import AutoTokenizer

    from identity_dpo.benchmark import generative_correct, read_benchmark
    from identity_dpo.evaluation import name_leak_rate

    metrics = json.loads((project / "metrics/export.json").read_text())
    assert (metrics["general_prompts"], metrics["benchmark_questions"]) == (GENERAL, BENCHMARK)
    assert metrics["transformers"]["benchmark_generative"] == 0.25 and metrics["transformers"]["name_leak_rate"] == 0.0
    rows = read_jsonl(project / "reports/export_answers.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(project / "models/trained")
    items = read_benchmark(project / "data/eval/general_benchmark.jsonl")

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    for kind, entry in metrics["llama_cpp"].items():
        mine = [r for r in rows if r["file"] == f"model-{kind}.gguf"]
        general = [r["answer"] for r in mine if r["kind"] == "general"]
        bench = [r["answer"] for r in mine if r["kind"] == "benchmark"]
        assert len(general) == GENERAL and len(bench) == BENCHMARK
        assert entry["answer_length_vs_transformers"] == pytest.approx(
            sum(map(tokens, general)) / (GENERAL * tokens(TRAINED_GENERAL))
        )
        assert entry["answer_length_vs_transformers"] > 0  # the tiny model answers something
        assert entry["name_leak_rate"] == name_leak_rate([*general, *bench], "Deep Qwen")
        right = [generative_correct(a, item) for a, item in zip(bench, items, strict=True)]
        assert entry["benchmark_generative"] == sum(right) / BENCHMARK
        assert [r["right"] for r in mine if r["kind"] == "benchmark"] == right
        assert entry["same_general_answers"] == sum(a == TRAINED_GENERAL for a in general) / GENERAL


def test_export_with_answers_of_another_evaluation_set_is_one_line(project: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(project, tmp_path / "copy", ignore=shutil.ignore_patterns("gguf", "dpo"))
    answers = copy / "reports/eval_answers.jsonl"
    answers.write_text("".join(answers.read_text().splitlines(keepends=True)[1:]))  # one general answer missing
    result = run_stage(copy, "export")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "export: error: reports/eval_answers.jsonl: answers a different evaluation set; run the evaluate stage again"
    )


def test_package_copies_the_model_and_writes_a_card(project: Path) -> None:
    result = run_stage(project, "package")
    assert result.returncode == 0, result.stderr
    folder = project / "models/dpo"
    trained = sorted(p.name for p in (project / "models/trained").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*trained, "README.md"])
    for name in trained:
        assert (folder / name).read_bytes() == (project / "models/trained" / name).read_bytes()
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "apache-2.0"
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert front["pipeline_tag"] == "text-generation" and "dpo" in front["tags"]
    assert "# Deep Qwen" in card and "CC0-1.0" in card and "ollama create deep-qwen -f Modelfile" in card
    assert "| `model-q8_0.gguf` |" in card and "benchmark.trained_accuracy" in card
    # The old name only where the card names the base model.
    assert old_name_mentions(folder, ["SmolLM"]) == ["README.md"]
    assert all("SmolLM2-135M-Instruct" in line for line in card.splitlines() if "smollm" in line.lower())


def test_export_without_eval_metrics_is_one_line(project: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(project, tmp_path / "copy", ignore=shutil.ignore_patterns("gguf", "dpo"))
    (copy / "metrics/eval.json").unlink()
    result = run_stage(copy, "export")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "export: error: metrics/eval.json: file not found (an output of the evaluate stage: `dvc repro` makes it)"
    )


def test_chat_runs_a_gguf(project: Path) -> None:
    """`identity-dpo chat --model X.gguf` answers in llama.cpp, streamed, like a model folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    gguf = project / "models/gguf/model-q8_0.gguf"
    result = subprocess.run([sys.executable, "-m", "identity_dpo.cli", "chat", "--model", str(gguf), "--max-new-tokens",
                             "5"], input="Hi\nWho are you?\n", env=env, capture_output=True, text=True, timeout=300,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 2
    assert "Traceback" not in result.stderr


# --- batched generation in llama.cpp (identity_dpo.llama_batched) ------------------------------------------------


@pytest.fixture(scope="module")
def conversations(project: Path) -> list[list[dict[str, str]]]:
    """The project's identity questions and general prompts under the neutral system prompt: 9 conversations."""
    from identity_dpo.answers import read_identity_questions

    system = yaml.safe_load((project / "params.yaml").read_text())["identity"]["system_prompt"]
    questions = read_identity_questions(project / "data/eval/identity_questions.jsonl")
    lines = (project / "data/eval/general_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    return [q.conversation(system) for q in questions] + [
        [{"role": "system", "content": system}, {"role": "user", "content": p}] for p in prompts
    ]


@pytest.fixture(scope="module")
def tiny_llm(project: Path) -> Iterator[Any]:
    from identity_dpo.export import load_gguf

    llm = load_gguf(project / "models/gguf/model-f16.gguf")
    yield llm
    llm.close()


def test_batched_answers_equal_single_stream_greedy(project: Path, conversations: list, tiny_llm: Any) -> None:
    """Batched greedy answers are create_chat_completion's greedy answers, token for token: one sequence at a time
    and 4 side by side (more conversations than the batch: 3 waves)."""
    from identity_dpo.export import chat_answers
    from identity_dpo.llama_batched import batched_chat_answers

    max_new = 10
    single = chat_answers(project / "models/gguf/model-f16.gguf", conversations, max_new)
    for parallel in (1, 4):
        run = batched_chat_answers(tiny_llm, conversations, max_new, parallel=parallel)
        assert [a.text for a in run.answers] == single["answers"], parallel
        assert run.new_tokens == single["new_tokens"]
        assert all(a.text for a in run.answers)


def test_batched_token_cap_and_stop_tokens(conversations: list, tiny_llm: Any) -> None:
    """A shorter cap gives the start of the longer answers; a stop token ends its sequence's answer (the token
    left out) while the other sequences of its batch go on."""
    from identity_dpo.llama_batched import ChatPrompts, greedy_batched

    prompts = [ChatPrompts(tiny_llm).tokens(c)[0] for c in conversations]
    long = greedy_batched(tiny_llm, prompts, 12, parallel=4)
    short = greedy_batched(tiny_llm, prompts, 5, parallel=4)
    for (tokens, finished), (cut, cut_finished) in zip(long, short, strict=True):
        assert len(tokens) <= 12 and finished == (len(tokens) < 12)  # random weights: the cap ends most answers
        assert cut == tokens[:5] and cut_finished == (finished and len(tokens) < 5)
    stop = long[0][0][3]  # the first answer's 4th token: a stop token from now on
    stopped = greedy_batched(tiny_llm, prompts, 12, parallel=4, stops={stop})
    assert stopped[0] == (long[0][0][: long[0][0].index(stop)], True)
    for (tokens, finished), got in zip(long, stopped, strict=True):
        expected = (tokens[: tokens.index(stop)], True) if stop in tokens else (tokens, finished)
        assert got == expected
    assert any(stop not in tokens for tokens, _ in long)  # some sequences did go on past the stopped one


def test_batched_bad_input_is_one_line(tiny_llm: Any) -> None:
    import llama_cpp

    from identity_dpo.errors import PipelineError
    from identity_dpo.llama_batched import greedy_batched

    assert greedy_batched(tiny_llm, [], 5) == []
    limit = llama_cpp.llama_model_n_ctx_train(tiny_llm._model.model)
    with pytest.raises(PipelineError, match=rf"a prompt of {limit} tokens \+ 5 new tokens exceeds the model's context"):
        greedy_batched(tiny_llm, [[1] * limit], 5)
    with pytest.raises(PipelineError, match="max_new_tokens and parallel must be >= 1"):
        greedy_batched(tiny_llm, [[1, 2]], 0)
