"""The fused LoRA linear (cpu_kernels/fused_lora.py) against PEFT's lora.Linear: same outputs, gradients and
fallbacks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

import fused_calls
from identity_dpo.cpu_kernels import fused_lora
from identity_dpo.cpu_kernels.fused_lora import use_fused_lora
from tiny_model import tiny_llama

pytestmark = pytest.mark.cpu_kernels  # each test compares the kernel with the library's own path

TOL = {"rtol": 1e-5, "atol": 1e-5}


def lora_model(dropout: float = 0.0, seed: int = 0) -> Any:
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=dropout, task_type="CAUSAL_LM")
    return randomize_lora_b(get_peft_model(model, lora))


def randomize_lora_b(model: nn.Module) -> nn.Module:
    # PEFT starts lora_B at zero, which would make the LoRA branch (and any bug in it) invisible.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (3, 10), generator=gen)
    return {"input_ids": ids, "labels": ids}


def count_fused_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return fused_calls.count_fused_calls(monkeypatch, fused_lora._LoraLinearFunction)


def assert_same_grads(ours: nn.Module, theirs: nn.Module) -> None:
    theirs_grads = {n: p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    ours_grads = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_grads.keys() == theirs_grads.keys() and ours_grads
    for name, grad in theirs_grads.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(ours_grads[name], grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


def test_same_logits_loss_and_gradients_as_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    from peft.tuners.lora.layer import Linear as LoraLinear

    theirs = lora_model()
    ours = copy.deepcopy(theirs)
    assert use_fused_lora(ours) == sum(isinstance(m, LoraLinear) for m in theirs.modules()) == 14
    calls = count_fused_calls(monkeypatch)

    embeds = theirs.get_input_embeddings()(batch()["input_ids"]).detach()
    inputs = {"labels": batch()["labels"]}
    theirs_embeds = embeds.clone().requires_grad_(True)
    ours_embeds = embeds.clone().requires_grad_(True)
    theirs_out = theirs(inputs_embeds=theirs_embeds, **inputs)
    ours_out = ours(inputs_embeds=ours_embeds, **inputs)
    assert calls[0] == 14  # every LoRA layer went through the fused path once

    torch.testing.assert_close(ours_out.logits, theirs_out.logits, **TOL)
    torch.testing.assert_close(ours_out.loss, theirs_out.loss, **TOL)
    theirs_out.loss.backward()
    ours_out.loss.backward()
    assert_same_grads(ours, theirs)
    torch.testing.assert_close(ours_embeds.grad, theirs_embeds.grad, **TOL)


def test_under_bf16_autocast_as_close_to_fp32_as_peft_s_own_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """train.precision bf16 on a CPU: PEFT and the fused path under the same autocast (products in bf16, fp32 weights
    and gradients) give the same logits and loss up to bf16 rounding, and gradients as close to the fp32 ones as
    PEFT's. (Autocast runs bf16 on any CPU, natively or not: the numbers are the same, only the speed differs.)"""
    fp32 = lora_model()
    theirs, ours = copy.deepcopy(fp32), copy.deepcopy(fp32)
    use_fused_lora(ours)
    calls = count_fused_calls(monkeypatch)
    outputs = []
    for model, bf16 in ((fp32, False), (theirs, True), (ours, True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(**batch())
        out.loss.backward()
        outputs.append(out)
    assert calls[0] == 14
    _, theirs_out, ours_out = outputs
    assert ours_out.logits.dtype == theirs_out.logits.dtype == torch.bfloat16
    scale = float(theirs_out.logits.detach().abs().max())
    torch.testing.assert_close(ours_out.logits, theirs_out.logits, rtol=0, atol=0.05 * scale)
    torch.testing.assert_close(ours_out.loss, theirs_out.loss, rtol=1e-2, atol=1e-2)
    grads = [
        torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad]) for model in (fp32, theirs, ours)
    ]
    assert all(p.grad.dtype == torch.float32 for p in ours.parameters() if p.requires_grad)

    def error(grad: torch.Tensor) -> float:  # against the fp32 gradients, relative
        return float((grad - grads[0]).norm() / grads[0].norm())

    # PEFT rounds the LoRA output to bf16 before the add, the fused addmm once after it: as close, not the same
    assert error(grads[2]) <= 1.5 * error(grads[1]) + 1e-3


def test_disabled_adapters_give_the_base_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = lora_model()
    use_fused_lora(model)
    calls = count_fused_calls(monkeypatch)
    with torch.no_grad():
        with_lora = model(**batch()).logits
        with model.disable_adapter():
            without = model(**batch()).logits
        base = tiny_llama()(**batch()).logits  # same seed: the weights under the adapters
    assert calls[0] == 14  # fused with adapters on, PEFT's fallback with them off
    assert not torch.allclose(with_lora, base, **TOL)
    torch.testing.assert_close(without, base, **TOL)


def test_merged_adapters_match_peft_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = lora_model()
    ours = copy.deepcopy(theirs)
    use_fused_lora(ours)
    calls = count_fused_calls(monkeypatch)
    for model in (theirs, ours):
        model.merge_adapter()
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch()).logits, theirs(**batch()).logits, **TOL)
    assert calls[0] == 0


def test_dropout_in_training_falls_back_to_peft(monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = lora_model(dropout=0.3)
    ours = copy.deepcopy(theirs)
    assert use_fused_lora(ours) == 14
    calls = count_fused_calls(monkeypatch)
    theirs.train()
    ours.train()
    torch.manual_seed(5)
    theirs_logits = theirs(**batch()).logits
    torch.manual_seed(5)
    ours_logits = ours(**batch()).logits
    assert calls[0] == 0
    torch.testing.assert_close(ours_logits, theirs_logits)  # same dropout masks: PEFT's forward ran unchanged


class WithBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 7, bias=True)
        self.other = nn.Linear(7, 5, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.other(torch.tanh(self.proj(x)))


@pytest.mark.parametrize("train_base", [False, True])
def test_biased_base_linear_same_outputs_and_gradients(monkeypatch: pytest.MonkeyPatch, train_base: bool) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=3, lora_alpha=5, target_modules=["proj", "other"], lora_dropout=0.0)
    theirs = randomize_lora_b(get_peft_model(WithBias(), config))
    if train_base:
        for name, param in theirs.named_parameters():
            if "base_layer" in name:
                param.requires_grad_(True)
    ours = copy.deepcopy(theirs)
    assert use_fused_lora(ours) == 2
    calls = count_fused_calls(monkeypatch)

    x = torch.randn(2, 4, 12)
    theirs_x, ours_x = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    theirs_y, ours_y = theirs(theirs_x), ours(ours_x)
    assert calls[0] == 2
    torch.testing.assert_close(ours_y, theirs_y, **TOL)
    target = torch.randn_like(theirs_y)
    ((theirs_y - target) ** 2).sum().backward()
    ((ours_y - target) ** 2).sum().backward()
    assert_same_grads(ours, theirs)
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, **TOL)
    trained = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert ("base_model.model.proj.base_layer.bias" in trained) == train_base


def test_bf16_copies_of_frozen_weights_are_cast_once_and_give_the_same_bits() -> None:
    """Inside casts_reused (the training loop) the frozen base weights are cast to bf16 once and the copies reused:
    the same logits and gradients, bit for bit, as casting at every forward; a weight changed in place or replaced is
    cast again; trained weights are never copied."""
    from identity_dpo.cpu_kernels.frozen_cast import casts_reused, frozen_cast

    model = lora_model()
    use_fused_lora(model)
    layer = next(m for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")).base_layer

    def step() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch())
        out.loss.backward()
        return out.logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    plain_logits, plain_grads = step()
    with casts_reused():
        for _ in range(2):
            logits, grads = step()
            assert torch.equal(logits, plain_logits)
            assert all(torch.equal(a, b) for a, b in zip(grads, plain_grads, strict=True))
        copy_of_weight = frozen_cast(layer.weight, torch.bfloat16)
        assert frozen_cast(layer.weight, torch.bfloat16) is copy_of_weight  # made once, then reused
        assert torch.equal(copy_of_weight, layer.weight.bfloat16())
        with torch.no_grad():
            layer.weight.mul_(2)  # in place: a new version
        assert torch.equal(frozen_cast(layer.weight, torch.bfloat16), layer.weight.bfloat16())
        layer.weight = nn.Parameter(torch.randn_like(layer.weight), requires_grad=False)
        assert torch.equal(frozen_cast(layer.weight, torch.bfloat16), layer.weight.bfloat16())
        trained = torch.randn(3, 4, requires_grad=True)
        assert frozen_cast(trained, torch.bfloat16) is trained
        fp32 = torch.randn(3, 4)
        assert frozen_cast(fp32, torch.float32) is fp32
    outside = frozen_cast(layer.weight, torch.bfloat16)  # outside the context: a fresh cast every time
    assert outside is not frozen_cast(layer.weight, torch.bfloat16) and torch.equal(outside, layer.weight.bfloat16())
