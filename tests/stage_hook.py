"""Test instrumentation for stage processes (never shipped): tests/stage_harness.py installs this file as the
`sitecustomize` module of the processes a test starts, so Python runs it before the stage script.

Outside a stage script (`python stages/<name>.py`) it does nothing. In one, driven by environment variables:
- IDDPO_PROBE_REPORT: on exit, write there (JSON) which model files the stage opened (config, tokenizer, weights),
  which weights it read, and whether it imported torch;
- IDDPO_PAUSE_STAGE, IDDPO_PAUSE_BEFORE_MOVE, IDDPO_PAUSE_MARKER: in that stage, stop right before the n-th move of
  a finished temporary into its final place, write the marker file, and wait to be killed.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _is_stage() -> bool:
    argv0 = (sys.argv[0] if sys.argv else "").replace(os.sep, "/")
    return argv0.endswith(".py") and "stages/" in argv0


def _probe_model_files(report: str) -> None:
    """Record the model files the stage opens and the weights it reads; write them to `report` at exit."""
    model_files = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja", "special_tokens_map.json"}  # fmt: skip
    weights = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
    seen: dict[str, Any] = {"opened": [], "weights": []}

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path = os.fsdecode(args[0])
            name = os.path.basename(path)
            if "site-packages" not in path and (name in model_files or name.endswith(weights)):
                seen["opened"].append(os.path.relpath(os.path.abspath(path)))

    sys.addaudithook(audit)
    import safetensors  # its reader is Rust (no audit event), so watch it at the Python entry point

    real_safe_open = safetensors.safe_open

    def safe_open(filename: Any, *args: Any, **kwargs: Any) -> Any:
        seen["weights"].append(os.path.relpath(os.path.abspath(os.fsdecode(filename))))
        return real_safe_open(filename, *args, **kwargs)

    safetensors.safe_open = safe_open

    def write_report() -> None:
        seen["torch_imported"] = "torch" in sys.modules
        with open(report, "w") as handle:
            json.dump(seen, handle)

    atexit.register(write_report)


def _pause_before_move(move_number: int, marker: str) -> None:
    """Stop before the `move_number`-th move of a finished temporary into place; write `marker` and wait."""
    import identity_dpo.atomic as atomic

    real_move = atomic._move_into_place
    moves = [0]

    def move_into_place(tmp: Path, final: Path) -> None:
        if not any(part.startswith(".tmp-") for part in Path(final).parts):  # not a file inside a staged folder
            moves[0] += 1
            if moves[0] == move_number:
                with open(marker + ".part", "w") as handle:
                    json.dump({"pid": os.getpid(), "final": str(final), "tmp": str(tmp)}, handle)
                os.replace(marker + ".part", marker)
                while True:
                    time.sleep(60)
        real_move(tmp, final)

    atomic._move_into_place = move_into_place


if _is_stage():
    if os.environ.get("IDDPO_PROBE_REPORT"):
        _probe_model_files(os.environ["IDDPO_PROBE_REPORT"])
    _pause_stage = os.environ.get("IDDPO_PAUSE_STAGE", "")
    if _pause_stage and sys.argv[0].replace(os.sep, "/").endswith(f"stages/{_pause_stage}.py"):
        _pause_before_move(int(os.environ["IDDPO_PAUSE_BEFORE_MOVE"]), os.environ["IDDPO_PAUSE_MARKER"])
