"""Stage validate_train: the train params checked against data/pairs and models/base -> logs/train.ok.

Runs after make_pairs and before train, which depends on its output: train.max_length against the longest
tokenized prompt of data/pairs, the LoRA target modules against the architecture of models/base (built on the
meta device, no weights), and train.precision against the hardware. The same checks run inside train, but only
after DVC has deleted train's outputs; here a bad value stops `dvc repro` with the trained model in place.
The output's content never changes, so a passing check never makes train rerun.
"""

from pathlib import Path

from identity_dpo.atomic import write_text
from identity_dpo.data import read_jsonl_records
from identity_dpo.params import Params
from identity_dpo.stage import run_stage
from identity_dpo.training import check_training_inputs

PAIRS = Path("data/pairs/pairs.jsonl")
BASE_MODEL = Path("models/base")
OK_FILE = Path("logs/train.ok")
OK_TEXT = "the train params fit data/pairs and models/base (stages/validate_train.py)\n"  # fixed: see above


def main(params: Params) -> None:
    pairs = read_jsonl_records(PAIRS, {"prompt": list, "chosen": list, "rejected": list}, "a preference pair")
    check_training_inputs(params.train, BASE_MODEL, pairs)
    write_text(OK_FILE, OK_TEXT)
    print(f"validate_train: the train params fit {PAIRS} and {BASE_MODEL}")


if __name__ == "__main__":
    run_stage("validate_train", main)
