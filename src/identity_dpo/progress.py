"""What a stage shows while it works: tqdm progress bars on stderr, as transformers, TRL and datasets draw theirs in
the same stages, counted in answers (or questions) rather than batches, and one short line per training log step.

Plumbing like params.py and stage.py: nothing here shapes a result, so dvc.yaml leaves it out of the stages' deps.

`dvc repro` runs a stage on the terminal it was started from, so the bars redraw in place there. Sent to a file or a
pipe (CI, a queued experiment's log) they are written as the libraries' bars are, one carriage-return update per
step. TQDM_DISABLE=1 turns off every bar, ours and the libraries' (TRL and tqdm read the same variable); the training
log lines stay.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any

from tqdm.auto import tqdm

# The training log's keys a line shows, and how: a user follows the loss and whether chosen answers pull ahead.
_LOG_FIELDS = (
    ("loss", "loss", "{:.3g}"),
    ("rewards/margins", "rewards/margins", "{:.3g}"),
    ("rewards/accuracies", "rewards/accuracies", "{:.2f}"),
    ("learning_rate", "lr", "{:.1e}"),
)


def bars_enabled() -> bool:
    """False when TQDM_DISABLE is set to anything (TRL's own reading of it)."""
    return not os.environ.get("TQDM_DISABLE", "")


def progress_bar(total: int, desc: str, unit: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr counting `total` `unit`s (answers, questions, steps), `initial` of them already done."""
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not bars_enabled(), dynamic_ncols=True)


class FinishedRows:
    """A transformers generation streamer (`model.generate(streamer=...)`) that reports each answer as it ends.

    `generate` hands it the prompts first, then the new token of every row at each step. A row ends at its first
    stop token; `on_finished` gets how many rows ended at that step. Rows cut off by the token cap end with the
    whole batch, which the caller counts.
    """

    def __init__(self, stops: Collection[int], on_finished: Callable[[int], Any]) -> None:
        self.stops = set(stops)
        self.on_finished = on_finished
        self.ended: list[bool] | None = None

    def put(self, value: Any) -> None:
        if value.dim() != 1:  # the prompts' tokens, before the first step
            return
        tokens = value.tolist()
        if self.ended is None:
            self.ended = [False] * len(tokens)
        newly = [row for row, token in enumerate(tokens) if token in self.stops and not self.ended[row]]
        for row in newly:
            self.ended[row] = True
        if newly:
            self.on_finished(len(newly))

    def end(self) -> None:
        self.ended = None  # the next batch starts afresh


def log_line(step: int, max_steps: int, logs: Mapping[str, Any]) -> str | None:
    """One short line for a training log entry (None when it has nothing a user follows).

    DVCLive keeps every value the trainer logs (metrics/train); the terminal gets the few a user follows.
    The last entry, the run's summary, becomes its own line.
    """
    if "train_runtime" in logs:
        line = f"trained {max_steps} steps in {logs['train_runtime']:.1f} s"
        return line + (f", mean loss {logs['train_loss']:.3g}" if "train_loss" in logs else "")
    shown = [
        f"{label} {form.format(logs[key])}"
        for key, label, form in _LOG_FIELDS
        if isinstance(logs.get(key), (int, float))
    ]
    if not shown:
        return None
    width = len(str(max_steps))
    return "  ".join([f"step {step:>{width}}/{max_steps}", *shown])


def write_line(line: str) -> None:
    """`line` on stdout, above any bar on the same terminal (the bar redraws below it), at once even in a pipe."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()
