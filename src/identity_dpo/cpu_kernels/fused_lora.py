"""LoRA linear layers in one autograd node, for CPU training.

PEFT's lora.Linear computes `base(x) + lora_B(lora_A(dropout(x))) * scaling`: the [N, r] x [r, out] product writes
a fresh [N, out] tensor, then a full-size multiply by `scaling` and a full-size add follow; the backward pass adds
another full-size multiply (grad * scaling) and autograd's sum of the two input gradients. Here the LoRA product is
accumulated into the base output in place (addmm with alpha=scaling) and the scaling is applied to the [N, r] gradient
instead, so each of those full-size passes goes (what that saved in time and peak memory: docs/speed-history.md).
The graph keeps the tensors PEFT's keeps (x and the [N, r] activation) and no more.

Under bf16 autocast (train.precision bf16 on a CPU) the products run in bf16 from bf16 copies of the inputs, as autocast
runs PEFT's linear layers, and the gradients of the fp32 LoRA weights come back in fp32.

Relies on PEFT's lora.Linear attributes (base_layer, lora_A, lora_B, scaling, lora_dropout, use_dora, lora_variant,
active_adapters, merged, disable_adapters). Used for CPU training only; any case the fused path does not compute
as PEFT would (dropout, DoRA, several adapters, merged or disabled adapters, mixed dtypes without autocast, another
device) falls back to PEFT's own forward. tests/test_fused_lora.py checks outputs and gradients against PEFT, in fp32
and under bf16 autocast.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from identity_dpo.cpu_kernels.frozen_cast import frozen_cast


class _LoraLinearFunction(torch.autograd.Function):
    """x @ weight.T + bias + scaling * (x @ lora_a.T) @ lora_b.T, with the gradients of all its tensor inputs.

    The products run in `dtype`: the tensors' own, or autocast's (bf16) with every input cast to it as autocast casts
    PEFT's linear layers; the output is in `dtype` and each gradient in its input's dtype (fp32 master weights).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype, lora_a.dtype, lora_b.dtype)
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        weight, lora_a, lora_b = weight.to(dtype), lora_a.to(dtype), lora_b.to(dtype)
        out = x2 @ weight.T if bias is None else torch.addmm(bias.to(dtype), x2, weight.T)
        h = x2 @ lora_a.T
        out.addmm_(h, lora_b.T, alpha=scaling)  # in place: no [N, out] temporary, no separate scale and add
        ctx.save_for_backward(x2, weight, lora_a, lora_b, h)
        ctx.scaling = scaling
        ctx.x_shape = x.shape
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight, lora_a, lora_b, h = ctx.saved_tensors
        x_dtype, weight_dtype, bias_dtype, a_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_bias, need_a, need_b, _, _ = ctx.needs_input_grad
        g2 = g.reshape(-1, weight.shape[0]).to(weight.dtype)
        grad_x = grad_w = grad_bias = grad_a = grad_b = None
        if need_x or need_a:
            gh = (g2 @ lora_b).mul_(ctx.scaling)  # scale the [N, r] gradient, not the [N, out] one
        if need_x:
            grad_x = (g2 @ weight).addmm_(gh, lora_a).reshape(ctx.x_shape).to(x_dtype)
        if need_a:
            grad_a = (gh.T @ x2).to(a_dtype)
        if need_b:
            grad_b = (g2.T @ h).mul_(ctx.scaling).to(b_dtype)
        if need_w:  # the base is normally frozen; these are for completeness
            grad_w = (g2.T @ x2).to(weight_dtype)
        if need_bias:
            grad_bias = g2.sum(0).to(bias_dtype)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None


def _fusable(layer: Any, x: torch.Tensor) -> tuple[str, torch.dtype] | None:
    """The active adapter's name and the products' dtype if the fused path computes what PEFT's forward would, else
    None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.use_dora.get(name, False):
        return None
    lora_a, lora_b = layer.lora_A[name], layer.lora_B[name]
    if not isinstance(layer.lora_dropout[name], nn.Identity) or lora_a.bias is not None or lora_b.bias is not None:
        return None
    if x.device.type != "cpu":
        return None
    dtypes = {x.dtype, layer.base_layer.weight.dtype, lora_a.weight.dtype, lora_b.weight.dtype}
    if torch.is_autocast_enabled("cpu"):  # autocast casts all three products' inputs to its dtype
        return (name, torch.get_autocast_dtype("cpu")) if dtypes <= _AUTOCAST_INPUTS else None
    return (name, x.dtype) if len(dtypes) == 1 else None


# The input dtypes CPU autocast casts for a linear layer (any other, e.g. fp64, runs as it is: PEFT's forward)
_AUTOCAST_INPUTS = {torch.float32, torch.bfloat16, torch.float16}


def _fused_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    fusable = None if args or kwargs else _fusable(self, x)
    if fusable is None:
        return type(self).forward(self, x, *args, **kwargs)
    name, dtype = fusable
    base = self.base_layer
    weight = frozen_cast(base.weight, dtype)  # the frozen base: cast once per training run (frozen_cast.py)
    with torch.autocast("cpu", enabled=False):  # the inputs are cast to `dtype` inside, once each
        return _LoraLinearFunction.apply(
            x, weight, base.bias, self.lora_A[name].weight, self.lora_B[name].weight, self.scaling[name], dtype
        )


def use_fused_lora(model: nn.Module) -> int:
    """Route every PEFT LoRA Linear over a plain nn.Linear through the fused path; returns how many were patched."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    patched = 0
    for module in model.modules():
        # Exact types only: a subclass may override forward, and a wrapped base (quantized, nested) is not x @ W.T.
        if type(module) is LoraLinear and type(module.base_layer) is nn.Linear:
            module.forward = types.MethodType(_fused_forward, module)
            patched += 1
    return patched
