"""Checkpoints for resuming an interrupted training run (`train.resume`), kept outside the DVC outputs.

A checkpoint is resumed only by the run it belongs to: the same train params (but the resume settings), pairs
and base model. The trainer writes the checkpoints (training.py); this module decides which one, if any, to use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from identity_dpo.params import TrainParams


def run_fingerprint(params: TrainParams, pairs: list[dict[str, Any]], model_dir: Path) -> str:
    """What a checkpoint must match to be resumed: the train params (but resume settings), pairs and base model."""
    settings = dataclasses.asdict(params)
    for key in ("resume", "checkpoint_steps"):
        settings.pop(key)
    digest = hashlib.sha256(json.dumps([settings, pairs], sort_keys=True).encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def prepare_checkpoints(folder: Path, fingerprint: str) -> Path | None:
    """Make `folder` hold checkpoints of this run only; return the one to resume from, if any.

    Checkpoints of a run with other params, pairs or base model are removed: resuming them would train
    something else than params.yaml says.
    """
    stamp = folder / "run.json"
    if folder.exists():
        recorded = json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint") if stamp.is_file() else None
        if recorded != fingerprint:
            print(f"train: {folder} holds checkpoints of a different run; starting from step 0", file=sys.stderr)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}) + "\n", encoding="utf-8")
    return last_checkpoint(folder)


def last_checkpoint(folder: Path) -> Path | None:
    """The highest-step complete checkpoint (the trainer writes trainer_state.json last)."""
    done = [
        path
        for path in folder.glob("checkpoint-*")
        if path.name.removeprefix("checkpoint-").isdigit() and (path / "trainer_state.json").is_file()
    ]
    return max(done, key=lambda path: int(path.name.removeprefix("checkpoint-")), default=None)
