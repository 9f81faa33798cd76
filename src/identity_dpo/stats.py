"""Paired comparisons of two models on the same questions: is the trained model's score really different?

Both tests take one 0/1 outcome per question for each model, in the same order. McNemar's exact test
looks only at the discordant questions (right before and wrong after, or the reverse); the paired
bootstrap resamples questions to give a 95% interval for the difference in accuracy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def mcnemar_exact_p(before: Sequence[bool], after: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value: under no change, each discordant question goes either way with p = 1/2."""
    _check_paired(before, after)
    lost = sum(b and not a for b, a in zip(before, after, strict=True))
    gained = sum(a and not b for b, a in zip(before, after, strict=True))
    discordant = lost + gained
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(lost, gained) + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def paired_bootstrap_interval(
    before: Sequence[bool], after: Sequence[bool], samples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of mean(after) - mean(before), resampling questions with replacement."""
    _check_paired(before, after)
    diffs = [int(a) - int(b) for b, a in zip(before, after, strict=True)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    low = means[int(math.floor((1 - level) / 2 * (samples - 1)))]
    high = means[int(math.ceil((1 + level) / 2 * (samples - 1)))]
    return low, high


def paired_comparison(before: Sequence[bool], after: Sequence[bool], samples: int, seed: int) -> dict[str, float]:
    """Both accuracies, their difference, its 95% interval and McNemar's p (stable keys for `dvc metrics diff`)."""
    _check_paired(before, after)
    low, high = paired_bootstrap_interval(before, after, samples, seed)
    n = len(before)
    return {
        "base": sum(before) / n,
        "trained": sum(after) / n,
        "difference": (sum(after) - sum(before)) / n,
        "difference_ci_low": low,
        "difference_ci_high": high,
        "mcnemar_p": mcnemar_exact_p(before, after),
        "lost": sum(b and not a for b, a in zip(before, after, strict=True)),
        "gained": sum(a and not b for b, a in zip(before, after, strict=True)),
        "questions": n,
    }


def _check_paired(before: Sequence[bool], after: Sequence[bool]) -> None:
    if len(before) != len(after):
        raise ValueError(f"paired outcomes differ in length: {len(before)} vs {len(after)}")
    if not before:
        raise ValueError("no paired outcomes to compare")
