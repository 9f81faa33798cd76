"""Chat rendering: conversations as the tokens the model reads, the same for training, pairs and evaluation.

Apart from decoding (generation.py) so that the train stage, which only renders chats, does not depend on
the decoding loop: a change to how answers are decoded does not retrain the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The conversation under `system_prompt`; None leaves the model's own default identity in charge."""
    messages = [m for m in messages if m["role"] != "system"]
    if system_prompt is None:
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    """The tokens the model reads before answering `messages`."""
    return render_tokens(tokenizer, messages, add_generation_prompt=True)


def render_tokens(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], *, add_generation_prompt: bool = False
) -> list[int]:
    """The tokens of a conversation as the chat template writes it (a full one, as trained on, by default)."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False)
    # The template already writes the special tokens the model expects; adding BOS again would shift it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]
