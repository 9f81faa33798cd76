"""Stage train: DPO on data/pairs -> models/trained/ (final weights only), models/adapter/ (the LoRA adapter alone)
and metrics/train/ (DVCLive curves).

models/trained carries the new identity in its own files too: its chat template's default system message (the
one it injects into a conversation without a system message) is identity.default_system_prompt, and its metadata
no longer names the base model (identity_dpo.chat_template). With full fine-tuning models/adapter holds only a
README saying so.

With `train.launch.profile: none` (the default) training runs in this process. Any other profile makes this
script start itself again under `accelerate launch` in `train.launch.processes` processes; rank 0 of those
writes the outputs. Everything is checked before any weights load or any process starts.
"""

import os
import shutil
import tempfile
from pathlib import Path

from identity_dpo import cpu_kernels
from identity_dpo.atomic import atomic_outputs
from identity_dpo.chat_template import identity_system_prompt, rename_model_folder
from identity_dpo.checkpoints import prepare_checkpoints, run_fingerprint
from identity_dpo.data import read_jsonl_records
from identity_dpo.launch import WORKER_ENV, check_launch, run_launched
from identity_dpo.params import Params, load_params
from identity_dpo.stage import PARAMS_FILE, run_stage
from identity_dpo.training import check_training_inputs, train_dpo

PAIRS = Path("data/pairs/pairs.jsonl")
BASE_MODEL = Path("models/base")
OUT_DIR = Path("models/trained")
ADAPTER_DIR = Path("models/adapter")
CURVES_DIR = Path("metrics/train")
CHECKPOINTS = Path("checkpoints/train")  # train.resume only; git- and dvc-ignored, never a DVC output
ACCELERATE_CONFIGS = Path("configs/accelerate")


def main(params: Params) -> None:
    cpu_kernels.configure(params.cpu_kernels)  # the training kernels (docs/upgrading.md)
    pairs = read_pairs()
    check_training_inputs(params.train, BASE_MODEL, pairs)
    check_launch(params.train, ACCELERATE_CONFIGS)
    if params.train.resume:
        prepare_checkpoints(CHECKPOINTS, run_fingerprint(params.train, pairs, BASE_MODEL))
    checkpoints = CHECKPOINTS if params.train.resume else None
    with tempfile.TemporaryDirectory(prefix="identity-dpo-train-") as scratch:
        if params.train.launch.profile == "none":
            train_into_place(params, pairs, Path(scratch), checkpoints)
        else:
            run_launched(params.train, Path(__file__).resolve(), ACCELERATE_CONFIGS, Path(scratch))
    if checkpoints is not None:
        shutil.rmtree(checkpoints)  # the model is in place: the run's checkpoints are no longer needed


def worker(params: Params) -> None:
    """One of the processes `accelerate launch` started (see main); rank 0 writes the outputs."""
    cpu_kernels.configure(params.cpu_kernels)
    scratch = Path(os.environ[WORKER_ENV])
    rank = int(os.environ.get("RANK", "0"))
    pairs = read_pairs()
    checkpoints = CHECKPOINTS if params.train.resume else None
    if rank == 0:
        train_into_place(params, pairs, scratch, checkpoints)
    else:
        private = scratch / f"rank-{rank}"  # the other ranks' copies of the outputs are thrown away
        train_dpo(BASE_MODEL, pairs, params.train, private / "model", private / "curves", scratch,
                  checkpoint_dir=checkpoints)  # fmt: skip


def train_into_place(params: Params, pairs: list[dict], scratch: Path, checkpoints: Path | None) -> None:
    """Train and write models/trained, models/adapter and metrics/train; they appear together, once all are complete."""
    with atomic_outputs() as outputs:
        model_dir, adapter_dir = outputs.dir(OUT_DIR), outputs.dir(ADAPTER_DIR)
        summary = train_dpo(
            BASE_MODEL, pairs, params.train, model_dir, outputs.dir(CURVES_DIR), scratch,
            checkpoint_dir=checkpoints, adapter_dir=adapter_dir if params.train.lora.enabled else None,
        )  # fmt: skip
        if not params.train.lora.enabled:
            adapter_dir.mkdir(parents=True, exist_ok=True)
            (adapter_dir / "README.md").write_text(
                "No adapter: train.lora.enabled is false, so models/trained was fully fine-tuned.\n", encoding="utf-8"
            )
        identity = params.identity
        system = identity_system_prompt(identity)
        renamed = rename_model_folder(model_dir, system, identity.new_name, identity.old_names)
    print("train: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items()))
    print(f"train: default system message {renamed['old_default_system_message']!r} -> {system!r}")


def read_pairs() -> list[dict]:
    return read_jsonl_records(PAIRS, {"prompt": list, "chosen": list, "rejected": list}, "a preference pair")


if __name__ == "__main__":
    if WORKER_ENV in os.environ:
        worker(load_params(PARAMS_FILE))  # main already validated everything; no second timing entry
    else:
        run_stage("train", main)
