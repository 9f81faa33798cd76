"""Chat generation: the one routine that answers prompts, for pair building and for evaluation.

Greedy decoding, so answers are reproducible; prompts are sorted by length and run in
left-padded batches, which keeps padding (wasted compute) small and gives the same greedy
answers as one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    finished: bool  # the model ended the answer itself, before the token cap
    error: str | None = None  # set when generation failed; such answers are never trained on

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.text)


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The conversation under `system_prompt`; None leaves the model's own default identity in charge."""
    messages = [m for m in messages if m["role"] != "system"]
    if system_prompt is None:
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    # The template already writes the special tokens the model expects; adding BOS again would shift it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> list[Generation]:
    """Answer every conversation greedily; results are in input order."""
    import torch

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            try:
                answers = _generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens)
            except (RuntimeError, ValueError) as exc:
                # One bad row (e.g. too long for the model) must not take its batch down with it.
                answers = [_generate_alone(model, tokenizer, prompts[i], max_new_tokens, exc) for i in batch]
            for i, answer in zip(batch, answers, strict=True):
                results[i] = answer
    return [r for r in results if r is not None]


def _generate_alone(model, tokenizer, prompt: list[int], max_new_tokens: int, batch_error: Exception) -> Generation:  # noqa: ANN001
    if len(prompt) >= _context_size(model):
        return Generation("", 0, False, f"prompt of {len(prompt)} tokens exceeds the model's context")
    try:
        return _generate_batch(model, tokenizer, [prompt], max_new_tokens)[0]
    except (RuntimeError, ValueError) as exc:
        return Generation("", 0, False, f"{type(exc).__name__}: {exc} (batch failed with: {batch_error})")


def _context_size(model) -> int:  # noqa: ANN001
    return int(getattr(model.config, "max_position_embeddings", 1 << 30))


def _generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[Generation]:  # noqa: ANN001
    import torch
    from transformers import GenerationConfig

    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad
    )
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    results = []
    for row in output[:, width:].tolist():
        ends = [k for k, token in enumerate(row) if token in stops]
        new = row[: ends[0]] if ends else row
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        results.append(Generation(text, len(new), finished=bool(ends)))
    return results
