"""General-ability metrics of the evaluation on a tiny model: drift and answer length."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity_dpo.evaluation import ModelAnswers, general_metrics
from identity_dpo.models import load_model
from identity_dpo.params import IdentityParams

IDENTITY = IdentityParams(old_names=["SmolLM"], new_name="Deep Qwen", system_prompt="You're a helpful assistant.")


def test_general_metrics_see_answers_that_end_early(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    prompts = ["What is the capital of France?", "Name a prime number."]
    base = ModelAnswers({}, ["Paris is the capital of France.", "Seven is a prime number."])
    shorter = ModelAnswers({}, ["Paris.", base.general[1]])
    tokens = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in (*base.general, "Paris.")]

    metrics = general_metrics(model, model, tokenizer, prompts, base, shorter, IDENTITY)

    assert metrics["answer_length_ratio"] == pytest.approx((tokens[2] + tokens[1]) / (tokens[0] + tokens[1]))
    assert metrics["answer_length_ratio"] < 1
    assert metrics["same_answer_rate"] == 0.5
    assert metrics["mean_token_kl"] == pytest.approx(0.0, abs=1e-6)  # the same model reads the same base answers
    assert metrics["tokens"] == tokens[0] + tokens[1]
