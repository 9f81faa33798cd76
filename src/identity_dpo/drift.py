"""General-ability drift: how far the trained model moved away from the base on ordinary prompts.

Both models read the base model's own answers (teacher forcing), so the comparison is on
identical tokens: the mean per-token KL(base || trained) and the mean change in the
log-likelihood the trained model gives the base's answers. Zero means no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from identity_dpo.generation import Message, render_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def answer_drift(
    base: PreTrainedModel,
    trained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    base_answers: Sequence[str],
) -> dict[str, float]:
    import torch

    kl_sum = logprob_change_sum = 0.0
    tokens = 0
    for messages, answer in zip(conversations, base_answers, strict=True):
        prompt = render_prompt(tokenizer, messages)
        completion = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not completion:
            continue
        ids = torch.tensor([prompt + completion])
        positions = slice(len(prompt) - 1, ids.shape[1] - 1)  # logits that predict the answer tokens
        with torch.inference_mode():
            base_logp = torch.log_softmax(base(ids).logits[0, positions].float(), dim=-1)
            trained_logp = torch.log_softmax(trained(ids).logits[0, positions].float(), dim=-1)
        target = torch.tensor(completion).unsqueeze(1)
        kl_sum += (base_logp.exp() * (base_logp - trained_logp)).sum().item()
        logprob_change_sum += (trained_logp.gather(1, target) - base_logp.gather(1, target)).sum().item()
        tokens += len(completion)
    if tokens == 0:
        raise ValueError("the base model gave no answer tokens to compare on")
    return {
        "mean_token_kl": kl_sum / tokens,
        "mean_logprob_change": logprob_change_sum / tokens,
        "tokens": tokens,
    }
