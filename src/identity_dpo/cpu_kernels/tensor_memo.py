"""Values computed from a tensor, reused while that tensor is unchanged.

Two kernels need the same rule while training runs: frozen_cast keeps each frozen weight's bf16 copy, sdpa_backward
each batch's additive attention mask. "Unchanged" is: the same tensor object, at the same address and the same
`Tensor._version`, a torch internal that counts in-place changes made through the tensor (not those made through
`.data`, which is why both keep their memo only inside a context where their tensors do not change that way:
docs/upgrading.md). An entry goes when its tensor does, so a memo kept for a whole training loop holds the values of
the tensors still alive (the frozen weights; the masks of the batch in flight), not those of every batch seen.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import torch

Value = TypeVar("Value")


class TensorMemo:
    """`get(tensor, tag, make)`: make() the first time, the same value again while `tensor` is unchanged."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Hashable], tuple[weakref.ref[torch.Tensor], int, int, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tensor: torch.Tensor, tag: Hashable, make: Callable[[], Value]) -> Value:
        key = (id(tensor), tag)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is tensor and entry[1:3] == (tensor._version, tensor.data_ptr()):
            return entry[3]
        value = make()
        entries = self._entries  # not self: the callback must not keep the memo alive

        def forget(ref: weakref.ref[torch.Tensor], key: tuple[int, Hashable] = key) -> None:
            if key in entries and entries[key][0] is ref:  # not a newer entry of a tensor given the same id
                del entries[key]

        self._entries[key] = (weakref.ref(tensor, forget), tensor._version, tensor.data_ptr(), value)
        return value
