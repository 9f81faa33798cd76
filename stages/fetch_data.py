"""Stage fetch_data: identity conversations -> data/identity/prompts.jsonl + metrics/data.json."""

from pathlib import Path

from identity_dpo.atomic import atomic_outputs
from identity_dpo.data import load_prompts, write_prompts
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

OUT_DIR = Path("data/identity")
METRICS = Path("metrics/data.json")


def main(params: Params) -> None:
    prompts, report = load_prompts(params.data.source, params.data.split, params.data.on_bad_row)
    for problem in report.problems:
        print(f"fetch_data: skipped {problem}")
    with atomic_outputs() as outputs:  # both appear together, only once both are complete
        write_prompts(outputs.dir(OUT_DIR) / "prompts.jsonl", prompts)
        outputs.write_json(METRICS, report.as_metrics())
    print(f"fetch_data: {report.used} prompts ({report.multi_turn} multi-turn), {report.skipped} rows skipped")


if __name__ == "__main__":
    run_stage("fetch_data", main)
