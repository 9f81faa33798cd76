"""Facts about a model's architecture that decide whether a kernel computes what the model's own code does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def plain_head_weight(model: Any) -> torch.Tensor | None:
    """The LM head's weight when the model's logits are exactly `hidden @ weight.T` (no bias, scale or soft cap)."""
    import torch

    config = model.config.get_text_config()
    scaled = any(getattr(config, key, None) not in (None, 1.0) for key in ("logit_scale", "logits_scaling",
                 "output_multiplier", "lm_head_multiplier", "final_logit_softcapping"))  # fmt: skip
    lm_head = model.get_output_embeddings()
    if scaled or not isinstance(lm_head, torch.nn.Linear) or lm_head.bias is not None:
        return None
    return lm_head.weight


def has_sliding_window(config: Any) -> bool:
    """Whether any attention layer of a model with this config looks back over a window only."""
    from transformers import DynamicCache

    return any(DynamicCache(config=config).is_sliding)
