"""Stage export: models/trained -> models/gguf/ (f16, Q8_0 and Q4_K_M GGUF files and an Ollama Modelfile), then the
held-out identity questions, the general prompts and the benchmark through each GGUF in llama.cpp ->
metrics/export.json, beside the transformers results of the evaluate stage.

The GGUFs come from llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python source
distribution) and quantizer (llama_model_quantize); identity_dpo.export has the details. Each file answers the
questions, general prompts and benchmark questions under the neutral system prompt (identity.system_prompt), as the
evaluate stage asks them, greedily, evaluate.max_new_tokens tokens at most, with the chat template stored in the GGUF,
batched (identity_dpo.llama_batched), and the answers are scored like the evaluate stage's: identity rates, the
new name's leak into general answers, the general answers' length against the transformers trained model's
answers (reports/eval_answers.jsonl, counted with the same tokenizer), and the benchmark's generative accuracy.
"""

import json
from pathlib import Path

from identity_dpo.answers import EvalSet, general_conversations, read_evalset
from identity_dpo.atomic import atomic_outputs, read_jsonl
from identity_dpo.benchmark import benchmark_conversations, generative_correct
from identity_dpo.chat_template import identity_system_prompt
from identity_dpo.errors import DataError
from identity_dpo.evaluation import answer_tokens, name_leak_rate
from identity_dpo.export import (
    QUANTS,
    check_bindings,
    check_chatml,
    convert,
    find_converter,
    gguf_name,
    modelfile,
    quantize,
)
from identity_dpo.llama_batched import gguf_batched_answers
from identity_dpo.models import check_model_folder
from identity_dpo.params import Params
from identity_dpo.scoring import identity_rates
from identity_dpo.stage import run_stage

TRAINED_MODEL = Path("models/trained")
EVAL_METRICS = Path("metrics/eval.json")
EVAL_ANSWERS = Path("reports/eval_answers.jsonl")  # the transformers trained model's answers, from evaluate
OUT_DIR = Path("models/gguf")
METRICS = Path("metrics/export.json")
ANSWERS = Path("reports/export_answers.jsonl")  # every answer of every file, for reading
STEM = "model"  # models/gguf/model-f16.gguf, model-q8_0.gguf, model-q4_k_m.gguf: fixed paths for dvc.yaml artifacts
OLLAMA_GGUF = "q8_0"  # the file the Modelfile runs: half the size of f16; its rates are in metrics/export.json
MAX_GAP = 0.02  # the acceptance bound on |llama.cpp rate - transformers rate|, recorded per file


def main(params: Params) -> None:
    check_bindings()  # before any work: both fail with one line saying how to get them
    converter = find_converter()
    check_model_folder(TRAINED_MODEL, "models/trained")
    reference, reference_general = transformers_results()
    evalset = read_evalset(params.evaluate)  # the evaluation's questions, multi-turn context included
    questions = evalset.questions
    trained_general, trained_benchmark = transformers_answers(evalset)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TRAINED_MODEL)
    check_chatml(tokenizer)
    stops = sorted({"<|im_end|>", "<|im_start|>", tokenizer.eos_token} - {None})
    identity = params.identity
    conversations = [q.conversation(identity.system_prompt) for q in questions]
    conversations += general_conversations(evalset.general, identity)
    conversations += benchmark_conversations(evalset.benchmark, identity.system_prompt)
    n, g = len(questions), len(evalset.general)
    trained_general_tokens = answer_tokens(tokenizer, trained_general)  # as the evaluate stage counts length
    files: dict[str, dict] = {}
    answers: list[dict] = []
    with atomic_outputs() as outputs:
        folder = outputs.dir(OUT_DIR)
        f16 = folder / gguf_name(STEM, "f16")
        convert(TRAINED_MODEL, f16, converter)
        paths = {"f16": f16}
        for kind in QUANTS:
            paths[kind] = folder / gguf_name(STEM, kind)
            quantize(f16, paths[kind], kind)
        (folder / "Modelfile").write_text(modelfile(paths[OLLAMA_GGUF].name, identity_system_prompt(identity), stops))
        for kind, path in paths.items():
            run = gguf_batched_answers(path, conversations, params.evaluate.max_new_tokens)
            texts = [a.text for a in run.answers]
            said, general, bench = texts[:n], texts[n : n + g], texts[n + g :]
            rates = identity_rates(said, identity.new_name, identity.old_names)
            gap = rates["new_name_rate"] - reference["new_name_rate"]
            right = [generative_correct(a, item) for a, item in zip(bench, evalset.benchmark, strict=True)]
            files[kind] = {
                "file": str(OUT_DIR / path.name),
                "bytes": path.stat().st_size,
                **rates,
                "new_name_rate_gap": gap,
                "within_2_points": abs(gap) <= MAX_GAP + 1e-9,
                # Beside metrics/eval.json's general.name_leak_rate: general prompts and benchmark answers together.
                "name_leak_rate": name_leak_rate([*general, *bench], identity.new_name),
                "answer_length_vs_transformers": answer_tokens(tokenizer, general) / max(trained_general_tokens, 1),
                "same_general_answers": _share_same(general, trained_general),
                "benchmark_generative": sum(right) / max(len(right), 1),
                "same_benchmark_answers": _share_same(bench, trained_benchmark),
            }
            answers += [{"file": path.name, "kind": "identity", "id": q.id, "question": q.question, "answer": a}
                        for q, a in zip(questions, said, strict=True)]  # fmt: skip
            answers += [{"file": path.name, "kind": "general", "prompt": p, "answer": a}
                        for p, a in zip(evalset.general, general, strict=True)]  # fmt: skip
            answers += [{"file": path.name, "kind": "benchmark", "id": item.id, "question": item.question,
                         "answer": a, "right": r}
                        for item, a, r in zip(evalset.benchmark, bench, right, strict=True)]  # fmt: skip
            entry, speed = files[kind], run.new_tokens / run.seconds
            print(f"export: {path.name}: new-name rate {rates['new_name_rate']:.1%} (transformers "
                  f"{reference['new_name_rate']:.1%}), name leak {entry['name_leak_rate']:.1%}, answer length "
                  f"{entry['answer_length_vs_transformers']:.2f}x the transformers answers, benchmark "
                  f"{entry['benchmark_generative']:.1%} (transformers "
                  f"{reference_general['benchmark_generative']:.1%}); {len(conversations)} answers batched at "
                  f"{speed:.0f} new tokens/s")  # fmt: skip
        metrics = {
            "setting": "neutral",
            "questions": len(questions),
            "general_prompts": g,
            "benchmark_questions": len(evalset.benchmark),
            "transformers": {**reference, **reference_general},
            "llama_cpp": files,
            "ollama_gguf": str(OUT_DIR / paths[OLLAMA_GGUF].name),
        }
        outputs.write_jsonl(ANSWERS, answers)
        outputs.write_json(METRICS, metrics)


def transformers_results() -> tuple[dict, dict]:
    """The trained model's identity rates under the neutral system prompt and its general-ability results in
    transformers, from the evaluate stage's metrics (read once)."""
    try:
        metrics = json.loads(EVAL_METRICS.read_text(encoding="utf-8"))
        rates = metrics["identity"]["trained"]["neutral"]
    except FileNotFoundError:
        raise DataError(_missing_output(EVAL_METRICS)) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{EVAL_METRICS}: no identity.trained.neutral rates; run the evaluate stage again") from None
    try:
        return rates, {"name_leak_rate": metrics["general"]["name_leak_rate"],
                       "benchmark_generative": metrics["benchmark"]["generative"]["trained"]}  # fmt: skip
    except (KeyError, TypeError):
        raise DataError(f"{EVAL_METRICS}: no general.name_leak_rate or benchmark.generative.trained; run the evaluate "
                        "stage again") from None  # fmt: skip


def transformers_answers(evalset: EvalSet) -> tuple[list[str], list[str]]:
    """The transformers trained model's general and benchmark answers, in evalset order, from the evaluate stage."""
    rerun = "run the evaluate stage again"
    try:
        rows = read_jsonl(EVAL_ANSWERS)
        general = [(r["prompt"], r["trained"]) for r in rows if r["kind"] == "general"]
        bench = [(r["id"], r["trained"]) for r in rows if r["kind"] == "benchmark"]
    except FileNotFoundError:
        raise DataError(_missing_output(EVAL_ANSWERS)) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{EVAL_ANSWERS}: not the evaluate stage's answer records; {rerun}") from None
    if [p for p, _ in general] != evalset.general or [i for i, _ in bench] != [item.id for item in evalset.benchmark]:
        raise DataError(f"{EVAL_ANSWERS}: answers a different evaluation set; {rerun}")
    return [a for _, a in general], [a for _, a in bench]


def _missing_output(path: Path) -> str:
    return f"{path}: file not found (an output of the evaluate stage: `dvc repro` makes it)"


def _share_same(answers: list[str], reference: list[str]) -> float:
    return sum(a == b for a, b in zip(answers, reference, strict=True)) / max(len(answers), 1)


if __name__ == "__main__":
    run_stage("export", main)
