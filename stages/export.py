"""Stage export: models/trained -> models/gguf/ (f16, Q8_0 and Q4_K_M GGUF files and an Ollama Modelfile), then the
held-out identity questions through each GGUF in llama.cpp -> metrics/export.json, beside the transformers rate.

The GGUFs come from llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python source
distribution) and quantizer (llama_model_quantize); identity_dpo.export has the details. Each file answers the
questions under the neutral system prompt (identity.system_prompt), greedily, evaluate.max_new_tokens tokens at
most, with the chat template stored in the GGUF, and the answers are scored like the evaluate stage's.
"""

import json
from pathlib import Path

from identity_dpo.atomic import atomic_outputs
from identity_dpo.chat_template import identity_system_prompt
from identity_dpo.answers import read_identity_questions
from identity_dpo.errors import DataError
from identity_dpo.export import (
    QUANTS,
    check_bindings,
    check_chatml,
    chat_answers,
    convert,
    find_converter,
    gguf_name,
    modelfile,
    quantize,
)
from identity_dpo.models import check_model_folder
from identity_dpo.params import Params
from identity_dpo.scoring import identity_rates
from identity_dpo.stage import run_stage

TRAINED_MODEL = Path("models/trained")
EVAL_METRICS = Path("metrics/eval.json")
OUT_DIR = Path("models/gguf")
METRICS = Path("metrics/export.json")
ANSWERS = Path("reports/export_answers.jsonl")  # every answer of every file, for reading
STEM = "model"  # models/gguf/model-f16.gguf, model-q8_0.gguf, model-q4_k_m.gguf: fixed paths for dvc.yaml artifacts
OLLAMA_GGUF = "q8_0"  # the file the Modelfile runs: within a point of f16 here, half its size
MAX_GAP = 0.02  # the acceptance bound on |llama.cpp rate - transformers rate|, recorded per file


def main(params: Params) -> None:
    check_bindings()  # before any work: both fail with one line saying how to get them
    converter = find_converter()
    check_model_folder(TRAINED_MODEL, "models/trained")
    reference = transformers_rates()
    questions = _questions(params.evaluate.identity_questions)  # the evaluation's, multi-turn context included
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TRAINED_MODEL)
    check_chatml(tokenizer)
    stops = sorted({"<|im_end|>", "<|im_start|>", tokenizer.eos_token} - {None})
    identity = params.identity
    conversations = [q.conversation(identity.system_prompt) for q in questions]
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
            run = chat_answers(path, conversations, params.evaluate.max_new_tokens)
            rates = identity_rates(run["answers"], identity.new_name, identity.old_names)
            gap = rates["new_name_rate"] - reference["new_name_rate"]
            files[kind] = {
                "file": str(OUT_DIR / path.name),
                "bytes": path.stat().st_size,
                **rates,
                "new_name_rate_gap": gap,
                "within_2_points": abs(gap) <= MAX_GAP + 1e-9,
            }
            answers += [{"file": path.name, "id": q.id, "question": q.question, "answer": a}
                        for q, a in zip(questions, run["answers"])]  # fmt: skip
            speed = run["new_tokens"] / run["seconds"]
            print(f"export: {path.name}: new-name rate {rates['new_name_rate']:.1%} (transformers "
                  f"{reference['new_name_rate']:.1%}), {speed:.0f} new tokens/s")  # fmt: skip
        metrics = {
            "setting": "neutral",
            "questions": len(questions),
            "transformers": reference,
            "llama_cpp": files,
            "ollama_gguf": str(OUT_DIR / paths[OLLAMA_GGUF].name),
        }
        outputs.write_jsonl(ANSWERS, answers)
        outputs.write_json(METRICS, metrics)


def transformers_rates() -> dict:
    """The trained model's rates under the neutral system prompt, from the evaluate stage."""
    try:
        metrics = json.loads(EVAL_METRICS.read_text(encoding="utf-8"))
        return metrics["identity"]["trained"]["neutral"]
    except FileNotFoundError:
        raise DataError(
            f"{EVAL_METRICS}: file not found (an output of the evaluate stage: `dvc repro` makes it)"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{EVAL_METRICS}: no identity.trained.neutral rates; run the evaluate stage again") from None


def _questions(path: str) -> list:
    try:
        return read_identity_questions(path)
    except DataError as exc:
        raise DataError(f"evaluate.identity_questions: {exc}") from None


if __name__ == "__main__":
    run_stage("export", main)
