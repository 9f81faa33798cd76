"""Counting the calls to one of the package's fused autograd functions: proof that a fused path ran (or did not)."""

from __future__ import annotations

from typing import Any

import pytest


def count_fused_calls(monkeypatch: pytest.MonkeyPatch, function: Any) -> list[int]:
    """A counter of the calls to the fused autograd `function` (e.g. fused_lora._LoraLinearFunction) from now on."""
    calls = [0]
    apply = function.apply

    def counting_apply(*args: Any) -> Any:
        calls[0] += 1
        return apply(*args)

    monkeypatch.setattr(function, "apply", counting_apply)
    return calls
