"""Our greedy decoding loop: the tokens `model.generate(do_sample=False)` gives, arranged for a CPU.

`generate` keeps computing every finished row of a batch until its longest answer ends; this loop drops a row from
the batch and from its KV cache as soon as the row's answer is finished, reads the prompts in groups of similar
length, and reads the tokens every prompt starts with (the chat template's system turn) once. Tests check that it
gives `generate`'s tokens; bench/speed.py measures the difference (BENCHMARKS.md).

Relies on transformers' cache internals: DynamicCache(config=...).layers, is_sliding, update, get_seq_length and
batch_select_indices, and cache_utils.DynamicLayer (subclassed by a layer that writes new positions into room
reserved at its end); and on a model's `base_model` and `logits_to_keep`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from identity_dpo.cpu_kernels.architecture import has_sliding_window, plain_head_weight

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def greedy_decode(
    model: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    stops: list[int],
    pad: int,
    on_finished: Callable[[int], Any] | None = None,
) -> list[list[int]]:
    """The new tokens of each prompt, decoded greedily (a stop token ends a row; it and what follows are not answer).
    `on_finished`, if given, gets the number of rows that ended at each step (a progress bar's update).

    The same computation per row as `model.generate(do_sample=False)`, arranged for a CPU: prompts are read
    (prefilled) in groups of similar length, so little of that work goes to padding, then all rows decode
    together, and a finished row leaves the batch, so later steps compute only the rows still answering.
    The tokens every prompt starts with (the chat template's system turn) are read once, and each group reads
    only the rest (not for sliding-window models: see below).
    New keys and values are written into room reserved at the end of the cache instead of copying the whole
    cache every step; the cache keeps every position, also for sliding-window models, whose attention mask
    already hides what is past the window. Pass prompts sorted by length (generate() does) to keep the
    groups' padding small.
    """
    import torch
    from transformers import DynamicCache

    head = plain_head_weight(model)
    cache = DynamicCache(config=model.config)
    # A sliding window spans cache columns, not positions: the padding between a shared prefix and a shorter
    # prompt would narrow that prompt's window, so sliding-window models read every prompt whole.
    shared = 0 if has_sliding_window(model.config) else _shared_prefix_length(prompts)
    prefix = _read_prefix(model, prompts[0][:shared])
    suffixes = [prompt[shared:] for prompt in prompts]
    groups = [_prefill(model, head, group, pad, prefix) for group in _prefill_groups(suffixes)]
    width = max(mask.size(1) for mask, _, _ in groups)
    attention_mask = torch.cat([_left_pad(mask, width) for mask, _, _ in groups])
    next_tokens = torch.cat([first for _, first, _ in groups])
    cache.layers = [
        _growing_layer_class()(
            torch.cat([_left_pad(layers[i].keys, width) for _, _, layers in groups]),
            torch.cat([_left_pad(layers[i].values, width) for _, _, layers in groups]),
            room=max_new_tokens,
        )
        for i in range(len(groups[0][2]))
    ]
    positions = attention_mask.sum(-1) - 1  # of each prompt's last token: positions count real tokens only
    active = list(range(len(prompts)))  # batch row -> prompt index
    answers: list[list[int]] = [[] for _ in prompts]
    stop_set = set(stops)
    while True:
        keep = []
        for k, (index, token) in enumerate(zip(active, next_tokens.tolist(), strict=True)):
            answers[index].append(token)
            if token not in stop_set and len(answers[index]) < max_new_tokens:
                keep.append(k)
        if on_finished is not None and len(keep) < len(active):
            on_finished(len(active) - len(keep))
        if not keep:
            return answers
        if len(keep) < len(active):
            order = _fill_holes(keep)
            rows = torch.tensor(order)
            cache.batch_select_indices(rows)
            attention_mask, next_tokens, positions = attention_mask[rows], next_tokens[rows], positions[rows]
            active = [active[k] for k in order]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=-1)
        positions = positions + 1
        next_tokens = _greedy_next(
            model, head, input_ids=next_tokens[:, None], attention_mask=attention_mask, position_ids=positions[:, None],
            past_key_values=cache, use_cache=True,
        )  # fmt: skip


def _fill_holes(keep: list[int]) -> list[int]:
    """The batch rows after a step (new row j is old row order[j]) when only the rows `keep` (ascending) go on.

    A kept row among the first len(keep) stays where it is; each row that finished there is replaced by a kept
    row from beyond them. So the cache moves one row per finished row instead of copying every row that goes on
    (all layers' keys and values of each).
    """
    n = len(keep)
    kept = set(keep)
    order = list(range(n))
    holes = [k for k in range(n) if k not in kept]
    for hole, row in zip(holes, (k for k in keep if k >= n), strict=True):
        order[hole] = row
    return order


# Most prompt tokens per prefill forward pass (its activations stay small), and what one more pass costs, counted
# in prompt tokens: a pass of few rows computes its matrix products at a fraction of the CPU's speed.
PREFILL_TOKENS = 2048
PASS_COST_TOKENS = 64


def _prefill_groups(prompts: list[list[int]]) -> list[list[list[int]]]:
    """Consecutive runs of `prompts` (sorted longest first) to read together, left-padded to the run's longest.

    Chosen to minimize padding plus PASS_COST_TOKENS per pass: chat prompts' lengths vary a lot (one long
    multi-turn prompt would pad twenty short ones to its length), so a fixed budget per pass wasted much of the
    prefill on padding.
    """
    n = len(prompts)
    best = [0.0] + [float("inf")] * n  # best[j]: least cost of reading prompts[:j]
    start = [0] * (n + 1)  # start[j]: where the last run of that best split begins
    for end in range(1, n + 1):
        longest = 0
        for begin in range(end - 1, -1, -1):
            longest = max(longest, len(prompts[begin]))
            padded = (end - begin) * longest
            if padded > PREFILL_TOKENS and end - begin > 1:
                break
            cost = best[begin] + padded + PASS_COST_TOKENS
            if cost < best[end]:
                best[end], start[end] = cost, begin
    groups: list[list[list[int]]] = []
    end = n
    while end > 0:
        groups.insert(0, prompts[start[end] : end])
        end = start[end]
    return groups


def _shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many tokens all prompts start with, leaving each at least one token of its own to read."""
    shortest = min(len(prompt) for prompt in prompts)
    first = prompts[0]
    for k in range(shortest - 1):
        if any(prompt[k] != first[k] for prompt in prompts):
            return k
    return max(shortest - 1, 0)


def _read_prefix(model: PreTrainedModel, tokens: list[int]) -> list[tuple[Any, Any]]:
    """The keys and values of each layer for `tokens` read alone, at positions 0, 1, ... (none for no tokens)."""
    import torch
    from transformers import DynamicCache

    if not tokens:
        return []
    cache = DynamicCache()  # plain layers keep every position (a config's sliding-window layers would drop some)
    model(input_ids=torch.tensor([tokens]), past_key_values=cache, use_cache=True, logits_to_keep=1)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _prefill(
    model: PreTrainedModel,
    head: Any,
    prompts: list[list[int]],
    pad: int,
    prefix: list[tuple[Any, Any]],
) -> tuple[Any, Any, Any]:
    """Read one group of prompts after the shared `prefix`: the attention mask over prefix and prompts, their first
    answer tokens, and their cache layers."""
    import torch
    from transformers import DynamicCache

    input_ids, attention_mask = left_padded(prompts, pad)
    cache = DynamicCache()
    for index, (keys, values) in enumerate(prefix):
        cache.update(keys.expand(len(prompts), -1, -1, -1), values.expand(len(prompts), -1, -1, -1), index)
    shared = cache.get_seq_length()
    # Positions count real tokens only, so a left-padded prompt is positioned as if it stood alone; the padding
    # between the prefix and a prompt is a hole in the mask.
    attention_mask = torch.cat([attention_mask.new_ones((len(prompts), shared)), attention_mask], dim=-1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    first = _greedy_next(
        model, head, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
        past_key_values=cache, use_cache=True,
    )  # fmt: skip
    return attention_mask, first, cache.layers


def _greedy_next(model: PreTrainedModel, head: Any, **inputs: Any) -> Any:
    """The most likely next token after each row of `inputs` (a forward pass that also fills the cache).

    `head` is plain_head_weight(model): when the logits are a plain product (head is not None), the vocabulary
    projection is computed weight first, as (head @ hidden.T). For the few rows of a decoding step, MKL runs that
    faster than `hidden @ head.T` (docs/speed-history.md), and argmax over the vocabulary axis needs no transposed
    copy. Rows of 15 or more give bit-identical logits either way; fewer can differ in the last bit.
    """
    import torch

    if head is None:
        return first_argmax(model(**inputs, logits_to_keep=1).logits[:, -1], dim=1)
    hidden = model.base_model(**inputs).last_hidden_state[:, -1]
    return first_argmax(torch.mm(head, hidden.T), dim=0)


# Vocabulary entries per block of first_argmax's first pass.
ARGMAX_BLOCK = 512
# Below this many rows of a (vocabulary, rows) tensor, max(0) beats the two passes: torch vectorizes a reduction over
# the outer axis across the rows, which few rows leave mostly idle (measured on AVX-512 hosts, fp32 and bf16).
ARGMAX_FEW_ROWS = 32


def first_argmax(scores: Any, dim: int) -> Any:
    """torch.argmax(scores, dim) of a 2-D tensor (the first index of the largest value, NaN counting as largest),
    computed in two passes: the largest value of each block of ARGMAX_BLOCK entries, then argmax within the block
    that holds the first largest one.

    Why: on a CPU, torch's argmax over a vocabulary is a scalar loop (about 1 element per ns in fp32, half that in
    bf16: 6-10 ms for 64 rows of SmolLM2's 49,152 logits, longer than the bf16 vocabulary product itself), while amax
    is vectorized; the two passes take a tenth of that. Every step of greedy decoding takes one.
    tests/test_models_and_generation.py checks it against torch.argmax, ties and NaN included.
    """
    import torch

    rows_last = scores if dim == 1 else scores.T  # (rows, vocabulary): a view
    rows, size = rows_last.shape
    blocks = size // ARGMAX_BLOCK
    if blocks < 2 or (dim == 0 and rows < ARGMAX_FEW_ROWS):
        return scores.max(dim).indices  # the same first index as argmax, and faster than it on a CPU
    body = blocks * ARGMAX_BLOCK
    # Block maxima as (blocks, rows) in either layout, then the tail's (fewer than ARGMAX_BLOCK entries) after them.
    if dim == 0:
        maxima = scores[:body].reshape(blocks, ARGMAX_BLOCK, rows).amax(1)
    else:
        maxima = scores[:, :body].reshape(rows, blocks, ARGMAX_BLOCK).amax(2).T
    if body < size:
        maxima = torch.cat([maxima, rows_last[:, body:].amax(1)[None]])
    # max over blocks gives the first block holding the largest value (NaN counts as largest, as amax keeps it)
    start = maxima.max(0).indices * ARGMAX_BLOCK
    # Each row's block: positions past the end repeat the last entry, after its own place, so they never come first.
    where = (start[:, None] + torch.arange(ARGMAX_BLOCK)).clamp_(max=size - 1)
    window = rows_last.gather(1, where)
    return start + window.argmax(1)


def left_padded(prompts: list[list[int]], pad: int) -> tuple[Any, Any]:
    """Token ids and attention mask of `prompts` as one batch, padded on the left (answers continue on the right).
    Plain torch, no library internal: the plain path (generation.transformers_generate) pads its batches with it too."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def _left_pad(tensor: Any, width: int) -> Any:
    """Zeros on the left of the sequence axis (dim 1 of a mask, dim 2 of cached keys/values) up to `width`."""
    import torch

    dim = 1 if tensor.dim() == 2 else 2
    missing = width - tensor.size(dim)
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


@functools.cache  # built on first use: transformers is imported only when a model runs
def _growing_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A cache layer with room for `room` more positions: each step writes there instead of copying the cache."""

        def __init__(self, keys: Any, values: Any, room: int) -> None:
            super().__init__()
            self.length = keys.size(2)
            self._keys = keys.new_zeros((*keys.shape[:2], self.length + room, keys.size(3)))
            self._values = values.new_zeros((*values.shape[:2], self.length + room, values.size(3)))
            self._keys[:, :, : self.length] = keys
            self._values[:, :, : self.length] = values
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._expose()

        def _expose(self) -> None:
            self.keys = self._keys[:, :, : self.length]
            self.values = self._values[:, :, : self.length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            new = key_states.size(2)
            self._keys[:, :, self.length : self.length + new] = key_states
            self._values[:, :, self.length : self.length + new] = value_states
            self.length += new
            self._expose()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            """New row j is old row indices[j]; only rows that change place are copied (see _fill_holes)."""
            import torch

            moved = indices != torch.arange(len(indices))
            if moved.any():
                targets = moved.nonzero().squeeze(1)
                self._keys[targets] = self._keys[indices[targets]]  # the right side is a copy, so overlaps are safe
                self._values[targets] = self._values[indices[targets]]
            self._keys, self._values = self._keys[: len(indices)], self._values[: len(indices)]
            self._expose()

    return GrowingLayer
