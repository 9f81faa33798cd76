"""Stage answer_base: the base model's answers to every evaluation question -> data/base_answers/answers.json.

They change only with the base model, the evaluation data or the evaluation settings, so a sweep that changes
train.* reuses them and `evaluate` answers only with the trained model.
"""

import json
from pathlib import Path

from identity_dpo import cpu_kernels
from identity_dpo.answers import answer_all, read_evalset
from identity_dpo.atomic import atomic_outputs
from identity_dpo.chat_template import default_system_message
from identity_dpo.generation import answer_precision, check_backend
from identity_dpo.models import check_token_caps, load_model
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

BASE_MODEL = Path("models/base")
OUT = Path("data/base_answers/answers.json")


def main(params: Params) -> None:
    cpu_kernels.configure(params.cpu_kernels)  # the decoding loop (docs/upgrading.md)
    check_backend(params.evaluate.backend, "evaluate.backend")  # before any data or weights load
    precision = answer_precision(params.evaluate.precision, params.evaluate.backend, "evaluate.precision")
    evalset = read_evalset(params.evaluate)
    check_token_caps(params, BASE_MODEL)  # config.json only: before minutes of generating
    model, tokenizer = load_model(BASE_MODEL)
    # The base model's own default system message, kept as an explicit setting: the trained model's template
    # no longer carries it, but a user may still run it under the old one.
    base_default = default_system_message(tokenizer)
    answers = answer_all(
        model, tokenizer, evalset, params.identity, params.evaluate, base_default, who="Base model", precision=precision
    )
    with atomic_outputs() as outputs:
        record = {"base_default_system": base_default, "precision": precision, **answers.to_json()}
        outputs.write_text(OUT, json.dumps(record, indent=1) + "\n")
    print(
        f"answer_base: {sum(map(len, answers.identity.values())) + len(answers.general) + len(answers.benchmark)} "
        "answers of the base model"
    )


if __name__ == "__main__":
    run_stage("answer_base", main)
