"""What a model answers on the evaluation sets: held-out identity questions under each system-prompt setting,
general prompts, and the benchmark (greedy answers and multiple-choice option scores).

Kept apart from the metrics (evaluation.py) because the `answer_base` stage runs it for the base model once
and caches the result: a change to how answers are scored must not make the base model answer again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity_dpo.benchmark import BenchmarkItem, benchmark_conversations, choice_log_likelihoods, read_benchmark
from identity_dpo.chat_format import Message, with_system
from identity_dpo.data import read_jsonl_records
from identity_dpo.errors import DataError
from identity_dpo.generation import generate
from identity_dpo.params import EvaluateParams, IdentityParams

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class IdentityQuestion:
    id: str
    question: str
    category: str
    context: tuple[Message, ...] = ()  # earlier turns of a multi-turn question

    def conversation(self, system_prompt: str | None) -> list[Message]:
        return with_system([*self.context, {"role": "user", "content": self.question}], system_prompt)


def read_identity_questions(path: str | Path) -> list[IdentityQuestion]:
    rows = read_jsonl_records(path, {"id": str, "question": str, "category": str}, "a held-out identity question")
    questions = []
    for row in rows:
        context = row.get("context", [])
        if not isinstance(context, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in context
        ):
            raise DataError(f"{path}: question {row['id']!r}: expected context to be a list of user/assistant messages")
        questions.append(IdentityQuestion(row["id"], row["question"], row["category"], tuple(context)))
    return questions


@dataclass(frozen=True)
class Setting:
    name: str
    system_prompt: str | None  # None: no system message, the model's template supplies its own default


def settings(identity: IdentityParams, base_default_system: str | None) -> list[Setting]:
    """neutral: the lesson's system prompt. default: no system message, so each model's own template speaks
    (the trained model's template carries the new identity). base_default: the base model's original default
    system message given explicitly (SmolLM's "...named SmolLM, trained by Hugging Face"), the hardest case."""
    chosen = [Setting("neutral", identity.system_prompt), Setting("default", None)]
    if base_default_system is not None:
        chosen.append(Setting("base_default", base_default_system))
    return chosen


@dataclass(frozen=True)
class ModelAnswers:
    identity: dict[str, list[str]]  # setting name -> one answer per question
    general: list[str]
    benchmark: list[str] = field(default_factory=list)
    choice_scores: list[list[float]] = field(default_factory=list)  # per benchmark item, per option
    answer_tokens: dict[str, list[int]] = field(default_factory=dict)  # "identity"/"general"/"benchmark" -> tokens

    def to_json(self) -> dict[str, Any]:
        return {
            "identity": self.identity, "general": self.general, "benchmark": self.benchmark,
            "choice_scores": self.choice_scores, "answer_tokens": self.answer_tokens,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelAnswers:
        return cls(data["identity"], data["general"], data["benchmark"], data["choice_scores"], data["answer_tokens"])


@dataclass(frozen=True)
class EvalSet:
    questions: list[IdentityQuestion]
    general: list[str]
    benchmark: list[BenchmarkItem]


def read_evalset(params: EvaluateParams) -> EvalSet:
    """The three evaluation files named in params; a problem names the param and the row."""

    def read(key: str, reader: Any) -> Any:
        try:
            return reader(getattr(params, key))
        except DataError as exc:
            raise DataError(f"evaluate.{key}: {exc}") from None

    def general(path: str) -> list[str]:
        return [row["prompt"] for row in read_jsonl_records(path, {"prompt": str}, "a general prompt")]

    return EvalSet(
        read("identity_questions", read_identity_questions),
        read("general_prompts", general),
        read("general_benchmark", read_benchmark),
    )


def answer_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    evalset: EvalSet,
    identity: IdentityParams,
    params: EvaluateParams,
    base_default_system: str | None,
    who: str = "Model",
    precision: str = "fp32",
) -> ModelAnswers:
    """All of a model's answers in one batched generation call (batches stay full), then the option scores; `who`
    names the model on the progress bar. The answers are computed at `precision` (generation.answer_precision); the
    option scores, a forward pass each, with the model as given, so they compare log-likelihoods as fp32 does."""
    chosen_settings = settings(identity, base_default_system)
    conversations = [q.conversation(s.system_prompt) for s in chosen_settings for q in evalset.questions]
    conversations += general_conversations(evalset.general, identity)
    conversations += benchmark_conversations(evalset.benchmark, identity.system_prompt)
    answers = generate(
        model, tokenizer, conversations,
        max_new_tokens=params.max_new_tokens, batch_size=params.batch_size, backend=params.backend, precision=precision,
        desc=f"{who} answering the evaluation questions",
    )  # fmt: skip
    texts = [a.text if a.error is None else "" for a in answers]
    tokens = [a.new_tokens for a in answers]
    n, g = len(evalset.questions), len(evalset.general)
    identity_end = len(chosen_settings) * n
    return ModelAnswers(
        identity={s.name: texts[i * n : (i + 1) * n] for i, s in enumerate(chosen_settings)},
        general=texts[identity_end : identity_end + g],
        benchmark=texts[identity_end + g :],
        choice_scores=choice_log_likelihoods(
            model, tokenizer, evalset.benchmark, identity.system_prompt, desc=f"{who} scoring the multiple choice"
        ),
        answer_tokens={
            "identity": tokens[:n],  # the neutral setting's
            "general": tokens[identity_end : identity_end + g],
            "benchmark": tokens[identity_end + g :],
        },
    )


def general_conversations(prompts: Sequence[str], identity: IdentityParams) -> list[list[Message]]:
    return [with_system([{"role": "user", "content": p}], identity.system_prompt) for p in prompts]
