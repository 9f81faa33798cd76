"""Stage evaluate: base vs trained on held-out questions -> metrics/eval.json + reports/eval.md.

The base model's answers come from the answer_base stage; here only the trained model answers. The base model
is loaded for the drift, which reads the base's answers with both models (a forward pass, no generation).
"""

import json
from pathlib import Path

from identity_dpo import cpu_kernels
from identity_dpo.answers import ModelAnswers, answer_all, read_evalset
from identity_dpo.atomic import atomic_outputs, read_jsonl
from identity_dpo.errors import DataError
from identity_dpo.evaluation import (
    answer_records,
    answer_variety,
    benchmark_metrics,
    general_metrics,
    identity_metrics,
    plot_rows,
    report_markdown,
)
from identity_dpo.generation import answer_precision, check_backend
from identity_dpo.models import check_token_caps, load_model
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

BASE_MODEL = Path("models/base")
BASE_ANSWERS = Path("data/base_answers/answers.json")
TRAINED_MODEL = Path("models/trained")
PAIRS = Path("data/pairs/pairs.jsonl")
METRICS = Path("metrics/eval.json")
REPORT = Path("reports/eval.md")
ANSWERS = Path("reports/eval_answers.jsonl")
RATES_PLOT = Path("metrics/eval_plots/identity_rates.json")
GENERAL_PLOT = Path("metrics/eval_plots/general_drift.json")


def main(params: Params) -> None:
    cpu_kernels.configure(params.cpu_kernels)  # the decoding loop (docs/upgrading.md)
    cfg = params.evaluate
    check_backend(cfg.backend, "evaluate.backend")  # before any data or weights load
    precision = answer_precision(cfg.precision, cfg.backend, "evaluate.precision")
    evalset = read_evalset(cfg)
    recorded = json.loads(BASE_ANSWERS.read_text(encoding="utf-8"))
    if recorded.get("precision", "fp32") != precision:  # both models answer at one precision, or the comparison is off
        raise DataError(
            f"{BASE_ANSWERS}: the base model answered in {recorded.get('precision', 'fp32')}, evaluate.precision is "
            f"{precision} here (answered on another host, or before evaluate.precision changed); "
            "`dvc repro --force answer_base` answers again"
        )
    base_default = recorded["base_default_system"]
    before = ModelAnswers.from_json(recorded)
    if len(before.general) != len(evalset.general) or len(before.benchmark) != len(evalset.benchmark):
        raise DataError(f"{BASE_ANSWERS}: answers a different evaluation set; run `dvc repro answer_base`")
    check_token_caps(params, BASE_MODEL)  # config.json only: before minutes of generating
    base, tokenizer = load_model(BASE_MODEL)
    # The trained model answers with its own tokenizer: the same vocabulary, and the chat template train renamed, which
    # speaks in the `default` setting (no system message); the base's would put its old default system message there.
    trained, trained_tokenizer = load_model(TRAINED_MODEL)
    after = answer_all(trained, trained_tokenizer, evalset, params.identity, cfg, base_default,
                       who="Trained model", precision=precision)  # fmt: skip
    chosen_tokens = [
        len(tokenizer(pair["chosen"][-1]["content"], add_special_tokens=False)["input_ids"])
        for pair in read_jsonl(PAIRS)
        if pair.get("rewrite") not in ("rehearsal", "mixed")  # each chosen identity answer once
    ]
    metrics = {
        "identity": {
            "base": identity_metrics(before, evalset.questions, params.identity),
            "trained": identity_metrics(after, evalset.questions, params.identity),
            "answers": answer_variety(after.identity["neutral"], after.answer_tokens["identity"], chosen_tokens),
        },
        "general": general_metrics(base, trained, tokenizer, evalset.general, before, after, params.identity),
        "benchmark": benchmark_metrics(evalset.benchmark, before, after, cfg.bootstrap_samples, cfg.seed),
        "questions": len(evalset.questions),
        "general_prompts": len(evalset.general),
        "benchmark_questions": len(evalset.benchmark),
        "bf16_answers": int(precision == "bf16"),  # a number, so `dvc metrics diff` shows a change of precision
    }
    rates, general = plot_rows(metrics)
    with atomic_outputs() as outputs:  # all appear together, only once all are complete
        outputs.write_jsonl(
            ANSWERS, answer_records(evalset.questions, evalset.general, evalset.benchmark, before, after)
        )
        outputs.write_text(REPORT, report_markdown(metrics, evalset, before, after, params.identity, base_default))
        outputs.write_json(RATES_PLOT, rates)
        outputs.write_json(GENERAL_PLOT, general)
        outputs.write_json(METRICS, metrics)
    neutral = metrics["identity"]["trained"]["neutral"]
    bench = metrics["benchmark"]["generative"]
    print(
        f"evaluate: trained new-name rate {neutral['new_name_rate']:.0%}, "
        f"old-name rate {neutral['old_name_rate']:.0%}; "
        f"benchmark {bench['base']:.1%} -> {bench['trained']:.1%}"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
