"""Stage fetch_model: model.source -> models/base/, a plain safetensors folder with a chat template."""

from pathlib import Path

from identity_dpo import cpu_kernels
from identity_dpo.atomic import atomic_dir
from identity_dpo.models import fetch_model
from identity_dpo.params import Params
from identity_dpo.stage import run_stage

OUT_DIR = Path("models/base")


def main(params: Params) -> None:
    cpu_kernels.configure(params.cpu_kernels)  # the GGUF reader (docs/upgrading.md)
    with atomic_dir(OUT_DIR) as out:
        source = fetch_model(params.model.source, out, params.model.dtype)
    print(f"fetch_model: saved {source} to {OUT_DIR}")


if __name__ == "__main__":
    run_stage("fetch_model", main)
