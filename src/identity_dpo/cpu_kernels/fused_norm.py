"""RMSNorm layers in one autograd node, for CPU training.

Transformers' RMSNorm (Llama's and the 100+ architectures that copy it) runs as six small ops, each a pass over the
hidden states, and autograd keeps three full-size tensors of them for a backward pass of about eight more passes.
Here the forward computes the same values in the same order (bit for bit in fp32) with one temporary fewer, keeps
only the input and the [N, 1] inverse norms, and the backward is written out: four passes over the hidden states
(two more when the weight trains, as in full fine-tuning).

Used for CPU training only. A norm is routed here only when its class's forward is, line for line, Llama's (checked
against the installed transformers' LlamaRMSNorm.forward, so a changed or different norm, e.g. Gemma's 1 + weight,
keeps its own); fp32 input and weight on a CPU only, anything else runs the module's own forward. Under bf16 autocast
(train.precision bf16 on a CPU) Llama's norm still computes in fp32 on the fp32 residual stream, and so does this one.
tests/test_fused_norm.py checks outputs and gradients against it, with and without autocast.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any

import torch
from torch import nn


class _RMSNormFunction(torch.autograd.Function):
    """weight * x / sqrt(mean(x^2, last dim) + eps), with the gradients of x and weight."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        inverse_norm = x.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, inverse_norm)
        return (x * inverse_norm).mul_(weight)

    @staticmethod
    @torch.autocast("cpu", enabled=False)  # vecdot is one of autocast's bf16 ops: keep the backward in fp32
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, inverse_norm = ctx.saved_tensors
        need_x, need_weight, _ = ctx.needs_input_grad
        grad_x = grad_weight = None
        if need_x:
            # d/dx of x * r, r = (mean(x^2) + eps)^-1/2, against gw = g * weight: r * gw - x * r^3 * mean(gw * x)
            gw = g * weight
            along_x = torch.linalg.vecdot(gw, x).unsqueeze_(-1).mul_(inverse_norm.pow(3)).div_(x.shape[-1])
            grad_x = gw.mul_(inverse_norm).addcmul_(x, along_x, value=-1)
        if need_weight:
            grad_weight = (g * x).mul_(inverse_norm).sum(tuple(range(g.dim() - 1)))
        return grad_x, grad_weight, None


@functools.cache
def _is_llama_rms_norm(cls: type) -> bool:
    """Whether `cls.forward` is LlamaRMSNorm.forward's code, line for line."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    try:
        return inspect.getsource(cls.forward) == inspect.getsource(LlamaRMSNorm.forward)
    except (OSError, TypeError):  # no source to compare: not known to be the same
        return False


def _fused_forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    fp32 = hidden_states.dtype == weight.dtype == torch.float32
    if not fp32 or not hidden_states.device.type == weight.device.type == "cpu":
        return type(self).forward(self, hidden_states)
    # Llama's norm computes in fp32 under bf16 autocast too (none of its ops is one autocast casts), so the fused one
    # does, with autocast off for its own ops
    with torch.autocast("cpu", enabled=False):
        return _RMSNormFunction.apply(hidden_states, weight, self.variance_epsilon)


def use_fused_rms_norm(model: nn.Module) -> int:
    """Route every RMSNorm whose forward is Llama's through the fused path; returns how many were patched."""
    patched = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(weight, torch.Tensor)
            and isinstance(getattr(module, "variance_epsilon", None), float)
            and _is_llama_rms_norm(type(module))
        ):
            module.forward = types.MethodType(_fused_forward, module)
            patched += 1
    return patched
