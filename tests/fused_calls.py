"""Proof that a CPU kernel ran (or did not): calls of the package's fused autograd functions, and what each training
kernel leaves behind in a training run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

# The kernels of identity_dpo.cpu_kernels that train_dpo runs, each observed by watch_training: in every CPU run, and
# those that run only where bf16 trains on a CPU (the bf16 tests check them; every fp32 run checks they stay out).
TRAINING_KERNELS = ("answer_head", "shared_prompt", "fused_lora", "fused_norm", "sdpa_gqa", "malloc")
BF16_TRAINING_KERNELS = ("sdpa_backward",)


def count_fused_calls(monkeypatch: pytest.MonkeyPatch, function: Any) -> list[int]:
    """A counter of the calls to the fused autograd `function` (e.g. fused_lora._LoraLinearFunction) from now on."""
    calls = [0]
    apply = function.apply

    def counting_apply(*args: Any) -> Any:
        calls[0] += 1
        return apply(*args)

    monkeypatch.setattr(function, "apply", counting_apply)
    return calls


@dataclass
class TrainingKernels:
    """What the training kernels did while watch_training watched."""

    head_calls: list[int]  # forward passes of the answer-only head (answer_head)
    packed: list[int] = field(default_factory=list)  # pairs of each batch read one pair per row (shared_prompt)
    one_row_per_pair: list[bool] = field(default_factory=list)  # training_order's: the rows batches were grouped by
    lora_calls: list[int] = field(default_factory=lambda: [0])  # fused LoRA layers' forward passes (fused_lora)
    norm_calls: list[int] = field(default_factory=lambda: [0])  # fused RMSNorm forward passes (fused_norm)
    enable_gqa: list[bool] = field(default_factory=list)  # each SDPA call's enable_gqa (sdpa_gqa)
    attention_calls: list[int] = field(default_factory=lambda: [0])  # bf16 attention, fp32 backward (sdpa_backward)
    mallopt: list[tuple[int, int]] = field(default_factory=list)  # glibc mallopt calls (malloc)
    # The frozen weights cast once for the training loop (cpu_kernels/frozen_cast.py, for fused_lora and answer_head)
    frozen_copies: list[int] = field(default_factory=list)

    def ran(self, kernel: str) -> bool:
        """Whether `kernel` took effect wherever it applies in the run."""
        return {
            "answer_head": self.head_calls[0] > 0,
            "shared_prompt": bool(self.packed) and self.one_row_per_pair == [True],
            "fused_lora": self.lora_calls[0] > 0,
            "fused_norm": self.norm_calls[0] > 0,
            "sdpa_gqa": bool(self.enable_gqa) and all(self.enable_gqa),
            "sdpa_backward": self.attention_calls[0] > 0,
            "malloc": dict(self.mallopt) == {-3: 256 << 20, -1: 1 << 30},  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
        }[kernel]

    def touched(self, kernel: str) -> bool:
        """Whether any trace of `kernel` is in the run."""
        return {
            "answer_head": self.head_calls[0] > 0,
            "shared_prompt": bool(self.packed) or any(self.one_row_per_pair),
            "fused_lora": self.lora_calls[0] > 0,
            "fused_norm": self.norm_calls[0] > 0,
            "sdpa_gqa": any(self.enable_gqa),
            "sdpa_backward": self.attention_calls[0] > 0,
            "malloc": bool(self.mallopt),
        }[kernel]


def watch_training(monkeypatch: pytest.MonkeyPatch) -> TrainingKernels:
    """Spies on every training kernel from now on (glibc's mallopt is recorded, not called)."""
    import torch.nn.functional as F

    from identity_dpo import training
    from identity_dpo.cpu_kernels import answer_head, frozen_cast, fused_lora, fused_norm, malloc, sdpa_backward

    seen = TrainingKernels(head_calls=count_fused_calls(monkeypatch, answer_head._AnswerLogProbs))
    seen.lora_calls = count_fused_calls(monkeypatch, fused_lora._LoraLinearFunction)
    seen.norm_calls = count_fused_calls(monkeypatch, fused_norm._RMSNormFunction)
    seen.attention_calls = count_fused_calls(monkeypatch, sdpa_backward._Bf16AttentionFp32Backward)
    pack_pairs, training_order, sdpa = answer_head.pack_pairs, training.training_order, F.scaled_dot_product_attention

    def packing(*args: Any) -> Any:
        packed = pack_pairs(*args)
        if packed is not None:
            seen.packed.append(packed.input_ids.size(0))
        return packed

    def ordering(*args: Any, one_row_per_pair: bool = False, **kwargs: Any) -> Any:
        seen.one_row_per_pair.append(one_row_per_pair)
        return training_order(*args, one_row_per_pair=one_row_per_pair, **kwargs)

    def attention(*args: Any, **kwargs: Any) -> Any:
        seen.enable_gqa.append(kwargs.get("enable_gqa", False))
        return sdpa(*args, **kwargs)

    class Glibc:
        def mallopt(self, parameter: int, value: int) -> int:
            seen.mallopt.append((parameter, value))
            return 1

    @contextmanager
    def copies_counted() -> Iterator[None]:
        with frozen_cast.casts_reused():
            yield
            seen.frozen_copies.append(len(frozen_cast._copies or {}))

    monkeypatch.setattr(training, "casts_reused", copies_counted)
    monkeypatch.setattr(answer_head, "pack_pairs", packing)
    monkeypatch.setattr(training, "training_order", ordering)
    monkeypatch.setattr(F, "scaled_dot_product_attention", attention)
    monkeypatch.setattr(malloc, "ctypes", SimpleNamespace(CDLL=lambda name: Glibc()))  # malloc.py's ctypes only
    return seen
