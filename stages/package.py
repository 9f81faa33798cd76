"""Stage package: models/dpo/ = the files of models/trained + README.md, a model card from params and metrics.

models/dpo is the model to share: `dvc artifacts get` fetches it by name (dvc.yaml `artifacts:`), and the chat
command opens it by default. Its weights are models/trained's files, copied: DVC's cache is content-addressed,
so they are stored once. The card (identity_dpo.model_card) reports metrics/eval.json, metrics/export.json and
metrics/train/metrics.json.
"""

import shutil
from pathlib import Path

from identity_dpo.atomic import atomic_outputs
from identity_dpo.chat_template import old_name_mentions
from identity_dpo.errors import PipelineError
from identity_dpo.model_card import write_card
from identity_dpo.models import check_model_folder
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

TRAINED_MODEL = Path("models/trained")
OUT_DIR = Path("models/dpo")
EVAL_METRICS = Path("metrics/eval.json")
EXPORT_METRICS = Path("metrics/export.json")
TRAIN_METRICS = Path("metrics/train/metrics.json")


def main(params: Params) -> None:
    check_model_folder(TRAINED_MODEL, "models/trained")
    with atomic_outputs() as outputs:
        folder = outputs.dir(OUT_DIR)
        for path in sorted(TRAINED_MODEL.iterdir()):
            if path.is_file() and path.name != "README.md":
                shutil.copy2(path, folder / path.name)
        # The card may name the base model; nothing else in the folder may name an old identity.
        stale = old_name_mentions(folder, params.identity.old_names)
        if stale:
            raise PipelineError(f"models/trained still names {params.identity.old_names} in {', '.join(stale)}; "
                                "run the train stage again (`dvc repro train`)")  # fmt: skip
        write_card(folder, params, EVAL_METRICS, EXPORT_METRICS, TRAIN_METRICS)
    print(f"package: {OUT_DIR} ({len(list(TRAINED_MODEL.iterdir())) + 1} files, README.md model card)")


if __name__ == "__main__":
    run_stage("package", main)
