"""One row per DPO pair, so each prompt is read once for both of its answers (the answer head's packing).

TRL's DPO batch holds every pair twice: prompt + chosen in the first half of the rows, prompt +
rejected in the second, so the model computes each prompt twice. Here a pair becomes one row,
prompt + chosen + rejected, with an attention mask under which the rejected answer sees the prompt
but not the chosen answer, and position ids that start the rejected answer where the prompt ends.
Every answer token then gets the hidden state it gets in its own row (up to float rounding; the
tests check log-probs, gradients and training losses against TRL's layout), from fewer tokens
(what that saved: docs/speed-history.md).

Relies on TRL's batch layout (all chosen rows, then all rejected rows, each prompt + answer + right
padding; anything else is left as it is) and on transformers passing a 4D mask to SDPA and eager
attention as given (takes_packed_mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100  # the label of a position that is not scored (prompt, padding)


@dataclass(frozen=True)
class PackedPairs:
    input_ids: torch.Tensor  # (pairs, width): prompt, chosen, rejected, then padding
    position_ids: torch.Tensor  # (pairs, width)
    allowed: torch.Tensor  # (pairs, 1, width, width) bool: True where a query position may attend a key position
    # For each scored position of TRL's batch (labels shifted by one, in row-major order): the packed row and the
    # position in it whose hidden state predicts that label.
    source_row: torch.Tensor
    source_position: torch.Tensor

    def attention_mask(self, attention: str, dtype: torch.dtype) -> torch.Tensor:
        """The mask as the model's attention code `attention` takes a 4D mask (see takes_packed_mask)."""
        if attention == "sdpa":
            return self.allowed
        if attention == "eager":  # added to the attention scores
            return torch.zeros(self.allowed.shape, dtype=dtype).masked_fill_(~self.allowed, torch.finfo(dtype).min)
        raise ValueError(f"attention {attention!r} takes no 4D mask; check takes_packed_mask first")


def takes_packed_mask(attention: str) -> bool:
    """Whether the attention code `attention` (config._attn_implementation) takes a packed row's 4D mask.

    Flash and flex attention build their own masks from the 2D one, so they read TRL's two rows per pair.
    """
    return attention in ("sdpa", "eager")


def pack_pairs(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> PackedPairs | None:
    """A DPO batch's pairs one per row (its rows: all chosen, then all rejected; each prompt + answer + right padding).

    None when the batch is not laid out that way (an odd number of rows, a truncated or differing prompt,
    an answer with gaps): the caller then runs the batch as it is.
    """
    rows = input_ids.size(0)
    if rows % 2 or attention_mask.dim() != 2:
        return None
    spans = [_answer_span(attention_mask[row], labels[row]) for row in range(rows)]
    pairs = rows // 2
    packed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    # per pair, the packed positions whose hidden states predict its chosen (its rejected) answer's labels
    chosen_sources: list[torch.Tensor] = []
    rejected_sources: list[torch.Tensor] = []
    for pair in range(pairs):
        chosen, rejected = spans[pair], spans[pair + pairs]
        if chosen is None or rejected is None or chosen[0] != rejected[0]:
            return None
        prompt, chosen_len, rejected_len = chosen[0], chosen[1], rejected[1]
        if not torch.equal(input_ids[pair, :prompt], input_ids[pair + pairs, :prompt]):
            return None
        answers_end = prompt + chosen_len
        tokens = torch.cat([input_ids[pair, :answers_end], input_ids[pair + pairs, prompt : prompt + rejected_len]])
        positions = torch.cat([torch.arange(answers_end), torch.arange(prompt, prompt + rejected_len)])
        allowed = torch.ones(len(tokens), len(tokens), dtype=torch.bool).tril_()
        allowed[answers_end:, prompt:answers_end] = False  # the rejected answer never sees the chosen one
        packed.append((tokens, positions, allowed))
        # Position k predicts token k + 1: the last prompt position predicts both answers' first tokens.
        chosen_sources.append(torch.arange(prompt - 1, answers_end - 1))
        rejected_tail = torch.arange(answers_end, answers_end + rejected_len - 1)
        rejected_sources.append(torch.cat([torch.tensor([prompt - 1]), rejected_tail]))
    sources = chosen_sources + rejected_sources  # TRL's row order: all chosen rows, then all rejected rows
    source_rows = [torch.full((len(positions),), row % pairs) for row, positions in enumerate(sources)]
    width = max(len(tokens) for tokens, _, _ in packed)
    input_rows, position_rows, allowed_rows = [], [], []
    for tokens, positions, allowed in packed:
        missing = width - len(tokens)
        input_rows.append(torch.cat([tokens, tokens.new_zeros(missing)]))
        position_rows.append(torch.cat([positions, positions.new_zeros(missing)]))
        # a padding position attends to itself only: a query with no key at all would give NaN
        square = torch.eye(width, dtype=torch.bool)
        square[: len(tokens), : len(tokens)] = allowed
        allowed_rows.append(square)
    return PackedPairs(
        input_ids=torch.stack(input_rows).to(input_ids.device),
        position_ids=torch.stack(position_rows).to(input_ids.device),
        allowed=torch.stack(allowed_rows)[:, None].to(input_ids.device),
        source_row=torch.cat(source_rows).to(input_ids.device),
        source_position=torch.cat(sources).to(input_ids.device),
    )


def _answer_span(attention_mask: torch.Tensor, labels: torch.Tensor) -> tuple[int, int] | None:
    """(prompt length, answer length) of a row that is prompt, answer, then padding only; else None."""
    scored = (labels != IGNORE).nonzero().flatten().tolist()
    if not scored or scored[0] == 0:
        return None  # no answer, or no prompt position to predict its first token from
    start, count = scored[0], len(scored)
    if scored[-1] != start + count - 1:
        return None
    real = attention_mask.nonzero().flatten().tolist()
    if real != list(range(start + count)):
        return None
    return start, count
