"""Stage evaluate: base vs trained on held-out questions -> metrics/eval.json + reports/eval.md."""

from pathlib import Path

from identity_dpo.atomic import atomic_outputs
from identity_dpo.data import read_jsonl_records
from identity_dpo.errors import DataError
from identity_dpo.evaluation import (
    answer_all,
    answer_records,
    general_metrics,
    identity_metrics,
    plot_rows,
    report_markdown,
)
from identity_dpo.generation import check_backend
from identity_dpo.models import load_model
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

BASE_MODEL = Path("models/base")
TRAINED_MODEL = Path("models/dpo")
METRICS = Path("metrics/eval.json")
REPORT = Path("reports/eval.md")
ANSWERS = Path("reports/eval_answers.jsonl")
RATES_PLOT = Path("metrics/eval_plots/identity_rates.json")
DRIFT_PLOT = Path("metrics/eval_plots/general_drift.json")


def main(params: Params) -> None:
    cfg = params.evaluate
    check_backend(cfg.backend, "evaluate.backend")  # before any data or weights load
    questions = _texts(cfg.identity_questions, "question", "evaluate.identity_questions", "a held-out question")
    general = _texts(cfg.general_prompts, "prompt", "evaluate.general_prompts", "a general prompt")
    base, tokenizer = load_model(BASE_MODEL)
    trained, _ = load_model(TRAINED_MODEL)
    before = answer_all(base, tokenizer, questions, general, params.identity, cfg)
    after = answer_all(trained, tokenizer, questions, general, params.identity, cfg)
    metrics = {
        "identity": {
            "base": identity_metrics(before, params.identity),
            "trained": identity_metrics(after, params.identity),
        },
        "general": general_metrics(base, trained, tokenizer, general, before, after, params.identity),
        "questions": len(questions),
        "general_prompts": len(general),
    }
    rates, drift = plot_rows(metrics)
    with atomic_outputs() as outputs:  # all appear together, only once all are complete
        outputs.write_jsonl(ANSWERS, answer_records(questions, general, before, after))
        outputs.write_text(REPORT, report_markdown(metrics, questions, general, before, after, params.identity))
        outputs.write_json(RATES_PLOT, rates)
        outputs.write_json(DRIFT_PLOT, drift)
        outputs.write_json(METRICS, metrics)
    neutral = metrics["identity"]["trained"]["neutral"]
    print(f"evaluate: trained new-name rate {neutral['new_name_rate']:.0%}, old-name rate {neutral['old_name_rate']:.0%}")


def _texts(path: str, field: str, key: str, what: str) -> list[str]:
    """The `field` of every row of a JSON-lines file named by the param `key`."""
    try:
        return [row[field] for row in read_jsonl_records(path, {field: str}, what)]
    except DataError as exc:
        raise DataError(f"{key}: {exc}") from None


if __name__ == "__main__":
    run_stage("evaluate", main)
