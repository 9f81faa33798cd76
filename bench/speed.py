"""CPU speed and memory, measured side by side in one run; writes BENCHMARKS.md (linked from the README).

    python bench/speed.py            # long: run it alone on an idle machine
    python bench/speed.py --quick    # small sizes, printed only: checks the script

1. Time-to-identity: a clone of this commit with an empty DVC cache runs `dvc repro` from nothing
   (fetch data and model, pairs, training, evaluation); the stage breakdown and the held-out rates.
   Then `dvc repro` again in the same clone: the no-op time. The clone's outputs feed 2 and 3.
2. Pair generation: the lesson's way (one prompt at a time, `model.generate`) vs transformers'
   `generate` on our sorted batches vs our decoding loop, on the same prompts: new tokens/s and
   whether the greedy answers are identical. Then llama.cpp as a peer: the same prompts through its
   batched API on the same model exported to GGUF (f16 and the export's quantized type), ratios beside ours.
3. DPO training on the same pairs, each configuration in a fresh process (so its peak memory is its
   own): the lesson's config (TRL directly: batch 1 x accumulation 8, reference model run every step)
   vs ours with full fine-tuning (the default before LoRA) vs our default (LoRA adapters) vs our
   default with activation checkpointing: pairs/s, achieved FLOP/s as a share of a large fp32 matrix
   product's FLOP/s measured in this run, and peak resident memory.
4. A sweep point that changes only train.* (another training seed), run up to evaluate as
   `SWEEP_TARGET=evaluate bash scripts/sweep.sh` runs each experiment, in the cold run's clone: as it runs
   today (train.precision auto, the base answers cached by the answer_base stage) beside the same sweep
   point as it ran before both (fp32 training, the base answers recomputed: answer_base forced).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "BENCHMARKS.md"
# The absolute targets (150 tokens/s, 5 minutes) were set on a machine with this matrix-product speed.
TARGET_MACHINE_GFLOPS = 150
# Our full fine-tuning row: the default before LoRA (its held-out rates: README, "LoRA instead of full fine-tuning").
FULL_FINE_TUNING_LR = 1.5e-4
LESSON_TRAIN = {"beta": 0.2, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
                "num_train_epochs": 1, "learning_rate": 5e-5, "logging_steps": 2}  # fmt: skip


def matmul_flops(size: int = 2048, repeats: int = 8, dtype: str = "float32") -> float:
    """FLOP/s of a large matrix product in `dtype`: the practical ceiling for dense model math on this machine."""
    import torch

    a, b = (torch.randn(size, size, dtype=getattr(torch, dtype)) for _ in range(2))
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best


def ceiling_around(measure: Any, dtype: str = "float32") -> tuple[Any, float]:
    """`measure()` and the matrix product's FLOP/s (in `dtype`) right before and after it, the higher of the two (the
    harder bar): on a shared host the ceiling itself moves between minutes, so each share uses the one of its moment."""
    before = matmul_flops(dtype=dtype)
    result = measure()
    return result, max(before, matmul_flops(dtype=dtype))


# --- 1. time-to-identity and the no-op ------------------------------------------------------------------


def run(cwd: Path, *args: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def cold_start(clone: Path, quick: bool) -> dict[str, Any]:
    import yaml

    run(ROOT, "git", "clone", "-q", str(ROOT), str(clone))
    run(clone, "dvc", "cache", "dir", "--local", str(clone.parent / "empty-cache"))
    if quick:
        _quick_params(clone / "params.yaml")
    # --force: with code and params as committed, training reproduces the committed models/trained byte for byte,
    # and DVC would then skip evaluate (its other inputs are unchanged), so the rates would not be measured.
    wall = run(clone, "dvc", "repro", "--force")
    stages = [json.loads(line) for line in (clone / "logs" / "stage_times.jsonl").read_text().splitlines()]
    evaluation = json.loads((clone / "metrics" / "eval.json").read_text())
    noop = [run(clone, "dvc", "repro") for _ in range(5)]
    params = yaml.safe_load((clone / "params.yaml").read_text())
    pairs = json.loads((clone / "metrics" / "pairs.json").read_text())
    return {
        "wall": wall,
        "stages": stages,
        "eval": evaluation,
        "noop": noop,
        "prompts": pairs["prompts"],
        "rehearsal_pairs": pairs["rehearsal_pairs"],
        "pairs": pairs["pairs"],
        "batch_size": params["train"]["batch_size"],
        "method": _method(params["train"]["lora"]),
    }


def _method(lora: dict[str, Any]) -> str:
    return f"LoRA rank {lora['rank']}" if lora["enabled"] else "full fine-tuning"


def _quick_params(path: Path) -> None:
    import yaml

    params = yaml.safe_load(path.read_text())
    params["pairs"]["max_prompts"] = 16
    path.write_text(yaml.safe_dump(params, sort_keys=False))


# --- 4. a train.*-only sweep point ---------------------------------------------------------------------------

SWEEP_POINTS = {  # label: (train.seed, train.precision, base answers recomputed)
    "before": (43, "fp32", True),
    "today": (44, "auto", False),
}


def sweep_points(clone: Path) -> dict[str, Any]:
    """Each sweep point's wall time and the stages it reran (logs/stage_times.jsonl), params.yaml restored after."""
    import yaml

    path, times = clone / "params.yaml", clone / "logs" / "stage_times.jsonl"
    committed = path.read_text()
    results = {}
    try:
        for label, (seed, precision, recompute_base) in SWEEP_POINTS.items():
            params = yaml.safe_load(committed)
            params["train"].update({"seed": seed, "precision": precision})
            path.write_text(yaml.safe_dump(params, sort_keys=False))
            logged = len(times.read_text().splitlines())
            wall = run(clone, "dvc", "repro", "evaluate")
            if recompute_base:
                wall += run(clone, "dvc", "repro", "--force", "--single-item", "answer_base")
            stages = [json.loads(line) for line in times.read_text().splitlines()[logged:]]
            train = json.loads((clone / "metrics" / "train" / "metrics.json").read_text())
            results[label] = {"wall": wall, "stages": stages, "seed": seed, "precision": precision,
                              "bf16": bool(train.get("bf16"))}  # fmt: skip
    finally:
        path.write_text(committed)
    return results


# --- 2. pair generation ---------------------------------------------------------------------------------


def lesson_generate(model: Any, tokenizer: Any, conversations: list, max_new_tokens: int) -> list[list[int]]:
    """The lesson's helper: one prompt at a time, chat template, greedy `generate`, new tokens only."""
    answers = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        output = model.generate(**ids, do_sample=False, max_new_tokens=max_new_tokens)
        answers.append(output[0, ids["input_ids"].size(1) :].tolist())
    return answers


def transformers_batches(model: Any, tokenizer: Any, conversations: list, max_new_tokens: int, batch_size: int) -> list:
    """transformers' `generate` on the same sorted, left-padded batches our loop gets (every row runs to the end)."""
    from identity_dpo.chat_format import render_prompt
    from identity_dpo.generation import longest_first, stop_token_ids, transformers_generate

    prompts = [render_prompt(tokenizer, m) for m in conversations]
    stops = stop_token_ids(model, tokenizer)
    order = longest_first(prompts)
    answers: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        rows = transformers_generate(model, [prompts[i] for i in batch], max_new_tokens, stops, tokenizer.pad_token_id)
        for i, row in zip(batch, rows, strict=True):
            answers[i] = row
    return answers


def timed(produce: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = produce()
    return result, time.perf_counter() - start


def generation(clone: Path, prompts: int, max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    import torch

    from identity_dpo.chat_format import with_system
    from identity_dpo.cpu_features import native_bf16_feature
    from identity_dpo.data import read_prompts
    from identity_dpo.generation import answering_model, generate, stop_token_ids, to_generation
    from identity_dpo.models import load_model
    from identity_dpo.pairs import select_prompts

    model, tokenizer = load_model(clone / "models" / "base")
    model.eval()
    per_token = 2 * sum(linear_weights(model.config))  # FLOPs of one new token through every linear layer
    chosen = select_prompts(read_prompts(clone / "data" / "identity" / "prompts.jsonl"), prompts, 0)
    conversations = [with_system(p.messages, None) for p in chosen]
    stops = stop_token_ids(model, tokenizer)

    def answers(rows: list[list[int]]) -> list:
        return [to_generation(tokenizer, row, stops) for row in rows]

    methods = [
        ("lesson", lambda: answers(lesson_generate(model, tokenizer, conversations, max_new_tokens))),
        ("transformers", lambda: answers(transformers_batches(model, tokenizer, conversations, max_new_tokens,
                                                              batch_size))),
        ("ours", lambda: generate(model, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size)),
    ]  # fmt: skip
    if native_bf16_feature() is not None:  # pairs.precision bf16 (or auto here): the loop on a bf16 copy
        bf16 = answering_model(model, "bf16")
        methods.append(("ours, bf16", lambda: generate(bf16, tokenizer, conversations, max_new_tokens=max_new_tokens,
                                                       batch_size=batch_size)))  # fmt: skip
    runs: dict[str, Any] = {}
    with torch.inference_mode():
        for name, produce in methods:
            (produced, seconds), ceiling = ceiling_around(
                lambda produce=produce: timed(produce), "bfloat16" if name == "ours, bf16" else "float32"
            )
            runs[name] = {"seconds": seconds, "tokens": sum(g.new_tokens for g in produced),
                          "texts": [g.text for g in produced], "ceiling": ceiling}  # fmt: skip
    texts = {name: result.pop("texts") for name, result in runs.items()}
    for name, result in runs.items():
        result["identical"] = _same(texts[name], texts["lesson"])
    return {"prompts": len(conversations), "max_new_tokens": max_new_tokens, "batch_size": batch_size, "runs": runs,
            "flops_per_token": per_token, "texts": texts, "conversations": conversations}  # fmt: skip


def llama_cpp_generation(clone: Path, gen: dict[str, Any], work: Path) -> dict[str, Any]:
    """llama.cpp as a peer: the same conversations as `generation` answered greedily by the same model exported
    the way the export stage exports (llama.cpp's converter, then its quantizer), batched through llama.cpp's
    low-level API (identity_dpo.llama_batched: `batch_size` sequences side by side, as llama.cpp's `batched`
    example decodes), in f16 and the export's first quantized type. The clone's base model, because pair
    generation answers with it. {"missing": reason} where llama.cpp is not built here."""
    from identity_dpo.errors import PipelineError
    from identity_dpo.export import QUANTS, THREADS, check_bindings, convert, find_converter, load_gguf, quantize
    from identity_dpo.llama_batched import batched_chat_answers

    try:
        check_bindings()
        converter = find_converter()
    except PipelineError as exc:
        return {"missing": str(exc)}
    paths = {"f16": work / "base-f16.gguf", QUANTS[0]: work / f"base-{QUANTS[0]}.gguf"}
    convert(clone / "models" / "base", paths["f16"], converter)
    quantize(paths["f16"], paths[QUANTS[0]], QUANTS[0])
    runs: dict[str, Any] = {}
    for kind, path in paths.items():
        llm = load_gguf(path)

        def produce(llm: Any = llm) -> Any:
            return batched_chat_answers(llm, gen["conversations"], gen["max_new_tokens"], parallel=gen["batch_size"])

        try:
            (run, seconds), ceiling = ceiling_around(lambda: timed(produce))
        finally:
            llm.close()
        texts = [a.text for a in run.answers]
        runs[kind] = {"seconds": seconds, "tokens": run.new_tokens, "ceiling": ceiling,
                      "identical": _same(texts, gen["texts"]["lesson"]),
                      "same_as_ours": _same(texts, gen["texts"]["ours"])}  # fmt: skip
    return {"runs": runs, "threads": THREADS}


def _same(texts: list[str], reference: list[str]) -> int:
    return sum(a == b for a, b in zip(texts, reference, strict=True))


# --- 3. DPO training, one configuration per process ------------------------------------------------------


def training(clone: Path, pairs: int) -> dict[str, Any]:
    """Each configuration in a fresh process; `ours, bf16` only on a CPU with native bf16 matrix instructions, its
    share taken of the bf16 matrix product (the one its products run at)."""
    from identity_dpo.cpu_features import native_bf16_feature

    results = {}
    configs = ["lesson", "ours, full fine-tuning", "ours", "ours+checkpointing"]
    if native_bf16_feature() is not None:
        configs.insert(3, "ours, bf16")
    for config in configs:
        command = [sys.executable, __file__, "--train-worker", config, "--clone", str(clone), "--pairs", str(pairs)]
        output, ceiling = ceiling_around(
            lambda command=command: subprocess.run(command, capture_output=True, text=True, check=False),
            "bfloat16" if config == "ours, bf16" else "float32",
        )
        if output.returncode != 0:
            raise SystemExit(f"training worker {config} failed:\n{output.stderr[-4000:]}")
        results[config] = {**json.loads(output.stdout.strip().splitlines()[-1]), "ceiling": ceiling}
    return results


def train_worker(config: str, clone: Path, count: int) -> None:
    """Train one configuration on the first `count` pairs; print seconds, model FLOPs and peak memory as JSON."""
    import dataclasses

    from identity_dpo.data import read_jsonl_records
    from identity_dpo.params import load_params

    pairs = read_jsonl_records(clone / "data/pairs/pairs.jsonl", {"prompt": list, "chosen": list, "rejected": list},
                               "a preference pair")[:count]  # fmt: skip
    model_dir = clone / "models" / "base"
    params = load_params(clone / "params.yaml").train
    if config == "ours, full fine-tuning":
        lora = dataclasses.replace(params.lora, enabled=False)
        params = dataclasses.replace(params, lora=lora, learning_rate=FULL_FINE_TUNING_LR)
    elif config == "ours+checkpointing":
        params = dataclasses.replace(params, activation_checkpointing=True)
    # ours and every other row in fp32, so that bf16's row is the one change measured
    params = dataclasses.replace(params, precision="bf16" if config == "ours, bf16" else "fp32")
    steps = StepsTimer()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        start = time.perf_counter()
        if config == "lesson":
            _lesson_train(model_dir, pairs, out, steps)
            max_length = None  # TRL's default (1024) cuts nothing here
        else:
            from identity_dpo.training import train_dpo

            train_dpo(model_dir, pairs, params, out / "model", out / "curves", out / "scratch", callbacks=[steps])
            max_length = params.max_length
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lora = params.lora if config != "lesson" and params.lora.enabled else None
    policy, reference = training_flops(model_dir, pairs, max_length, shared_prompt=config != "lesson", lora=lora)
    flops = policy + reference
    # In the training loop: the lesson's reference forward runs there, ours ran before (precomputed).
    loop_flops = flops if config == "lesson" else policy
    print(json.dumps({"seconds": seconds, "pairs": len(pairs), "flops": flops, "peak_bytes": peak,
                      "loop_seconds": steps.seconds, "loop_flops": loop_flops}))  # fmt: skip


class StepsTimer(TrainerCallback):
    """Wall time of the training loop alone (no imports, loading, tokenizing, precomputing or saving)."""

    seconds = float("nan")

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.begin = time.perf_counter()

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.seconds = time.perf_counter() - self.begin


def _lesson_train(model_dir: Path, pairs: list[dict], out: Path, steps: Any) -> None:
    """The lesson's training cell: DPOTrainer with its config, the reference model loaded by TRL, TRL's own LM head.

    Only what a CPU needs differs: no bf16 (emulated on a CPU), and the lesson's TRL had checkpointing off.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from identity_dpo.models import load_model

    model, tokenizer = load_model(model_dir)
    config = DPOConfig(output_dir=str(out), **LESSON_TRAIN, bf16=False, gradient_checkpointing=False,
                       report_to="none", disable_tqdm=True, save_strategy="no")  # fmt: skip
    rows = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    trainer = DPOTrainer(model=model, ref_model=None, args=config, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), callbacks=[steps])  # fmt: skip
    trainer.train()
    trainer.model.save_pretrained(out / "model", safe_serialization=True)


def training_flops(
    model_dir: Path, pairs: list[dict], max_length: int | None, *, shared_prompt: bool, lora: Any = None
) -> tuple[float, float]:
    """Model FLOPs the training needs, (policy, reference), counted the same way for every configuration.

    Per pair, chosen and rejected sequences (prompt + answer + end of turn, real tokens only, no padding):
    the decoder's linear layers and attention on every token, the LM head on the answer tokens only (the
    only ones scored). The reference is one forward (every step in the lesson's config, once before training
    in ours: the same count). The policy is a forward and a backward: with full fine-tuning the backward
    costs two forwards (gradients of the inputs and of the weights); with `lora` (LoraParams) the frozen
    weights get no gradients, so the linear layers and the head cost one forward in the backward, attention
    still two, plus the adapters' own products (forward and backward: 6 FLOPs per adapter weight and token).
    Sequences are cut at `max_length` as the trainer cuts them. With `shared_prompt` (one row per pair) the
    prompt's tokens are counted once per pair, as they are computed once. Recomputation (activation
    checkpointing) and padding are not counted: not needed.
    """
    from transformers import AutoConfig, AutoTokenizer

    from identity_dpo.chat_format import render_prompt, render_tokens

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    decoder, head = linear_weights(config)
    d, layers = config.hidden_size, config.num_hidden_layers
    tokens = attention = scored = 0.0  # over every sequence the model reads
    for pair in pairs:
        prompt = len(render_prompt(tokenizer, pair["prompt"]))
        for answer in (pair["chosen"], pair["rejected"]):
            full = len(render_tokens(tokenizer, pair["prompt"] + answer))
            full = min(full, max_length or full)
            tokens += full
            attention += 2 * layers * d * full * full
            scored += max(full - prompt, 0)
        if shared_prompt:  # the second sequence's prompt, not computed again
            tokens -= prompt
            attention -= 2 * layers * d * prompt * prompt
    linear = 2 * decoder * tokens + 2 * head * scored
    forward = linear + attention
    if lora is None:
        return 3 * forward, forward
    return forward + linear + 2 * attention + 6 * adapter_weights(config, lora) * tokens, forward


def adapter_weights(config: Any, lora: Any) -> int:
    """The LoRA adapters' weights on this architecture, counted by PEFT on a model built without memory."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from identity_dpo.training import lora_config

    with torch.device("meta"):
        model = get_peft_model(AutoModelForCausalLM.from_config(config), lora_config(lora))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_weights(config: Any) -> tuple[int, int]:
    """Weights of the decoder's linear layers (all of them) and of the LM head: FLOPs per token are twice each."""
    d = config.hidden_size
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * config.intermediate_size  # q, o; k, v; gate, up, down
    return config.num_hidden_layers * per_layer, d * config.vocab_size


# --- the report ---------------------------------------------------------------------------------------


def report(
    machine: dict[str, Any], cold: dict[str, Any], gen: dict[str, Any], train: dict[str, Any], sweep: dict[str, Any]
) -> str:
    trained = cold["eval"]["identity"]["trained"]
    base = cold["eval"]["identity"]["base"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `python bench/speed.py` on {machine['date']} at commit {machine['commit']}: {machine['cpu']}, "
        f"{machine['cores']} cores, torch {machine['torch']} ({machine['threads']} threads). Every number below "
        "comes from this one run; absolute times on this shared machine are noisy, ratios measured side by side "
        "are what to compare. Large fp32 matrix product (2048 x 2048 x 2048, best of 3): "
        f"{machine['matmul'] / 1e9:.0f} GFLOP/s at the start, {machine['matmul_end'] / 1e9:.0f} at the end. It moves "
        "between minutes on a shared host, so it is measured again right before and after each measurement below, "
        "and each share of it uses the higher of that pair (the harder bar), shown next to it. Native bf16 matrix "
        f"instructions: {machine['bf16_feature']}"
        + (
            f" (bf16 product at the start: {machine['matmul_bf16'] / 1e9:.0f} GFLOP/s)."
            if "matmul_bf16" in machine
            else "."
        ),
        "",
        "## 1. Time-to-identity (target: <= 5 min) and the no-op (target: <= 1.5 s)",
        "",
        "A clone of the commit with an empty DVC cache runs `dvc repro --force` (every stage) with the default "
        f"`params.yaml`: fetching the data and the model from the installed wheel, answers to {cold['prompts']} "
        f"identity prompts and {cold['rehearsal_pairs']} rehearsal prompts ({cold['pairs']} pairs), DPO in batches of "
        f"{cold['batch_size']}, and the evaluation that proves the new identity.",
        "",
        "| stage | seconds (incl. Python start and imports) |",
        "|---|---:|",
        *[f"| {s['stage']} | {s['seconds']:.1f} |" for s in cold["stages"]],
        f"| **`dvc repro` wall time, cold** | **{cold['wall']:.1f}** ({cold['wall'] / 60:.1f} min) |",
        "",
        f"The targets were set on a machine whose matrix product ran at {TARGET_MACHINE_GFLOPS} GFLOP/s; this one "
        f"ran at {cold['ceiling'] / 1e9:.0f} around the cold run. Scaled by that ratio (an estimate, assuming every "
        "second scales with it, which "
        "overstates it for the parts that do not compute): "
        f"{cold['wall'] * cold['ceiling'] / 1e9 / TARGET_MACHINE_GFLOPS / 60:.1f} min.",
        "",
        "Held-out identity questions (`data/eval/identity_questions.jsonl`, never trained on), new name / old name:",
        "",
        "| system prompt | base model | trained model |",
        "|---|---|---|",
        *[
            f"| {kind} | {base[kind]['new_name_rate']:.1%} / {base[kind]['old_name_rate']:.1%} | "
            f"{trained[kind]['new_name_rate']:.1%} / {trained[kind]['old_name_rate']:.1%} |"
            for kind in ("neutral", "default")
        ],
        "",
        f"General drift (mean per-token KL on unrelated prompts): {cold['eval']['general']['mean_token_kl']:.3f}.",
        "",
        f"`dvc repro` with nothing changed, 5 times: median {statistics.median(cold['noop']):.2f} s "
        f"(min {min(cold['noop']):.2f}, max {max(cold['noop']):.2f}).",
        "",
        "## 2. Pair generation (target: >= 150 new tokens/s)",
        "",
        f"{gen['prompts']} identity prompts with the real default model (SmolLM2-135M-Instruct, fp32), greedy, "
        f"at most {gen['max_new_tokens']} new tokens, batches of {gen['batch_size']} where batched. "
        "Identical = the same answer text as the lesson's one-prompt-at-a-time loop. Share of matmul = new "
        f"tokens/s x {gen['flops_per_token'] / 1e9:.2f} GFLOP per token (every linear layer, the LM head included) "
        f"/ the matrix product's FLOP/s: the target, 150 tokens/s at {TARGET_MACHINE_GFLOPS} GFLOP/s, is a share of "
        f"{150 * gen['flops_per_token'] / 1e9 / TARGET_MACHINE_GFLOPS:.0%}.",
        "",
        "| method | seconds | new tokens | new tokens/s | vs lesson | share of matmul (its GFLOP/s) "
        "| identical answers |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lesson_rate = gen["runs"]["lesson"]["tokens"] / gen["runs"]["lesson"]["seconds"]
    names = {"lesson": "lesson: one prompt at a time, `generate`",
             "transformers": "transformers `generate`, our sorted left-padded batches",
             "ours": "ours: shared start read once, least-padding prefill groups, weight-first vocabulary "
                     "product, finished rows leave, cache with room",
             "ours, bf16": "ours on a bf16 copy of the weights (`pairs.precision: bf16`; share of the *bf16* "
                           "matrix product)"}  # fmt: skip
    for key, result in gen["runs"].items():
        rate = result["tokens"] / result["seconds"]
        lines.append(
            f"| {names[key]} | {result['seconds']:.2f} | {result['tokens']} | {rate:.1f} | "
            f"{rate / lesson_rate:.1f}x | {rate * gen['flops_per_token'] / result['ceiling']:.0%} "
            f"({result['ceiling'] / 1e9:.0f}) | "
            f"{result['identical']}/{gen['prompts']} |"
        )
    if "ours, bf16" in gen["runs"]:
        fp32, bf16 = (gen["runs"][key]["tokens"] / gen["runs"][key]["seconds"] for key in ("ours", "ours, bf16"))
        lines += [
            "",
            f"bf16 against fp32, side by side: {bf16 / fp32:.2f}x the new tokens/s, and "
            f"{_same(gen['texts']['ours, bf16'], gen['texts']['ours'])}/{gen['prompts']} answers the same as in fp32 "
            "(bf16 rounds every product, so where the two likeliest next tokens are nearly tied the answer can go the "
            'other way; from there on it is another answer). The default stays fp32 (docs/experiments.md, "Pairs '
            'answered in bf16").',
        ]
    lines += llama_cpp_lines(gen)
    lines += [
        "",
        "## 3. DPO training (targets: >= 50% of the matrix product's FLOP/s, <= 4 GB peak)",
        "",
        f"The first {train['ours']['pairs']} pairs of the cold run, one epoch, each configuration in a fresh "
        "process; seconds from loading the model to the saved result (reference log-probs included). Model "
        "FLOPs are counted the same way for all (`training_flops`: real tokens, LM head on answer tokens, "
        "a forward and a backward for the policy + 1 reference forward, where LoRA's backward computes no "
        "gradients of the frozen weights; recomputation and padding not counted), except that a "
        "configuration that reads each pair's prompt once is counted for reading it once, so its FLOP share "
        "is not inflated by work it skips: compare pairs/s for speed. The training loop "
        "alone leaves out what every run pays once (imports, loading, tokenizing, saving) and, for ours, the "
        "reference precompute (one forward, run before the loop).",
        "",
        "| configuration | seconds | pairs/s | vs lesson | model TFLOP | achieved GFLOP/s "
        "| share of matmul (its GFLOP/s) "
        "| training loop only: seconds, share | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lesson_pps = train["lesson"]["pairs"] / train["lesson"]["seconds"]
    labels = {"lesson": "lesson: batch 1 x accum 8, reference every step, TRL's LM head, full fine-tuning",
              "ours, full fine-tuning": f"ours with full fine-tuning (lr {FULL_FINE_TUNING_LR:g}, the default before "
                                        "LoRA)",
              "ours": f"ours (params.yaml, in fp32): {cold['method']}, batch {cold['batch_size']}, reference "
                      "precomputed, answer-only LM head, one row per pair (each prompt read once)",
              "ours, bf16": "ours in bf16 mixed precision (`train.precision: bf16`; share of the *bf16* matrix "
                            "product)",
              "ours+checkpointing": "ours + `train.activation_checkpointing: true`"}  # fmt: skip
    for key, result in train.items():
        pps = result["pairs"] / result["seconds"]
        lines.append(
            f"| {labels[key]} | {result['seconds']:.1f} | {pps:.2f} | {pps / lesson_pps:.1f}x | "
            f"{result['flops'] / 1e12:.2f} | {result['flops'] / result['seconds'] / 1e9:.1f} | "
            f"{result['flops'] / result['seconds'] / result['ceiling']:.0%} ({result['ceiling'] / 1e9:.0f}) | "
            f"{result['loop_seconds']:.1f} s, "
            f"{result['loop_flops'] / result['loop_seconds'] / result['ceiling']:.0%} | "
            f"{result['peak_bytes'] / 2**30:.2f} GiB |"
        )
    lines.append("")
    if "ours, bf16" in train:
        bf16, fp32 = train["ours, bf16"], train["ours"]
        lines += [
            f"bf16 against fp32, side by side: the training loop {fp32['loop_seconds'] / bf16['loop_seconds']:.2f}x "
            f"as fast, the whole run {fp32['seconds'] / bf16['seconds']:.2f}x "
            f"(this CPU: {machine['bf16_feature']}; `train.precision: auto` trains in bf16 on it, so the pipeline's "
            "train stage, section 1 and the sweep point below, runs the bf16 row).",
            "",
        ]
    else:
        lines += ["No bf16 row: this CPU has no native bf16 matrix instructions (`train.precision: auto` is fp32).", ""]
    return "\n".join([*lines, *sweep_lines(sweep)])


def sweep_lines(sweep: dict[str, Any]) -> list[str]:
    """Section 4: the train.*-only sweep point today beside the same point as it ran before."""
    before, today = sweep["before"], sweep["today"]
    stages = list(dict.fromkeys(s["stage"] for s in before["stages"] + today["stages"]))  # in the order they ran

    def seconds(point: dict[str, Any], stage: str) -> str:
        found = [s["seconds"] for s in point["stages"] if s["stage"] == stage]
        return f"{sum(found):.1f}" if found else "not rerun"

    def label(point: dict[str, Any]) -> str:
        trained_in = "bf16" if point["bf16"] else "fp32"
        return f"`train.seed: {point['seed']}`, `train.precision: {point['precision']}` ({trained_in})"

    return [
        "## 4. A `train.*`-only sweep point (target: <= 0.5x its time before the base answers were cached)",
        "",
        "In the cold run's clone, another training seed run up to evaluate, as `SWEEP_TARGET=evaluate bash "
        "scripts/sweep.sh 'train.seed=...'` runs each experiment (the GGUF export belongs to the model you keep, "
        "not to every sweep point). Before: fp32 training and the base model's answers recomputed (the answer_base "
        "stage forced, as evaluate recomputed them before they were a cached stage). Today: `train.precision: auto` "
        "and the base answers reused from the cache. Seconds per stage include Python start and imports; the wall "
        "time includes DVC's own checks.",
        "",
        f"| stage | before: {label(before)} | today: {label(today)} |",
        "|---|---:|---:|",
        *[f"| {stage} | {seconds(before, stage)} | {seconds(today, stage)} |" for stage in stages],
        f"| **wall time** | **{before['wall']:.1f}** | **{today['wall']:.1f}** "
        f"(**{today['wall'] / before['wall']:.2f}x**) |",
        "",
    ]


def llama_cpp_lines(gen: dict[str, Any]) -> list[str]:
    """Section 2's llama.cpp rows: its batched throughput on the same prompts, ours / its, and the answers compared."""
    peer = gen.get("llama_cpp")
    if peer is None:
        return []
    lines = ["", "### llama.cpp as a peer, on the same prompts", ""]
    if "missing" in peer:
        return [*lines, f"Not measured: {peer['missing']}."]
    ours = {key: run["tokens"] / run["seconds"] for key, run in gen["runs"].items() if key.startswith("ours")}
    lines += [
        f"The same {gen['prompts']} conversations and model, exported as the export stage exports it (llama.cpp's "
        "`convert_hf_to_gguf.py`, then `llama_model_quantize`), answered greedily by llama.cpp (llama-cpp-python "
        f"{_version('llama-cpp-python')}, {peer['threads']} threads) through its batched API: up to "
        f"{gen['batch_size']} sequences per `llama_decode`, one KV stream each, argmax of each sequence's logits, "
        "finished sequences leave the batch (`identity_dpo.llama_batched`, as llama.cpp's own `batched` example "
        "decodes). Prompts rendered with the chat template stored in the GGUF. Ours / llama.cpp: the new tokens/s of "
        "the `ours` row above (and of `ours, bf16`, where measured) divided by llama.cpp's.",
        "",
        "| llama.cpp batched | seconds | new tokens | new tokens/s | "
        f"{' | '.join(f'{key} / llama.cpp' for key in ours)} "
        "| share of matmul (its GFLOP/s) | identical to lesson | same as ours |",
        f"|---|---:|---:|---:|{'---:|' * len(ours)}---:|---:|---:|",
    ]
    for kind, result in peer["runs"].items():
        rate = result["tokens"] / result["seconds"]
        lines.append(
            f"| {kind} GGUF | {result['seconds']:.2f} | {result['tokens']} | {rate:.1f} | "
            f"{' | '.join(f'{mine / rate:.2f}x' for mine in ours.values())} | "
            f"{rate * gen['flops_per_token'] / result['ceiling']:.0%} ({result['ceiling'] / 1e9:.0f}) | "
            f"{result['identical']}/{gen['prompts']} | {result['same_as_ours']}/{gen['prompts']} |"
        )
    lines += [
        "",
        "Answers differ where the two best next tokens are within rounding of each other: llama.cpp's weights are "
        "f16 (8-bit blocks in q8_0, activations quantized to 8 bits too) where ours are fp32, and its kernels sum in "
        "another order. Within llama.cpp itself the logits of a token also depend on how many tokens share its "
        "`llama_decode` call (the kernel chosen by the batch shape), so a near tie can go either way there too.",
    ]
    return lines


def _version(package: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    from identity_dpo.cpu_features import native_bf16_feature

    return {"date": datetime.date.today().isoformat(), "commit": commit.stdout.strip(), "cpu": cpu,
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "bf16_feature": native_bf16_feature() or "none"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script")
    parser.add_argument("--train-worker", help=argparse.SUPPRESS)
    parser.add_argument("--clone", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_worker:
        train_worker(args.train_worker, args.clone, args.pairs)
        return
    from identity_dpo.atomic import write_text

    machine = machine_facts()
    machine["matmul"] = matmul_flops()
    if machine["bf16_feature"] != "none":
        machine["matmul_bf16"] = matmul_flops(dtype="bfloat16")
    with tempfile.TemporaryDirectory(prefix="identity-dpo-bench-") as work:
        clone = Path(work) / "clone"
        print("1/4 cold start: dvc repro from an empty cache ...", file=sys.stderr, flush=True)
        cold, ceiling = ceiling_around(lambda: cold_start(clone, args.quick))
        cold["ceiling"] = ceiling
        print("2/4 pair generation ...", file=sys.stderr, flush=True)
        gen = generation(clone, 16 if args.quick else 64, 48, 64)
        print("2/4 pair generation in llama.cpp (exported GGUF, batched) ...", file=sys.stderr, flush=True)
        gen["llama_cpp"] = llama_cpp_generation(clone, gen, Path(work))
        print("3/4 DPO training ...", file=sys.stderr, flush=True)
        train = training(clone, 8 if args.quick else 64)
        print("4/4 a train.*-only sweep point, before and today ...", file=sys.stderr, flush=True)
        sweep = sweep_points(clone)
    machine["matmul_end"] = matmul_flops()
    text = report(machine, cold, gen, train, sweep)
    if not args.quick:  # a quick run's numbers mean little: printed only
        write_text(RESULTS, text)
    print(text)


if __name__ == "__main__":
    main()
