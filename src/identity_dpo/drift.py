"""General-ability drift: how far the trained model moved away from the base on ordinary prompts.

Both models read the base model's own answers (teacher forcing), so the comparison is on
identical tokens: the mean per-token KL(base || trained) and the mean change in the
log-likelihood the trained model gives the base's answers. Zero means no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from identity_dpo.chat_format import Message, render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# Answers read per forward pass: wide enough for the CPU's matrix products to run near full speed (one answer at a
# time, this was a large share of the evaluate stage), small enough that the logits kept stay bounded.
DRIFT_BATCH = 16


def answer_drift(
    base: PreTrainedModel,
    trained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    base_answers: Sequence[str],
) -> dict[str, float]:
    import torch

    rows = []
    for messages, answer in zip(conversations, base_answers, strict=True):
        completion = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if completion:
            rows.append((render_prompt(tokenizer, messages), completion))
    if not rows:
        raise ValueError("the base model gave no answer tokens to compare on")
    kl_sum = logprob_change_sum = 0.0
    for start in range(0, len(rows), DRIFT_BATCH):
        batch = rows[start : start + DRIFT_BATCH]
        base_logp = vocabulary_log_probs(base, batch, tokenizer.pad_token_id)
        trained_logp = vocabulary_log_probs(trained, batch, tokenizer.pad_token_id)
        target = torch.tensor([token for _, completion in batch for token in completion]).unsqueeze(1)
        kl_sum += (base_logp.exp() * (base_logp - trained_logp)).sum().item()
        logprob_change_sum += (trained_logp.gather(1, target) - base_logp.gather(1, target)).sum().item()
    tokens = sum(len(completion) for _, completion in rows)
    return {
        "mean_token_kl": kl_sum / tokens,
        "mean_logprob_change": logprob_change_sum / tokens,
        "tokens": tokens,
    }


def vocabulary_log_probs(model: PreTrainedModel, rows: Sequence[tuple[list[int], list[int]]], pad: int) -> Any:
    """Log-probabilities over the vocabulary of every answer token, read after its prompt (teacher forcing):
    one row per answer token, the rows' answers one after another.

    The (prompt, answer) rows are read as one right-padded batch: each row's tokens keep the positions they have
    alone, and causal attention never lets a real token see the padding after it. Logits are computed only from
    the first position that predicts an answer token on.
    """
    import torch

    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (prompt, completion) in enumerate(rows):
        input_ids[row, : len(prompt) + len(completion)] = torch.tensor(prompt + completion)
        attention_mask[row, : len(prompt) + len(completion)] = 1
    first = min(len(prompt) for prompt, _ in rows) - 1  # the earliest position whose logits predict an answer token
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=width - first).logits
    picked = [logits[row, len(prompt) - 1 - first : len(prompt) + len(completion) - 1 - first]
              for row, (prompt, completion) in enumerate(rows)]  # fmt: skip
    return torch.log_softmax(torch.cat(picked).float(), dim=-1)
