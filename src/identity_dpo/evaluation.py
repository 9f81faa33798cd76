"""Before/after evaluation: identity questions under two system-prompt settings, and general drift."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from identity_dpo.drift import answer_drift
from identity_dpo.generation import generate, with_system
from identity_dpo.names import mentions
from identity_dpo.params import EvaluateParams, IdentityParams
from identity_dpo.scoring import identity_rates, says_old_name

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Setting:
    name: str
    system_prompt: str | None  # None: no system message, the model's template supplies its default identity


def settings(identity: IdentityParams) -> list[Setting]:
    return [Setting("neutral", identity.system_prompt), Setting("default", None)]


@dataclass(frozen=True)
class ModelAnswers:
    identity: dict[str, list[str]]  # setting name -> one answer per question
    general: list[str]


def answer_all(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[str],
    general_prompts: list[str],
    identity: IdentityParams,
    params: EvaluateParams,
) -> ModelAnswers:
    """All of a model's answers in one batched generation call, so batches stay full."""
    conversations = [
        with_system([{"role": "user", "content": q}], setting.system_prompt)
        for setting in settings(identity)
        for q in questions
    ]
    conversations += general_conversations(general_prompts, identity)
    answers = generate(
        model,
        tokenizer,
        conversations,
        max_new_tokens=params.max_new_tokens,
        batch_size=params.batch_size,
        backend=params.backend,
    )
    texts = [a.text if a.error is None else "" for a in answers]
    n = len(questions)
    by_setting = {s.name: texts[i * n : (i + 1) * n] for i, s in enumerate(settings(identity))}
    return ModelAnswers(by_setting, texts[len(settings(identity)) * n :])


def general_conversations(prompts: list[str], identity: IdentityParams) -> list[list[dict[str, str]]]:
    return [with_system([{"role": "user", "content": p}], identity.system_prompt) for p in prompts]


def identity_metrics(answers: ModelAnswers, identity: IdentityParams) -> dict[str, dict[str, float]]:
    return {
        setting: identity_rates(texts, identity.new_name, identity.old_names)
        for setting, texts in answers.identity.items()
    }


def general_metrics(
    base: PreTrainedModel,
    trained: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    base_answers: ModelAnswers,
    trained_answers: ModelAnswers,
    identity: IdentityParams,
) -> dict[str, float]:
    drift = answer_drift(base, trained, tokenizer, general_conversations(prompts, identity), base_answers.general)
    same = sum(a == b for a, b in zip(base_answers.general, trained_answers.general, strict=True))
    return {
        **drift,
        "same_answer_rate": same / len(prompts),
        # drift["tokens"]: the base answers' tokens. The KL reads the base's answers, not where the trained model
        # stops: a model trained on short answers can end its general answers early (a ratio below 1) at a small KL.
        "answer_length_ratio": _answer_tokens(tokenizer, trained_answers.general) / max(drift["tokens"], 1),
    }


def _answer_tokens(tokenizer: PreTrainedTokenizerBase, answers: list[str]) -> int:
    """All answers' tokens together, counted as answer_drift counts the base's."""
    return sum(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)


RATE_LABELS = {"new_name_rate": "new name", "old_name_rate": "old name"}
DRIFT_LABELS = {
    "mean_token_kl": "mean token KL (nats)",
    "mean_logprob_change": "log-prob change (nats/token)",
    "same_answer_rate": "unchanged answers (share)",
    "answer_length_ratio": "answer length (trained / base tokens)",
}


def plot_rows(metrics: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """metrics/eval.json flattened into rows DVC can plot as bars, one bar group per experiment."""
    rates = [
        {"measure": f"{model} · {setting} · {label}", "rate": metrics["identity"][model][setting][key]}
        for model in ("trained", "base")
        for setting in metrics["identity"][model]
        for key, label in RATE_LABELS.items()
    ]
    drift = [{"measure": label, "value": metrics["general"][key]} for key, label in DRIFT_LABELS.items()]
    return rates, drift


def answer_records(
    questions: list[str], general_prompts: list[str], base: ModelAnswers, trained: ModelAnswers
) -> list[dict[str, str]]:
    """Every answer of both models, one record per question and setting, for diffing runs."""
    records = [
        {"kind": "identity", "setting": setting, "question": q, "base": b, "trained": t}
        for setting in base.identity
        for q, b, t in zip(questions, base.identity[setting], trained.identity[setting], strict=True)
    ]
    records += [
        {"kind": "general", "prompt": p, "base": b, "trained": t}
        for p, b, t in zip(general_prompts, base.general, trained.general, strict=True)
    ]
    return records


def report_markdown(
    metrics: dict[str, Any],
    questions: list[str],
    general_prompts: list[str],
    base: ModelAnswers,
    trained: ModelAnswers,
    identity: IdentityParams,
) -> str:
    """A human-readable before/after report: the rates, then every answer side by side."""
    lines = [
        f"# Identity evaluation: {identity.new_name!r} replacing {', '.join(identity.old_names)}",
        "",
        f"{len(questions)} held-out identity questions, {len(general_prompts)} general prompts. "
        "Settings: `neutral` = system prompt "
        f"{identity.system_prompt!r}; `default` = no system message (the model's own default identity).",
        "",
        "| model | setting | new name (strict) | new name (normalized) | old name |",
        "|---|---|---|---|---|",
    ]
    for model in ("base", "trained"):
        for setting, rates in metrics["identity"][model].items():
            lines.append(
                f"| {model} | {setting} | {rates['new_name_rate']:.0%} | "
                f"{rates['new_name_rate_normalized']:.0%} | {rates['old_name_rate']:.0%} |"
            )
    general = metrics["general"]
    lines += [
        "",
        f"General drift: mean per-token KL(base || trained) {general['mean_token_kl']:.4f} nats, "
        f"mean log-prob change {general['mean_logprob_change']:+.4f} nats/token on the base model's answers "
        f"({general['tokens']} tokens); {general['same_answer_rate']:.0%} of general answers unchanged; the trained "
        f"model's general answers are {general['answer_length_ratio']:.2f}x as long as the base model's (tokens).",
    ]
    for setting in base.identity:
        lines += ["", f"## Identity answers, setting `{setting}`", ""]
        for q, before, after in zip(questions, base.identity[setting], trained.identity[setting], strict=True):
            mark = _mark(after, identity)
            lines += [f"**{q}** {mark}", "", f"- base: {_quote(before)}", f"- trained: {_quote(after)}", ""]
    lines += ["## General answers (setting `neutral`)", ""]
    for prompt, before, after in zip(general_prompts, base.general, trained.general, strict=True):
        lines += [f"**{prompt}**", "", f"- base: {_quote(before)}", f"- trained: {_quote(after)}", ""]
    return "\n".join(lines).rstrip() + "\n"


def _mark(answer: str, identity: IdentityParams) -> str:
    if mentions(answer, [identity.new_name]):
        return "(new name)"
    if mentions(answer, [identity.new_name], normalized=True):
        return "(new name, normalized)"
    if says_old_name(answer, identity.old_names, identity.new_name):
        return "(old name)"
    return "(no name)"


def _quote(text: str) -> str:
    return " ".join(text.split()) or "_(empty)_"
