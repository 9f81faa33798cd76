"""Frozen weights cast to the products' dtype once per training run, instead of at every forward.

Under bf16 autocast a weight that needs no gradient is cast again at every use (autocast caches only the casts of
weights that require one), so with LoRA the whole frozen base, about 100M parameters for SmolLM2-135M, was converted
to bf16 at every training step (what casting it once saved: docs/speed-history.md). Inside `casts_reused()` the
kernels that cast a frozen weight themselves (fused_lora, answer_head) take it from `frozen_cast`, which keeps one
copy per weight, the same bits as each cast would give.

The copy is reused while the weight is unchanged (tensor_memo.TensorMemo: the same tensor, address and version), which
misses changes made through `.data`, so the copies are kept only inside the context, which the trainer enters around
its training loop, where the frozen weights do not change. Outside it `frozen_cast` casts as autocast would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from identity_dpo.cpu_kernels.tensor_memo import TensorMemo

_copies: TensorMemo | None = None  # inside casts_reused: each frozen weight's copy, per dtype


@contextmanager
def casts_reused() -> Iterator[None]:
    """Within, a frozen weight is cast once (frozen_cast); the copies are dropped on the way out."""
    global _copies
    outer, _copies = _copies, TensorMemo()
    try:
        yield
    finally:
        _copies = outer


def frozen_cast(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`weight` in `dtype`: inside casts_reused, a frozen weight's copy made at its first use; else a fresh cast. A
    weight that needs a gradient (or is in `dtype` already) is returned as it is, for the caller to cast."""
    if weight.dtype == dtype or weight.requires_grad:
        return weight
    if _copies is None:
        return weight.to(dtype)
    return _copies.get(weight, dtype, lambda: weight.detach().to(dtype))
