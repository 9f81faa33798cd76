"""Stage train: DPO on data/pairs -> models/dpo/ (final weights only) + metrics/train/ (DVCLive curves)."""

import tempfile
from pathlib import Path

from identity_dpo.atomic import atomic_dir
from identity_dpo.data import read_jsonl_records
from identity_dpo.params import Params
from identity_dpo.stage import run_stage
from identity_dpo.training import train_dpo

PAIRS = Path("data/pairs/pairs.jsonl")
BASE_MODEL = Path("models/base")
OUT_DIR = Path("models/dpo")
CURVES_DIR = Path("metrics/train")


def main(params: Params) -> None:
    pairs = read_jsonl_records(PAIRS, {"prompt": list, "chosen": list, "rejected": list}, "a preference pair")
    with (
        tempfile.TemporaryDirectory(prefix="identity-dpo-train-") as scratch,
        atomic_dir(OUT_DIR) as out,
        atomic_dir(CURVES_DIR) as curves,
    ):
        summary = train_dpo(BASE_MODEL, pairs, params.train, out, curves, Path(scratch))
    print("train: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))


if __name__ == "__main__":
    run_stage("train", main)
