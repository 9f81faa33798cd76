"""Stage validate_model: the token caps against the context length of models/base -> logs/model.ok.

Runs after fetch_model and before every stage that generates with models/base (make_pairs, answer_base,
evaluate, and through data/pairs train), so a cap the model cannot hold stops `dvc repro` before DVC deletes
their outputs. The validate stage checks the same caps earlier when it can, but it runs before fetch_model:
after a change of model.source to a hub or PyPI model it has no config.json to read yet. Reads config.json
only. The output's content never changes, so a passing check never makes another stage rerun.
"""

from pathlib import Path

from identity_dpo.atomic import write_text
from identity_dpo.models import check_token_caps
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

BASE_MODEL = Path("models/base")
OK_FILE = Path("logs/model.ok")
OK_TEXT = "the token caps fit the context length of models/base (stages/validate_model.py)\n"  # fixed: see above


def main(params: Params) -> None:
    check_token_caps(params, BASE_MODEL)
    write_text(OK_FILE, OK_TEXT)
    print(f"validate_model: the token caps fit {BASE_MODEL}")


if __name__ == "__main__":
    run_stage("validate_model", main)
