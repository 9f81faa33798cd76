"""The fused RMSNorm (cpu_kernels/fused_norm.py) against transformers' own: outputs, gradients, fallbacks, which
norms it takes."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fused_calls
from identity_dpo.cpu_kernels import fused_norm
from identity_dpo.cpu_kernels.fused_norm import use_fused_rms_norm
from tiny_model import tiny_llama

pytestmark = pytest.mark.cpu_kernels  # each test compares the kernel with the library's own path

TOL = {"rtol": 1e-5, "atol": 1e-6}


def llama_norm(width: int = 48, seed: int = 0) -> nn.Module:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(seed)
    norm = LlamaRMSNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)  # not all ones: the weight's place in the gradient shows
    return norm


def fused_copy(module: nn.Module) -> nn.Module:
    ours = copy.deepcopy(module)
    assert use_fused_rms_norm(ours) == 1
    return ours


def count_fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return fused_calls.count_fused_calls(monkeypatch, fused_norm._RMSNormFunction)


@pytest.mark.parametrize("train_weight", [False, True], ids=["frozen weight (LoRA)", "trained weight"])
def test_outputs_are_the_same_bits_and_gradients_match(train_weight: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = llama_norm()
    ours = fused_copy(theirs)
    for norm in (theirs, ours):
        norm.weight.requires_grad_(train_weight)
    calls = count_fused_calls(monkeypatch)
    x = (torch.randn(3, 7, 48) * 4).requires_grad_()  # (batch, length, width), away from unit scale
    grad = torch.randn(3, 7, 48)
    x_theirs = x.detach().clone().requires_grad_()
    out, out_theirs = ours(x), theirs(x_theirs)
    assert calls[0] == 1
    assert torch.equal(out, out_theirs)  # the same ops in the same order
    out.backward(grad)
    out_theirs.backward(grad)
    torch.testing.assert_close(x.grad, x_theirs.grad, **TOL)
    if train_weight:
        torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL)
    else:
        assert ours.weight.grad is None


def test_gradients_pass_torch_s_numerical_check() -> None:
    norm = llama_norm(width=6).double()
    norm.weight.requires_grad_(True)
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: fused_norm._RMSNormFunction.apply(x, w, norm.variance_epsilon), (x, norm.weight)
    )


def test_anything_but_fp32_on_the_cpu_runs_the_module_s_own_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = llama_norm()
    ours = fused_copy(theirs)
    calls = count_fused_calls(monkeypatch)
    x = torch.randn(2, 5, 48)
    # bf16 input: transformers computes in fp32 and casts back; the fused path would not
    assert torch.equal(ours(x.bfloat16()), theirs(x.bfloat16()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ours(x.bfloat16()), theirs(x.bfloat16()))
    theirs_bf16 = llama_norm().bfloat16()  # weight and input in bf16: transformers still normalizes in fp32
    assert torch.equal(fused_copy(theirs_bf16)(x.bfloat16()), theirs_bf16(x.bfloat16()))
    assert calls[0] == 0
    ours(x)
    assert calls[0] == 1


def test_under_bf16_autocast_fp32_norms_are_fused_with_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """train.precision bf16 on a CPU: the residual stream stays fp32 and Llama's norm computes in fp32 under autocast;
    the fused one gives the same outputs and fp32 gradients (its backward's vecdot is not cast to bf16)."""
    theirs = llama_norm()
    ours = fused_copy(theirs)
    for norm in (theirs, ours):
        norm.weight.requires_grad_(True)
    calls = count_fused_calls(monkeypatch)
    x = (torch.randn(3, 7, 48) * 4).requires_grad_()
    x_theirs = x.detach().clone().requires_grad_()
    grad = torch.randn(3, 7, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_theirs = ours(x), theirs(x_theirs)
        out.backward(grad)  # even a backward inside autocast
        out_theirs.backward(grad)
    assert calls[0] == 1
    assert out.dtype == torch.float32 and torch.equal(out, out_theirs)
    torch.testing.assert_close(x.grad, x_theirs.grad, **TOL)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, **TOL)


def test_only_norms_whose_forward_is_llama_s_are_patched() -> None:
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    class ScaledRMSNorm(LlamaRMSNorm):  # same attributes, another computation
        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(hidden_states)

    model = nn.ModuleList([LlamaRMSNorm(8), Qwen2RMSNorm(8), GemmaRMSNorm(8), ScaledRMSNorm(8), nn.LayerNorm(8)])
    assert use_fused_rms_norm(model) == 2
    assert [type(m).__name__ for m in model if "forward" in vars(m)] == ["LlamaRMSNorm", "Qwen2RMSNorm"]


def test_a_whole_model_trains_as_with_transformers_norms() -> None:
    """A tiny Llama (2 layers: 5 norms) in training mode: the same logits, close gradients for every weight."""
    theirs = tiny_llama()
    ours = copy.deepcopy(theirs)
    assert use_fused_rms_norm(ours) == 5
    ids = torch.randint(0, 64, (2, 9))
    for model in (theirs, ours):
        model.train()
        model(ids, labels=ids).loss.backward()
    assert torch.equal(ours(ids).logits, theirs(ids).logits)
    for (name, ours_p), theirs_p in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(ours_p.grad, theirs_p.grad, **TOL, msg=name)
