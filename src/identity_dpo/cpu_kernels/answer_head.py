"""Log-probabilities of the answer tokens for DPO on a CPU, computed where the labels are.

TRL's DPOTrainer swaps the model's LM head for a fused one that returns per-token log-probs without
materializing the whole (batch, length, vocabulary) logits. Without Triton (on any CPU) that head
scores every position, prompt included, in large tiles with a dozen full-tile temporaries, which made
it much of a training step's time and peak memory (docs/speed-history.md). This head projects only
the positions that carry a label (the answer tokens), a chunk of tokens at a time, and keeps the
softmax for the backward pass only up to KEEP_BYTES (the chunks beyond are recomputed there), so
memory stays bounded whatever the batch. It returns what TRL's head returns (TRL's loss code reads
the same fields); tests/test_lm_head.py checks both give the same log-probs, gradients and DPO loss.
It can also read each pair's prompt once for both answers instead of twice (shared_prompt.py). Under bf16
autocast (train.precision bf16 on a CPU) its vocabulary products run in bf16 and the softmax, log-probs and logit
gradients in fp32, as TRL's head runs them; the tests compare both under the same autocast.

Installed in place of TRL's `add_fused_lm_head` (answer_only_lm_head) for CPU training only; on a GPU,
TRL's Triton kernels do the same job.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from identity_dpo.cpu_kernels.architecture import has_sliding_window, plain_head_weight
from identity_dpo.cpu_kernels.frozen_cast import frozen_cast
from identity_dpo.cpu_kernels.shared_prompt import IGNORE, PackedPairs, pack_pairs, takes_packed_mask

CHUNK_TOKENS = 512  # rows of logits computed at once: their memory is CHUNK_TOKENS x the vocabulary
# The forward's softmax kept for the backward instead of a second vocabulary product there, up to this many bytes
# per batch (enough for the default pairs' batches); the chunks beyond are recomputed.
KEEP_BYTES = 256 << 20
HEAD_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # the per-token fields this head computes


class _AnswerLogProbs(torch.autograd.Function):
    """log p(target) for each row of `hidden` under the head `weight`, plus entropy, mean logit and top-1 hit.

    The vocabulary products run in `dtype` (bf16 under autocast, as TRL's head runs them); the softmax, its
    statistics and the gradient of the logits are fp32 whatever the products' dtype, as autocast keeps log_softmax.
    The backward needs each chunk's softmax. The forward keeps it (as exp(logits - max) and its row sums) for as
    many chunks as fit in `keep_bytes`; the others are recomputed from `hidden` in the backward (a second vocabulary
    product). A kept chunk is used once: a second backward through the graph recomputes it.
    """

    @staticmethod
    def forward(
        ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, keep_bytes: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, ...]:
        n = hidden.size(0)
        log_z, log_probs, entropy, mean_logits, exp_sums = (hidden.new_empty(n, dtype=torch.float32) for _ in range(5))
        is_top1 = torch.empty(n, dtype=torch.bool, device=hidden.device)
        ctx.kept = []
        head = weight.to(dtype)  # the weight itself in fp32; under autocast one bf16 copy for every chunk
        for rows in _chunks(n):
            logits = (hidden[rows].to(dtype) @ head.T).float()
            target_logits = logits.gather(-1, targets[rows, None]).squeeze(-1)
            mean_logits[rows] = logits.mean(-1)
            top, top_index = logits.max(-1)  # the index of the first maximum, as TRL's argmax counts it
            is_top1[rows] = top_index == targets[rows]
            exps = torch.sub(logits, top[:, None]).exp_()  # exp(logits - max): no overflow
            exp_sums[rows] = exps.sum(-1)
            log_z[rows] = top + exp_sums[rows].log()
            log_probs[rows] = target_logits - log_z[rows]
            # entropy = log_z - sum(softmax * logits); the product goes into the logits, which are not needed after
            entropy[rows] = log_z[rows] - logits.mul_(exps).sum(-1) / exp_sums[rows]
            keep_bytes -= exps.numel() * exps.element_size()
            if keep_bytes >= 0:  # the budget only shrinks: the kept chunks are the first ones
                ctx.kept.append(exps)
        ctx.save_for_backward(hidden, head, targets, log_z, exp_sums)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(entropy, mean_logits, is_top1)
        return log_probs, entropy, mean_logits, is_top1

    @staticmethod
    def backward(ctx: Any, grad_log_probs: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, ...]:
        hidden, head, targets, log_z, exp_sums = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(head, dtype=ctx.weight_dtype) if need_weight else None
        grad_log_probs = grad_log_probs.float()
        kept, ctx.kept = ctx.kept, []
        for index, rows in enumerate(_chunks(hidden.size(0))):
            # d log p(target) / d logits = onehot(target) - softmax(logits)
            if index < len(kept):
                grad_logits = kept[index].mul_((-grad_log_probs[rows] / exp_sums[rows])[:, None])
                kept[index] = None  # its memory goes as soon as the chunk is done
            else:
                grad_logits = (hidden[rows].to(head.dtype) @ head.T).float().sub_(log_z[rows, None]).exp_()
                grad_logits.mul_(-grad_log_probs[rows, None])
            grad_logits.scatter_add_(-1, targets[rows, None], grad_log_probs[rows, None])
            grad_logits = grad_logits.to(head.dtype)  # the products' dtype, as TRL rounds its gradient tile
            if grad_hidden is not None:
                grad_hidden[rows] = grad_logits @ head
            if grad_weight is not None:
                _add_product(grad_weight, grad_logits.T, hidden[rows].to(head.dtype))
        return grad_hidden, grad_weight, None, None, None


def _add_product(total: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """total += a @ b, for a total that may be wider than the product (bf16 chunks summed in fp32)."""
    if a.dtype == total.dtype:
        total.addmm_(a, b)
    else:
        total.add_(a @ b)


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK_TOKENS):
        yield slice(start, min(start + CHUNK_TOKENS, n))


def answer_log_probs(
    answer_hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    fp32_products: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Per-position (log_probs, entropy, mean_logits, is_top1) of next-token `labels`; zero where `mask` is False.

    `labels` is (batch, length), already shifted to the position they follow, and `mask` is labels != IGNORE;
    `answer_hidden` holds the hidden state of each labeled position, in row-major order (hidden[mask] for a
    (batch, length, width) hidden). The vocabulary products run in autocast's dtype when autocast is on, else in
    the hidden states'; `fp32_products` (TRL's cast_lm_head_to_fp32) runs them in fp32 whatever autocast says.
    """
    needs_grad = torch.is_grad_enabled() and (answer_hidden.requires_grad or weight.requires_grad)
    device = answer_hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else answer_hidden.dtype
    if fp32_products:
        dtype = torch.float32
    weight = frozen_cast(weight, dtype)  # a frozen head: cast once per training run (frozen_cast.py)
    with torch.autocast(device, enabled=False):  # the products' dtype is `dtype`; the rest stays fp32
        values = _AnswerLogProbs.apply(answer_hidden, weight, labels[mask], KEEP_BYTES if needs_grad else 0, dtype)
    # masked_scatter keeps the result connected to the graph even when no position has a label
    return tuple(v.new_zeros(mask.shape).masked_scatter(mask, v) for v in values)


def add_answer_lm_head(model: Any, temperature: float = 1.0, cast_lm_head_to_fp32: bool = False,
                       outputs: tuple[str, ...] = ("log_probs",), *, fallback: Any,
                       share_prompts: bool = True) -> None:  # fmt: skip
    """TRL's `add_fused_lm_head`, for the cases this head covers; anything else goes to TRL's own (`fallback`).

    `share_prompts`: read a batch one pair per row where the model allows it (shares_prompts); False keeps TRL's
    two rows per pair.
    """
    if temperature != 1.0 or plain_head_weight(model) is None or set(outputs) - set(HEAD_OUTPUTS):
        fallback(model, temperature=temperature, cast_lm_head_to_fp32=cast_lm_head_to_fp32, outputs=outputs)
        return
    from trl.trainer.utils import FusedCausalLMOutput

    original_forward = model.forward
    sliding_window = has_sliding_window(model.config)  # once: it builds a cache layout for every layer

    @functools.wraps(type(model).forward)  # generate() checks its keyword arguments against this signature
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head:
            if labels is not None:
                kwargs["labels"] = labels
            return original_forward(*args, **kwargs)
        kwargs.pop("num_items_in_batch", None)
        kwargs["use_cache"] = False
        shifted = labels[:, 1:]
        mask = shifted != IGNORE
        attention = self.config._attn_implementation
        packing = share_prompts and shares_prompts(self.config, sliding_window)
        packed = _packed_pairs(args, kwargs, labels) if packing else None
        if packed is None:
            answer_hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1][mask]
        else:
            hidden = self.base_model(
                input_ids=packed.input_ids, attention_mask=packed.attention_mask(attention, self.dtype),
                position_ids=packed.position_ids, use_cache=False,
            ).last_hidden_state  # fmt: skip
            answer_hidden = hidden[packed.source_row, packed.source_position]
        weight = self.get_output_embeddings().weight
        log_probs, entropy, mean_logits, is_top1 = answer_log_probs(
            answer_hidden, weight, shifted, mask, fp32_products=cast_lm_head_to_fp32
        )
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / mask.sum().clamp(min=1),
            log_probs=log_probs,
            entropy=entropy,
            mean_logits=mean_logits,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)


def shares_prompts(config: Any, sliding_window: bool | None = None) -> bool:
    """Whether this head can read a DPO batch of a model with this config one pair per row (shared_prompt.py).

    `sliding_window` is has_sliding_window(config), when the caller already has it.
    """
    if sliding_window is None:
        sliding_window = has_sliding_window(config)
    # A packed row's 4D mask replaces the model's own, which is where a sliding window would be applied.
    return not sliding_window and takes_packed_mask(config._attn_implementation)


def _packed_pairs(args: tuple[Any, ...], kwargs: dict[str, Any], labels: Any) -> PackedPairs | None:
    """The batch packed one pair per row (shared_prompt.py), when it is a plain DPO batch of token ids."""
    given = {key for key, value in kwargs.items() if value is not None and key != "use_cache"}  # PEFT passes Nones
    if args or given != {"input_ids", "attention_mask"}:
        return None  # e.g. images, token type ids, router logits, or embeddings from prompt-learning adapters
    return pack_pairs(kwargs["input_ids"], kwargs["attention_mask"], labels)


@contextmanager
def answer_only_lm_head(share_prompts: bool) -> Iterator[None]:
    """While a DPOTrainer is built, have it install this head instead of its own (it does so in __init__,
    before it precomputes the reference log-probs); the model keeps the head afterwards. `share_prompts` as in
    add_answer_lm_head."""
    from trl.trainer import dpo_trainer

    original = dpo_trainer.add_fused_lm_head
    dpo_trainer.add_fused_lm_head = functools.partial(
        add_answer_lm_head, fallback=original, share_prompts=share_prompts
    )
    try:
        yield
    finally:
        dpo_trainer.add_fused_lm_head = original
