"""What every stage script shares: validated params, clear errors, and a wall-time log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil  # a dependency of dvc

from identity_dpo.errors import PipelineError
from identity_dpo.params import Params, load_params

PARAMS_FILE = Path(os.environ.get("IDENTITY_DPO_PARAMS", "params.yaml"))
TIMINGS_FILE = Path("logs/stage_times.jsonl")  # not a DVC output: wall time differs between identical runs


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Validate all params, run `main`, and turn user errors into one line on stderr and exit code 2."""
    try:
        params = load_params(PARAMS_FILE)  # every section, before any model is loaded
        main(params)
    except PipelineError as exc:
        # One line, whatever the message quotes (a YAML parser's excerpt, a library's multi-line error).
        print(f"{name}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(2) from None
    # From process start, so the seconds include interpreter start-up and library imports.
    seconds = time.time() - psutil.Process().create_time()
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with TIMINGS_FILE.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"stage": name, "seconds": round(seconds, 1), "finished": time.time()}) + "\n")
    print(f"{name}: done in {seconds:.1f} s", file=sys.stderr)
