"""Before/after evaluation metrics: identity under three system-prompt settings, general drift, the benchmark.

The answers themselves come from answers.py: the base model's once, from the `answer_base` stage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from identity_dpo.answers import EvalSet, IdentityQuestion, ModelAnswers, general_conversations
from identity_dpo.benchmark import BenchmarkItem, generative_correct, multiple_choice_outcomes
from identity_dpo.drift import answer_drift
from identity_dpo.names import creator_core, mentions
from identity_dpo.params import IdentityParams
from identity_dpo.scoring import identity_rates, says_old_name
from identity_dpo.stats import paired_comparison

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


# --- identity ---------------------------------------------------------------------------------


def identity_metrics(
    answers: ModelAnswers, questions: Sequence[IdentityQuestion], identity: IdentityParams
) -> dict[str, Any]:
    """Rates per setting, the new-name rate per question category, and how often maker questions name the creator."""
    metrics: dict[str, Any] = {}
    for setting, texts in answers.identity.items():
        rates = identity_rates(texts, identity.new_name, identity.old_names)
        rates["creator_rate_on_maker_questions"] = creator_rate(texts, questions, identity.creator)
        metrics[setting] = rates
        metrics[f"{setting}_by_category"] = category_rates(texts, questions, identity.new_name)
    return metrics


def category_rates(texts: Sequence[str], questions: Sequence[IdentityQuestion], new_name: str) -> dict[str, float]:
    """The (strict) new-name rate within each question category."""
    asked: Counter[str] = Counter()
    named: Counter[str] = Counter()
    for text, question in zip(texts, questions, strict=True):
        asked[question.category] += 1
        named[question.category] += mentions(text, [new_name])
    return {category: named[category] / asked[category] for category in sorted(asked)}


def creator_rate(texts: Sequence[str], questions: Sequence[IdentityQuestion], creator: str) -> float:
    maker = [text for text, q in zip(texts, questions, strict=True) if q.category == "maker"]
    if not maker:
        return 0.0
    return sum(mentions(text, [creator_core(creator)], normalized=True) for text in maker) / len(maker)


def answer_variety(texts: Sequence[str], tokens: Sequence[int], chosen_tokens: Sequence[int]) -> dict[str, float]:
    """Whether identity answers still answer the question asked instead of collapsing to one canned line."""
    return {
        "distinct_share": len(set(texts)) / max(len(texts), 1),
        "mean_tokens": sum(tokens) / max(len(tokens), 1),
        "chosen_mean_tokens": sum(chosen_tokens) / max(len(chosen_tokens), 1),
        "length_vs_chosen": (sum(tokens) / max(len(tokens), 1))
        / max(sum(chosen_tokens) / max(len(chosen_tokens), 1), 1e-9),
    }


# --- general ability --------------------------------------------------------------------------


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
    everything_general = [*trained_answers.general, *trained_answers.benchmark]
    base_general = [*base_answers.general, *base_answers.benchmark]
    return {
        **drift,
        "same_answer_rate": same / len(prompts),
        # drift["tokens"]: the base answers' tokens. The KL reads the base's answers, not where the trained model
        # stops: a model trained on short answers can end its general answers early (a ratio below 1) at a small KL.
        "answer_length_ratio": answer_tokens(tokenizer, trained_answers.general) / max(drift["tokens"], 1),
        # Share of general answers (prompts and benchmark) that bring up the new name unasked.
        "name_leak_rate": name_leak_rate(everything_general, identity.new_name),
        "base_name_leak_rate": name_leak_rate(base_general, identity.new_name),
    }


def name_leak_rate(texts: Sequence[str], new_name: str) -> float:
    return sum(mentions(t, [new_name], normalized=True) for t in texts) / max(len(texts), 1)


def answer_tokens(tokenizer: PreTrainedTokenizerBase, answers: list[str]) -> int:
    """All answers' tokens together, counted as answer_drift counts the base's."""
    return sum(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)


def benchmark_metrics(
    items: Sequence[BenchmarkItem], base: ModelAnswers, trained: ModelAnswers, samples: int, seed: int
) -> dict[str, Any]:
    """Generative and multiple-choice accuracy, base vs trained, paired on the same questions."""
    before = [generative_correct(a, item) for a, item in zip(base.benchmark, items, strict=True)]
    after = [generative_correct(a, item) for a, item in zip(trained.benchmark, items, strict=True)]
    choice_before = multiple_choice_outcomes(items, base.choice_scores)
    choice_after = multiple_choice_outcomes(items, trained.choice_scores)
    base_tokens, trained_tokens = sum(base.answer_tokens["benchmark"]), sum(trained.answer_tokens["benchmark"])
    by_category: dict[str, dict[str, float]] = {}
    for category in sorted({item.category for item in items}):
        picked = [i for i, item in enumerate(items) if item.category == category]
        by_category[category] = {
            "base": sum(before[i] for i in picked) / len(picked),
            "trained": sum(after[i] for i in picked) / len(picked),
            "questions": len(picked),
        }
    return {
        "generative": paired_comparison(before, after, samples, seed),
        "choice_acc": paired_comparison(choice_before["acc"], choice_after["acc"], samples, seed),
        "choice_acc_norm": paired_comparison(choice_before["acc_norm"], choice_after["acc_norm"], samples, seed),
        "answer_length_ratio": trained_tokens / max(base_tokens, 1),
        "generative_by_category": by_category,
    }


# --- outputs ----------------------------------------------------------------------------------

RATE_LABELS = {"new_name_rate": "new name", "old_name_rate": "old name"}
DRIFT_LABELS = {
    "mean_token_kl": "mean token KL (nats)",
    "same_answer_rate": "unchanged answers (share)",
    "answer_length_ratio": "answer length (trained / base tokens)",
    "name_leak_rate": "new name in general answers (share)",
}


def plot_rows(metrics: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """metrics/eval.json flattened into rows DVC can plot as bars, one bar group per experiment (shares only)."""
    rates = [
        {"measure": f"{model} · {setting} · {label}", "rate": metrics["identity"][model][setting][key]}
        for model in ("trained", "base")
        for setting in metrics["identity"][model]
        if not setting.endswith("_by_category")
        for key, label in RATE_LABELS.items()
    ]
    general = [{"measure": label, "value": metrics["general"][key]} for key, label in DRIFT_LABELS.items()]
    bench = metrics["benchmark"]
    general += [
        {"measure": f"benchmark {kind} accuracy · {model}", "value": bench[kind][model]}
        for kind in ("generative", "choice_acc_norm")
        for model in ("base", "trained")
    ]
    return rates, general


def answer_records(
    questions: Sequence[IdentityQuestion],
    general_prompts: Sequence[str],
    items: Sequence[BenchmarkItem],
    base: ModelAnswers,
    trained: ModelAnswers,
) -> list[dict[str, Any]]:
    """Every answer of both models, one record per question and setting, for diffing runs."""
    records: list[dict[str, Any]] = [
        {"kind": "identity", "setting": setting, "id": q.id, "category": q.category, "question": q.question,
         "base": b, "trained": t}
        for setting in trained.identity
        for q, b, t in zip(questions, base.identity[setting], trained.identity[setting], strict=True)
    ]  # fmt: skip
    records += [
        {"kind": "general", "prompt": p, "base": b, "trained": t}
        for p, b, t in zip(general_prompts, base.general, trained.general, strict=True)
    ]
    records += [
        {"kind": "benchmark", "id": item.id, "question": item.question, "answer": item.answer,
         "base": b, "trained": t,
         "base_right": generative_correct(b, item), "trained_right": generative_correct(t, item)}
        for item, b, t in zip(items, base.benchmark, trained.benchmark, strict=True)
    ]  # fmt: skip
    return records


def report_markdown(
    metrics: dict[str, Any],
    evalset: EvalSet,
    base: ModelAnswers,
    trained: ModelAnswers,
    identity: IdentityParams,
    base_default_system: str | None,
) -> str:
    """A human-readable before/after report: the rates, then every answer side by side."""
    questions = evalset.questions
    lines = [
        f"# Identity evaluation: {identity.new_name!r} replacing {', '.join(identity.old_names)}",
        "",
        f"{len(questions)} held-out identity questions, {len(evalset.general)} general prompts, "
        f"{len(evalset.benchmark)} benchmark questions. Settings: `neutral` = system prompt "
        f"{identity.system_prompt!r}; `default` = no system message (each model's own template default); "
        f"`base_default` = the base model's original default system message {base_default_system!r}.",
        "",
        "| model | setting | new name (strict) | new name (normalized) | old name | creator on maker questions |",
        "|---|---|---|---|---|---|",
    ]
    for model in ("base", "trained"):
        for setting, rates in metrics["identity"][model].items():
            if setting.endswith("_by_category"):
                continue
            lines.append(
                f"| {model} | {setting} | {rates['new_name_rate']:.1%} | {rates['new_name_rate_normalized']:.1%} | "
                f"{rates['old_name_rate']:.1%} | {rates['creator_rate_on_maker_questions']:.0%} |"
            )
    categories = metrics["identity"]["trained"]["neutral_by_category"]
    lines += ["", "New-name rate by question category (setting `neutral`):", "",
              "| model | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]  # fmt: skip
    for model in ("base", "trained"):
        row = metrics["identity"][model]["neutral_by_category"]
        lines.append(f"| {model} | " + " | ".join(f"{row[c]:.0%}" for c in categories) + " |")
    variety = metrics["identity"]["answers"]
    lines += [
        "",
        f"Trained identity answers (neutral): {variety['distinct_share']:.0%} distinct, {variety['mean_tokens']:.1f} "
        f"tokens on average against {variety['chosen_mean_tokens']:.1f} for the chosen answers it was trained on.",
    ]
    bench, general = metrics["benchmark"], metrics["general"]
    lines += ["", "## General ability", "", "| measure | base | trained | difference (95% interval) | McNemar p |",
              "|---|---|---|---|---|"]  # fmt: skip
    for key, label in (("generative", "benchmark, generative"), ("choice_acc", "benchmark, multiple choice"),
                       ("choice_acc_norm", "benchmark, multiple choice (length-normalized)")):  # fmt: skip
        row = bench[key]
        lines.append(
            f"| {label} | {row['base']:.1%} | {row['trained']:.1%} | {row['difference']:+.1%} "
            f"({row['difference_ci_low']:+.1%} to {row['difference_ci_high']:+.1%}) | {row['mcnemar_p']:.3f} |"
        )
    lines += [
        "",
        f"Drift on the general prompts: mean per-token KL(base || trained) {general['mean_token_kl']:.4f} nats, "
        f"mean log-prob change {general['mean_logprob_change']:+.4f} nats/token on the base model's answers "
        f"({general['tokens']} tokens); {general['same_answer_rate']:.0%} of general answers unchanged. Answer length "
        f"(trained / base tokens): {general['answer_length_ratio']:.2f}x on the general prompts, "
        f"{bench['answer_length_ratio']:.2f}x on the benchmark. The new name appears in "
        f"{general['name_leak_rate']:.1%} of the trained model's general answers ({general['base_name_leak_rate']:.1%} "
        "for the base).",
    ]
    for setting in trained.identity:
        lines += ["", f"## Identity answers, setting `{setting}`", ""]
        for q, before, after in zip(questions, base.identity[setting], trained.identity[setting], strict=True):
            lines += [f"**{q.question}** ({q.category}) {_mark(after, identity)}", "",
                      f"- base: {_quote(before)}", f"- trained: {_quote(after)}", ""]  # fmt: skip
    lines += ["## General answers (setting `neutral`)", ""]
    for prompt, before, after in zip(evalset.general, base.general, trained.general, strict=True):
        lines += [f"**{prompt}**", "", f"- base: {_quote(before)}", f"- trained: {_quote(after)}", ""]
    lines += ["## Benchmark answers the two models score differently", ""]
    for item, before, after in zip(evalset.benchmark, base.benchmark, trained.benchmark, strict=True):
        right_before, right_after = generative_correct(before, item), generative_correct(after, item)
        if right_before != right_after:
            lines += [f"**{item.question}** (answer: {item.answer})", "",
                      f"- base ({'right' if right_before else 'wrong'}): {_quote(before)}",
                      f"- trained ({'right' if right_after else 'wrong'}): {_quote(after)}", ""]  # fmt: skip
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
