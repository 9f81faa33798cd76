"""Evaluation metrics: identity per category and creator, drift, answer length, name leak, the benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from identity_dpo import drift
from identity_dpo.answers import IdentityQuestion, ModelAnswers
from identity_dpo.benchmark import BenchmarkItem
from identity_dpo.chat_format import Message, render_prompt, with_system
from identity_dpo.drift import answer_drift
from identity_dpo.evaluation import answer_variety, benchmark_metrics, general_metrics, identity_metrics, name_leak_rate
from identity_dpo.models import load_model
from identity_dpo.params import IdentityParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


def drift_one_answer_at_a_time(
    base: PreTrainedModel,
    trained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    answers: Sequence[str],
) -> tuple[float, float, int]:
    """The plain reading: each prompt + answer alone, the whole vocabulary's log-probs at every answer position."""
    import torch

    kl = change = 0.0
    tokens = 0
    for messages, answer in zip(conversations, answers, strict=True):
        prompt = render_prompt(tokenizer, messages)
        completion = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not completion:
            continue
        ids = torch.tensor([prompt + completion])
        positions = slice(len(prompt) - 1, ids.shape[1] - 1)
        with torch.inference_mode():
            base_logp = torch.log_softmax(base(ids).logits[0, positions].float(), dim=-1)
            trained_logp = torch.log_softmax(trained(ids).logits[0, positions].float(), dim=-1)
        target = torch.tensor(completion).unsqueeze(1)
        kl += (base_logp.exp() * (base_logp - trained_logp)).sum().item()
        change += (trained_logp.gather(1, target) - base_logp.gather(1, target)).sum().item()
        tokens += len(completion)
    return kl / tokens, change / tokens, tokens


def test_batched_drift_equals_reading_each_answer_alone(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    base, tokenizer = load_model(tiny_model_dir)
    trained, _ = load_model(tiny_model_dir)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05, alpha=1.0)
    monkeypatch.setattr(drift, "DRIFT_BATCH", 3)  # two batches, the second one short
    conversations = [
        with_system([{"role": "user", "content": prompt}], IDENTITY.system_prompt)
        for prompt in ("Hi", "Name three rivers in Europe and say which one is longest.", "Why?", "", "Count to five")
    ]
    answers = [
        "Hello there, how can I help?",
        "The Danube, the Rhine and the Volga; the Volga is longest.",
        "",
        "Nothing was asked.",
        "One, two, three, four, five.",
    ]  # an empty answer is skipped

    got = answer_drift(base, trained, tokenizer, conversations, answers)

    kl, change, tokens = drift_one_answer_at_a_time(base, trained, tokenizer, conversations, answers)
    assert got["tokens"] == tokens
    assert kl > 1e-3  # the two models differ, so the comparison means something
    assert got["mean_token_kl"] == pytest.approx(kl, rel=1e-4)
    assert got["mean_logprob_change"] == pytest.approx(change, rel=1e-4)


QUESTIONS = [
    IdentityQuestion("q1", "What is your name?", "name"),
    IdentityQuestion("q2", "Who made you?", "maker"),
    IdentityQuestion("q3", "Who built you?", "maker"),
    IdentityQuestion(
        "q4",
        "And you are?",
        "multi_turn",
        ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}),
    ),
]


def test_identity_metrics_per_category_and_creator() -> None:
    answers = ModelAnswers(
        {"neutral": ["I'm Deep Qwen.", "The identity-dpo project made me.", "I'm DeepQwen, made by Hugging Face.",
                     "I'm SmolLM."]},
        [],
    )  # fmt: skip
    metrics = identity_metrics(answers, QUESTIONS, IDENTITY)
    assert metrics["neutral_by_category"] == {"maker": 0.0, "multi_turn": 0.0, "name": 1.0}  # strict: DeepQwen is not
    assert metrics["neutral"]["creator_rate_on_maker_questions"] == 0.5
    assert metrics["neutral"]["new_name_rate_normalized"] == 0.5
    assert metrics["neutral"]["old_name_rate"] == 0.25


def test_a_multi_turn_question_keeps_its_context() -> None:
    conversation = QUESTIONS[3].conversation("Be brief.")
    assert [m["role"] for m in conversation] == ["system", "user", "assistant", "user"]
    assert QUESTIONS[3].conversation(None)[0] == {"role": "user", "content": "Hi"}


def test_name_leak_and_answer_variety() -> None:
    assert name_leak_rate(["Paris.", "I'm deep-qwen. Paris.", "Rome", "Deep Qwen says 4"], "Deep Qwen") == 0.5
    assert name_leak_rate([], "Deep Qwen") == 0.0
    variety = answer_variety(["I'm Deep Qwen."] * 3 + ["I'm Deep Qwen, made by X."], [5, 5, 5, 9], [10, 20])
    assert variety["distinct_share"] == 0.5
    assert variety["mean_tokens"] == 6.0 and variety["chosen_mean_tokens"] == 15.0
    assert variety["length_vs_chosen"] == pytest.approx(0.4)


def test_benchmark_metrics_pair_the_same_questions() -> None:
    items = [
        BenchmarkItem("b1", "fact", "Capital of Japan?", "Tokyo", (), ("Kyoto", "Osaka", "Seoul")),
        BenchmarkItem("b2", "arithmetic", "2+2?", "4", ("four",), ("5", "3", "22")),
    ]
    base = ModelAnswers({}, [], ["Tokyo.", "It is 4."], [[-1, -2, -3, -4], [-5, -1, -9, -9]], {"benchmark": [4, 6]})
    trained = ModelAnswers({}, [], ["Kyoto.", "four"], [[-1, -2, -3, -4], [-1, -5, -9, -9]], {"benchmark": [3, 3]})
    metrics = benchmark_metrics(items, base, trained, samples=200, seed=0)
    assert metrics["generative"]["base"] == 1.0 and metrics["generative"]["trained"] == 0.5
    assert metrics["generative"]["lost"] == 1 and metrics["generative"]["gained"] == 0
    assert metrics["choice_acc"]["base"] == 0.5 and metrics["choice_acc"]["trained"] == 1.0
    assert metrics["answer_length_ratio"] == 0.6
    assert metrics["generative_by_category"]["fact"] == {"base": 1.0, "trained": 0.0, "questions": 1}
