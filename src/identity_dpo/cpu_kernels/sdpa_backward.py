"""Attention's backward pass in fp32 under CPU bf16 training, where torch's bf16 backward is the slow one.

Under bf16 autocast (train.precision bf16 on a CPU) transformers' SDPA attention runs torch's CPU flash attention on
bf16 copies of the query, key and value. Its forward is fast in bf16, but its bf16 backward is not: at the training
shapes (4 packed pairs of 90-200 tokens, 9 query heads over 3 key/value heads) it took longer than casting the same
tensors to fp32 and running the fp32 backward, up to several times as long (what the switch saves:
docs/speed-history.md). Here the forward is torch's bf16 flash kernel, called as SDPA calls it (the same output,
bit for bit), and the backward is its fp32 kernel on the saved bf16 tensors cast to fp32: the gradient of the same
forward, with fewer rounding steps than the bf16 backward takes (tests/test_cpu_kernels.py compares both with fp64).

Relies on transformers' AttentionInterface (a local entry for "sdpa" in ALL_ATTENTION_FUNCTIONS' `_local_mapping`,
looked up by the model's attention at every forward) and `sdpa_attention_forward`'s arguments, and on torch's private
CPU flash attention ops (`aten::_scaled_dot_product_flash_attention_for_cpu` and its backward) and the way SDPA turns
a boolean mask into an additive one. Only training calls (queries as long as the keys) with a boolean mask or none, no
dropout, grouped or equal heads and none of the arguments that change SDPA's result take this path; everything else,
fp32 training included, runs transformers' own function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from identity_dpo.cpu_kernels.tensor_memo import TensorMemo

_ATTENTION = "sdpa"  # the transformers attention implementation replaced while training runs
# Inside attention_backward_in_fp32: each boolean mask's additive form per dtype, made once while the mask is unchanged
# (tensor_memo.TensorMemo), so a batch's mask is converted once, not in every layer's forward and backward.
_masks: TensorMemo | None = None


class _Bf16AttentionFp32Backward(torch.autograd.Function):
    """softmax(query @ key.T * scale + mask) @ value in bf16 (torch's flash kernel, grouped heads as they are), its
    gradients from torch's fp32 flash backward; each gradient in its input's dtype."""

    @staticmethod
    def forward(
        ctx: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        allowed: torch.Tensor | None,
        scale: float | None,
        is_causal: bool,
    ) -> torch.Tensor:
        ctx.dtypes = (query.dtype, key.dtype, value.dtype)
        q, k, v = (t.to(torch.bfloat16) for t in (query, key, value))
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, is_causal, attn_mask=_additive(allowed, torch.bfloat16), scale=scale
        )
        ctx.save_for_backward(q, k, v, out, logsumexp, allowed)
        ctx.scale, ctx.is_causal = scale, is_causal
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out, logsumexp, allowed = ctx.saved_tensors
        fp32 = [t.float() for t in (grad, q, k, v, out)]
        grads = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            *fp32, logsumexp, 0.0, ctx.is_causal, attn_mask=_additive(allowed, torch.float32), scale=ctx.scale
        )
        grad_q, grad_k, grad_v = (g.to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True))
        return grad_q, grad_k, grad_v, None, None, None


def _additive(allowed: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask as SDPA hands it to its kernels: 0 where allowed, -inf elsewhere. While training runs, the one
    made from the same mask tensor (unchanged since) is reused: the model hands every layer the same mask."""
    if allowed is None:
        return None
    if _masks is None:
        return _build_additive(allowed, dtype)
    return _masks.get(allowed, dtype, lambda: _build_additive(allowed, dtype))


def _build_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(allowed.logical_not(), float("-inf"))


# The arguments of sdpa_attention_forward that change what it computes, beyond those _attention takes; the others
# (position ids and the like, passed down by the model) it ignores.
_CHANGES_THE_RESULT = ("position_bias", "cache", "softcap", "output_attentions")


def _takes_fast_path(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Any, dropout: float, kwargs: dict[str, Any]
) -> bool:
    """Whether this attention call is one the fp32 backward computes as SDPA would: a training forward on a CPU under
    bf16 autocast, a boolean mask or none, no dropout, grouped heads, and none of _CHANGES_THE_RESULT."""
    if dropout or any(kwargs.get(name) is not None and kwargs.get(name) is not False for name in _CHANGES_THE_RESULT):
        return False
    if query.device.type != "cpu" or not torch.is_grad_enabled():
        return False
    if not torch.is_autocast_enabled("cpu") or torch.get_autocast_dtype("cpu") != torch.bfloat16:
        return False
    if not any(t.requires_grad for t in (query, key, value)):
        return False
    if {t.dtype for t in (query, key, value)} - {torch.float32, torch.bfloat16}:
        return False
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 4):
        return False
    if query.dim() != 4 or key.shape != value.shape:
        return False
    # Queries and keys of one length, more than one (transformers handles decoding and cached prefills otherwise),
    # and each key/value head serving the same number of query heads.
    heads, kv_heads, length = query.shape[1], key.shape[1], query.shape[2]
    return length > 1 and key.shape[2] == length and heads % kv_heads == 0


def _attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa_attention_forward, with the fp32 backward where it applies (its output layout)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _takes_fast_path(query, key, value, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # As transformers decides it: causal only without a mask (a mask carries its own pattern).
    causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    with torch.autocast("cpu", enabled=False):  # the inputs are cast to bf16 inside, once each
        out = _Bf16AttentionFp32Backward.apply(query, key, value, attention_mask, scaling, bool(causal))
    return out.transpose(1, 2).contiguous(), None


@contextmanager
def attention_backward_in_fp32() -> Iterator[None]:
    """While in the block, models whose attention is transformers' "sdpa" run it through `_attention`. A user's own
    local replacement of "sdpa" is left as it is."""
    global _masks
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if _ATTENTION in ALL_ATTENTION_FUNCTIONS._local_mapping:
        yield
        return
    ALL_ATTENTION_FUNCTIONS[_ATTENTION] = _attention
    outer, _masks = _masks, TensorMemo()
    try:
        yield
    finally:
        del ALL_ATTENTION_FUNCTIONS[_ATTENTION]
        _masks = outer
