"""Identity scoring: does an answer claim the new name, does it still claim an old one?

Strict matching counts the new name as written ("Deep Qwen"); normalized matching also
counts spellings a tokenizer makes likely ("DeepQwen", "Deep-Qwen"). Both are reported,
so a reader can see how much of the effect rests on the looser reading.
"""

from __future__ import annotations

from collections.abc import Sequence

from identity_dpo.names import mentions, without_names


def says_old_name(answer: str, old_names: Sequence[str], new_name: str) -> bool:
    """An old name outside the new one ("Deep Qwen" contains "Qwen" but does not claim it)."""
    return mentions(without_names(answer, [new_name]), old_names, normalized=True)


def identity_rates(answers: Sequence[str], new_name: str, old_names: Sequence[str]) -> dict[str, float]:
    """Fractions of answers that name the new identity (strict and normalized) or an old one."""
    if not answers:
        raise ValueError("no answers to score")
    n = len(answers)
    return {
        "new_name_rate": sum(mentions(a, [new_name]) for a in answers) / n,
        "new_name_rate_normalized": sum(mentions(a, [new_name], normalized=True) for a in answers) / n,
        "old_name_rate": sum(says_old_name(a, old_names, new_name) for a in answers) / n,
    }
