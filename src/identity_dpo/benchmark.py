"""The general-ability benchmark: short questions with one checkable answer, scored two ways.

Generative: the model's greedy answer counts as right when it names the answer (or an alias) and none
of the listed wrong options. Multiple choice: the model's log-likelihood of each option as the start of
its answer, as lm-evaluation-harness scores multiple choice: `acc` takes the option with the highest
summed log-probability, `acc_norm` divides it by the option's length in characters first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity_dpo.chat_format import Message, render_prompt
from identity_dpo.data import read_jsonl_records
from identity_dpo.errors import DataError
from identity_dpo.names import mentions
from identity_dpo.progress import progress_bar

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Items read per forward pass of the multiple-choice scoring: each is one packed row (prompt + all options).
CHOICE_BATCH = 32


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    category: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    wrong: tuple[str, ...]

    @property
    def choices(self) -> tuple[str, ...]:
        """The multiple-choice options; the right one first."""
        return (self.answer, *self.wrong)


def read_benchmark(path: str | Path) -> list[BenchmarkItem]:
    """The benchmark file's items; a malformed row is a DataError naming it."""
    rows = read_jsonl_records(
        path,
        {"id": str, "category": str, "question": str, "answer": str, "aliases": list, "wrong": list},
        "a benchmark question",
    )
    items = []
    for row in rows:
        where = f"{path}: item {row['id']!r}"
        for key in ("aliases", "wrong"):
            if not all(isinstance(option, str) and option.strip() for option in row[key]):
                raise DataError(f"{where}: expected {key} to be a list of non-empty strings")
        if not row["wrong"]:
            raise DataError(f"{where}: expected at least one wrong option")
        if not row["answer"].strip() or not row["question"].strip():
            raise DataError(f"{where}: expected a non-empty question and answer")
        right = [row["answer"], *row["aliases"]]
        clash = [w for w in row["wrong"] if mentions(w, right) or any(mentions(r, [w]) for r in right)]
        if clash:
            raise DataError(
                f"{where}: wrong option {clash[0]!r} overlaps the answer; scoring could not tell them apart"
            )
        items.append(
            BenchmarkItem(row["id"], row["category"], row["question"], row["answer"],
                          tuple(row["aliases"]), tuple(row["wrong"]))
        )  # fmt: skip
    if not items:
        raise DataError(f"{path}: no benchmark questions")
    return items


def generative_correct(answer: str, item: BenchmarkItem) -> bool:
    """Names the right answer (any accepted spelling, as a whole word) and none of the wrong options."""
    return mentions(answer, [item.answer, *item.aliases]) and not mentions(answer, list(item.wrong))


def benchmark_conversations(items: Sequence[BenchmarkItem], system_prompt: str | None) -> list[list[Message]]:
    conversation: list[Message] = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return [[*conversation, {"role": "user", "content": item.question}] for item in items]


def choice_log_likelihoods(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[BenchmarkItem],
    system_prompt: str | None,
    desc: str = "Scoring multiple choice",
) -> list[list[float]]:
    """Per item, the summed log-probability of each option (right one first) as the start of the model's answer; a
    progress bar titled `desc` counts the items."""
    import torch

    rows = []
    for messages, item in zip(benchmark_conversations(items, system_prompt), items, strict=True):
        options = [tokenizer(choice, add_special_tokens=False)["input_ids"] for choice in item.choices]
        rows.append((render_prompt(tokenizer, messages), options))
    scores: list[list[float]] = []
    model.eval()
    with torch.inference_mode(), progress_bar(len(rows), desc, unit="question") as bar:
        for start in range(0, len(rows), CHOICE_BATCH):
            scores += _score_packed(model, rows[start : start + CHOICE_BATCH], tokenizer.pad_token_id or 0)
            bar.update(len(scores) - bar.n)
    return scores


def multiple_choice_outcomes(
    items: Sequence[BenchmarkItem], scores: Sequence[Sequence[float]]
) -> dict[str, list[bool]]:
    """Per item, whether the right option wins: by summed log-probability, and per character (acc_norm)."""
    acc, acc_norm = [], []
    for item, item_scores in zip(items, scores, strict=True):
        per_char = [score / max(len(choice), 1) for score, choice in zip(item_scores, item.choices, strict=True)]
        acc.append(_wins(item_scores))
        acc_norm.append(_wins(per_char))
    return {"acc": acc, "acc_norm": acc_norm}


def _wins(scores: Sequence[float]) -> bool:
    """The right option (index 0) strictly beats every other: a tie is not a right answer."""
    return all(scores[0] > other for other in scores[1:])


def _score_packed(model: Any, rows: Sequence[tuple[list[int], list[list[int]]]], pad: int) -> list[list[float]]:
    """One packed row per item: prompt, then every option, each option seeing the prompt and itself only.

    Each option's tokens get the positions they have right after the prompt, so they are scored as if alone
    (the tests check this against one row per option), and the prompt is read once instead of once per option.
    """
    import torch

    packed = [_pack(prompt, options) for prompt, options in rows]
    width = max(len(tokens) for tokens, _, _, _ in packed)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # padding attends to itself: no NaN rows
    for row, (tokens, positions, mask, _) in enumerate(packed):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        position_ids[row, : len(tokens)] = torch.tensor(positions)
        allowed[row, : len(tokens), : len(tokens)] = mask
    attention = model.config._attn_implementation
    if attention == "sdpa":
        mask_4d = allowed[:, None]
    else:  # eager and others take an additive mask
        mask_4d = torch.zeros(allowed.shape, dtype=model.dtype).masked_fill_(~allowed, torch.finfo(model.dtype).min)
        mask_4d = mask_4d[:, None]
    hidden = model.base_model(
        input_ids=input_ids, attention_mask=mask_4d, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    results = []
    for row, (_, _, _, options) in enumerate(packed):
        per_option = []
        for predictors, targets in options:
            logits = model.get_output_embeddings()(hidden[row, predictors]).float()
            log_probs = torch.log_softmax(logits, dim=-1)
            per_option.append(log_probs.gather(1, torch.tensor(targets).unsqueeze(1)).sum().item())
        results.append(per_option)
    return results


def _pack(
    prompt: list[int], options: list[list[int]]
) -> tuple[list[int], list[int], Any, list[tuple[list[int], list[int]]]]:
    """Tokens, position ids, the attention mask and, per option, (predicting positions, target tokens)."""
    import torch

    tokens = list(prompt)
    positions = list(range(len(prompt)))
    spans = []
    scored = []
    for option in options:
        start = len(tokens)
        tokens += option
        positions += range(len(prompt), len(prompt) + len(option))
        spans.append((start, len(tokens)))
        # The prompt's last position predicts the option's first token; each option token predicts the next.
        scored.append(([len(prompt) - 1, *range(start, start + len(option) - 1)], option))
    mask = torch.ones(len(tokens), len(tokens), dtype=torch.bool).tril_()
    for start, end in spans:
        mask[start:end, len(prompt) : start] = False  # an option never sees the options before it
    return tokens, positions, mask, scored
