"""The general-ability benchmark: scoring edge cases, the multiple-choice packing, and the paired statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from identity_dpo import benchmark
from identity_dpo.benchmark import (
    BenchmarkItem,
    choice_log_likelihoods,
    generative_correct,
    multiple_choice_outcomes,
    read_benchmark,
)
from identity_dpo.chat_format import render_prompt
from identity_dpo.errors import DataError
from identity_dpo.models import load_model
from identity_dpo.stats import mcnemar_exact_p, paired_bootstrap_interval, paired_comparison

CAPITAL = BenchmarkItem("gb-1", "fact", "What is the capital of Japan?", "Tokyo", (), ("Kyoto", "Osaka", "Seoul"))
EIGHT = BenchmarkItem("gb-2", "arithmetic", "What is 5 plus 3?", "8", ("eight",), ("9", "7", "18"))


@pytest.mark.parametrize(
    ("answer", "item", "right"),
    [
        ("The capital of Japan is Tokyo.", CAPITAL, True),
        ("tokyo", CAPITAL, True),  # case does not matter
        ("Tokyo, not Kyoto.", CAPITAL, False),  # a listed wrong option is named: no credit for hedging
        ("Osaka is the capital.", CAPITAL, False),
        ("Tokyoites live there.", CAPITAL, False),  # whole words only
        ("", CAPITAL, False),
        ("5 plus 3 is 8.", EIGHT, True),
        ("It is eight.", EIGHT, True),  # an alias
        ("The answer is 18.", EIGHT, False),  # "8" inside "18" is not "8", and 18 is wrong
        ("8 or 9", EIGHT, False),
    ],
)
def test_generative_scoring(answer: str, item: BenchmarkItem, right: bool) -> None:
    assert generative_correct(answer, item) is right


def test_multiple_choice_takes_the_best_option_and_a_tie_is_wrong() -> None:
    items = [CAPITAL, CAPITAL, EIGHT]
    scores = [[-1.0, -2.0, -3.0, -4.0], [-2.0, -2.0, -3.0, -4.0], [-3.0, -2.0, -9.0, -9.0]]
    outcomes = multiple_choice_outcomes(items, scores)
    assert outcomes["acc"] == [True, False, False]
    # per character: "8" (1 char) at -3 is -3/char; "9" at -2 is -2/char: still wrong. Tokyo -1/5 beats Kyoto -2/5.
    assert outcomes["acc_norm"] == [True, False, False]
    long_wins = multiple_choice_outcomes([CAPITAL], [[-5.0, -4.0, -9.0, -9.0]])  # Tokyo -1.0/char, Kyoto -0.8/char
    assert long_wins == {"acc": [False], "acc_norm": [False]}
    normalized = multiple_choice_outcomes([EIGHT], [[-2.0, -1.9, -9.0, -9.0]])
    assert normalized["acc"] == [False]


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_benchmark_refuses_options_scoring_cannot_tell_apart(tmp_path: Path) -> None:
    row = {"id": "gb-1", "category": "fact", "question": "Capital of Texas?", "answer": "Austin", "aliases": [],
           "wrong": ["Dallas", "Austin, Texas", "Houston"]}  # fmt: skip
    with pytest.raises(DataError, match=r"gb-1.*'Austin, Texas' overlaps the answer"):
        read_benchmark(_write(tmp_path, [row]))
    with pytest.raises(DataError, match="at least one wrong option"):
        read_benchmark(_write(tmp_path, [{**row, "wrong": []}]))
    with pytest.raises(DataError, match="wrong to be a list of non-empty strings"):
        read_benchmark(_write(tmp_path, [{**row, "wrong": ["Dallas", ""]}]))
    good = read_benchmark(_write(tmp_path, [{**row, "wrong": ["Dallas", "Houston", "El Paso"]}]))
    assert good[0].choices == ("Austin", "Dallas", "Houston", "El Paso")


def test_packed_option_scores_equal_one_row_per_option(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each option is scored as if it followed the prompt alone, though all share one packed row."""
    import torch

    model, tokenizer = load_model(tiny_model_dir)
    monkeypatch.setattr(benchmark, "CHOICE_BATCH", 2)  # two batches, the second one short
    items = [
        CAPITAL,
        EIGHT,
        BenchmarkItem("gb-3", "word", "Opposite of hot?", "cold", (), ("warm", "boiling hot day", "x")),
    ]

    packed = choice_log_likelihoods(model, tokenizer, items, "You're a helpful assistant.")

    for item, scores in zip(items, packed, strict=True):
        messages = [
            {"role": "system", "content": "You're a helpful assistant."},
            {"role": "user", "content": item.question},
        ]
        prompt = render_prompt(tokenizer, messages)
        for choice, got in zip(item.choices, scores, strict=True):
            option = tokenizer(choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt + option])
            with torch.inference_mode():
                log_probs = torch.log_softmax(model(ids).logits[0, len(prompt) - 1 : -1].float(), dim=-1)
            alone = log_probs.gather(1, torch.tensor(option).unsqueeze(1)).sum().item()
            assert got == pytest.approx(alone, abs=1e-3)
    assert len({round(s, 3) for s in packed[0]}) > 1  # the options really differ


def test_mcnemar_exact_matches_the_binomial_tail() -> None:
    assert mcnemar_exact_p([True] * 5, [True] * 5) == 1.0  # no discordant question
    # 5 lost, 0 gained: P = 2 * (1/2)^5
    assert mcnemar_exact_p([True] * 5 + [False] * 3, [False] * 8) == pytest.approx(2 / 32)
    # 6 lost, 2 gained: 2 * sum_{k<=2} C(8,k) / 2^8
    before = [True] * 6 + [False] * 2 + [True] * 10
    after = [False] * 6 + [True] * 2 + [True] * 10
    assert mcnemar_exact_p(before, after) == pytest.approx(2 * (1 + 8 + 28) / 256)
    assert mcnemar_exact_p(after, before) == mcnemar_exact_p(before, after)  # two-sided
    assert mcnemar_exact_p([True, False], [False, True]) == 1.0  # capped at 1


def test_paired_bootstrap_interval_is_seeded_and_covers_the_difference() -> None:
    before = [True] * 30 + [False] * 20
    after = [True] * 25 + [False] * 5 + [True] * 5 + [False] * 15  # 30 -> 30 right: 5 lost, 5 gained
    low, high = paired_bootstrap_interval(before, after, samples=2000, seed=0)
    assert low < 0 < high
    assert (low, high) == paired_bootstrap_interval(before, after, samples=2000, seed=0)
    assert paired_bootstrap_interval(before, before, samples=500, seed=1) == (0.0, 0.0)
    worse = [False] * 50
    low, high = paired_bootstrap_interval(before, worse, samples=2000, seed=0)
    assert high < 0 and math.isclose(low, -0.6, abs_tol=0.2)


def test_paired_comparison_keys_and_errors() -> None:
    result = paired_comparison([True, True, False, False], [True, False, True, True], samples=500, seed=0)
    assert result["base"] == 0.5 and result["trained"] == 0.75 and result["difference"] == 0.25
    assert result["lost"] == 1 and result["gained"] == 2 and result["questions"] == 4
    assert result["difference_ci_low"] <= 0.25 <= result["difference_ci_high"]
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison([True], [True, False], samples=100, seed=0)
    with pytest.raises(ValueError, match="no paired outcomes"):
        paired_comparison([], [], samples=100, seed=0)
