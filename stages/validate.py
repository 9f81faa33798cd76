"""Stage validate: params.yaml and every input file checked before any other stage runs -> logs/params.ok.

DVC deletes a stage's outputs before it runs the stage, so a stage that refuses a bad param has already lost
its previous outputs. Every other stage depends on this one's output, so `dvc repro` runs it first and stops
when it fails: the previous outputs all stay in place, and the one-line error is the last thing the stage
printed. The output's content never changes, so a passing validation never makes another stage rerun.

The model is checked from its files, never its weights: a local model.source folder (its files, and the tensors
its safetensors headers list against the architecture its config.json names), and the token caps against the
context length of models/base (when fetch_model made it from this model.source) or of the local folder.
What needs the fetched model or the pairs is checked by validate_model and validate_train (dvc.yaml).
"""

from pathlib import Path

from identity_dpo.atomic import write_text
from identity_dpo.checks import check_inputs, check_model_source
from identity_dpo.models import check_token_caps
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

OK_FILE = Path("logs/params.ok")
OK_TEXT = "params.yaml and the input files passed validation (stages/validate.py)\n"  # fixed: see above


def main(params: Params) -> None:
    check_inputs(params)
    model = check_model_source(params)
    if model is not None:
        check_token_caps(params, model)  # config.json only; validate_model checks the fetched model again
    write_text(OK_FILE, OK_TEXT)
    print("validate: params.yaml and the input files are fine")


if __name__ == "__main__":
    run_stage("validate", main)
