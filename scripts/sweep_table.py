"""Write the results of the DVC experiments on top of HEAD as a markdown table.

    python scripts/sweep_table.py                      # print the table
    python scripts/sweep_table.py -o docs/sweeps.md    # write it (atomically) as a document
    python scripts/sweep_table.py --rev 44c1496        # the experiments of an earlier baseline commit

Reads `dvc exp show --json` (the committed baseline and its finished experiments), so every
number in the table comes from the metrics files of a real run. Columns: the params that differ
between the rows (any section), the held-out identity rates, general drift, and the last training step.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def experiments(rev: str | None = None) -> list[dict[str, Any]]:
    """The baseline commit (HEAD, or `rev`) and its finished experiments, each as {name, rev, params, metrics}."""
    dvc = Path(sys.executable).parent / "dvc"
    shown = subprocess.run(
        [str(dvc) if dvc.exists() else "dvc", "exp", "show", "--json", *(["--rev", rev] if rev else [])],
        cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )  # fmt: skip
    rows = []
    for baseline in json.loads(shown.stdout):
        if baseline["rev"] == "workspace":
            continue
        candidates = [(baseline.get("name") or baseline["rev"][:7], baseline["rev"], baseline["data"])]
        for experiment in baseline.get("experiments") or []:
            if not finished(experiment):
                continue  # queued, running or failed: it shows the metrics it started from
            for rev in experiment["revs"]:
                candidates.append((rev.get("name") or rev["rev"][:7], rev["rev"], rev.get("data") or {}))
        for name, rev, data in candidates:
            metrics = {path: entry.get("data") for path, entry in (data.get("metrics") or {}).items()}
            if not metrics.get("metrics/eval.json"):
                continue
            params = data["params"]["params.yaml"]["data"]
            rows.append({"name": name, "rev": rev, "params": params, "metrics": metrics})
    return rows


def finished(experiment: dict[str, Any]) -> bool:
    """Ran to the end: no executor (a plain `dvc exp run`) or a queue task in state success."""
    executor = experiment.get("executor")
    return not executor or executor.get("state") == "success"


def describe_loss(train: dict[str, Any]) -> str:
    terms = [
        f"{weight:g}·{'NLL' if kind == 'sft' else kind}"
        for kind, weight in zip(train["loss_type"], train["loss_weights"], strict=True)
        if weight
    ]
    return " + ".join(terms) if len(terms) > 1 else ("pure " + terms[0].split("·")[1] if terms else "none")


LOSS_KEYS = ("train.loss_type", "train.loss_weights")  # shown together as one "loss" column


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train.beta": 0.2, "train.lora.rank": 16, ...}: each leaf param under its dotted name (as `-S` takes it)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def varying_params(flats: list[dict[str, Any]]) -> list[str]:
    """The dotted names of the params (flat_params of each row) whose values differ, in params.yaml's order."""
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({json.dumps(flat.get(k)) for flat in flats}) > 1]


def table(rows: list[dict[str, Any]]) -> str:
    flats = {row["rev"]: flat_params(row["params"]) for row in rows}
    varying = varying_params(list(flats.values()))
    loss_varies = any(k in varying for k in LOSS_KEYS)
    param_columns = [k for k in varying if k not in LOSS_KEYS]
    headers = ["experiment", *param_columns]
    headers += ["loss"] if loss_varies else []
    headers += [
        "pairs", "new name, neutral", "new name, default", "old name, neutral", "old name, default",
        "KL (nats/token)", "log-prob change", "unchanged answers", "answer length", "final loss", "reward margin",
    ]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (describe_loss(row["params"]["train"]), *(_order(flats[row["rev"]].get(k)) for k in param_columns))

    for row in sorted(rows, key=order):
        train, ev, flat = row["params"]["train"], row["metrics"]["metrics/eval.json"], flats[row["rev"]]
        curves = row["metrics"].get("metrics/train/metrics.json") or {}
        trained, general = ev["identity"]["trained"], ev["general"]
        cells = [f"`{row['name']}`", *(_param(flat.get(k)) for k in param_columns)]
        cells += [describe_loss(train)] if loss_varies else []
        cells += [
            str((row["metrics"].get("metrics/pairs.json") or {}).get("pairs", "–")),
            _pct(trained["neutral"]["new_name_rate"]), _pct(trained["default"]["new_name_rate"]),
            _pct(trained["neutral"]["old_name_rate"]), _pct(trained["default"]["old_name_rate"]),
            f"{general['mean_token_kl']:.3f}", f"{general['mean_logprob_change']:+.3f}",
            _pct(general["same_answer_rate"]),
            f"{general['answer_length_ratio']:.2f}x" if "answer_length_ratio" in general else "–",
            f"{curves['loss']:.3f}" if "loss" in curves else "–",
            f"{curves['rewards']['margins']:.2f}" if "rewards" in curves else "–",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value, anything else (strings, lists, missing) by its JSON text after them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0.0, json.dumps(value))


def _param(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def document(rows: list[dict[str, Any]], command: str, output: Path, title: str, rev: str | None = None) -> str:
    baseline = rows[0]
    questions = baseline["metrics"]["metrics/eval.json"]["questions"]
    general = baseline["metrics"]["metrics/eval.json"]["general_prompts"]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    rev_option = f" --rev {rev}" if rev else ""
    return f"""# {title}

Generated by `python scripts/sweep_table.py -o {output.as_posix()}{rev_option}` from `dvc exp show --json` on
{stamp} ({platform.machine()}, {os.cpu_count()} CPU cores), after `{command}`. Baseline commit
`{baseline['rev'][:7]}`; every other row is a DVC experiment on top of it, with only the
listed params changed. Held-out identity questions: {questions}; general prompts: {general}.

"pairs": the preference pairs trained on (`metrics/pairs.json`: answers cut off at
`pairs.max_new_tokens` with no complete sentence are dropped). "new name" / "old name": share
of held-out answers of the trained model that use the new name (strict match) / still use an
old name, under the neutral system prompt ("neutral") or with no system message ("default",
the model's template identity). KL: mean per-token KL(base ‖ trained) on the base model's
answers to the general prompts; log-prob change: the trained model's mean change in
log-probability of those answers; unchanged: share of greedy general answers that stayed word
for word the same; answer length: the trained model's greedy general answers in tokens, as a
multiple of the base model's (below 1: it stops earlier, which the KL on the base's answers does
not show; "–" for runs from before it was measured). Final loss (all loss terms: DPO, plus NLL
when weighted) and reward margin (chosen − rejected, in beta-scaled log-probability): the last
logged training step (`metrics/train/metrics.json`).

{table(rows)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="write a markdown document here instead of printing")
    parser.add_argument("--command", default="bash scripts/sweep.sh ...", help="the sweep command, for the record")
    parser.add_argument("--title", default="Sweep results", help="the document's heading")
    parser.add_argument("--rev", help="the baseline commit whose experiments to show (default: HEAD)")
    args = parser.parse_args()
    rows = experiments(args.rev)
    if not rows:
        raise SystemExit("sweep_table: no finished experiments (dvc exp show lists none with metrics/eval.json)")
    if args.output is None:
        print(table(rows))
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".tmp-{args.output.name}")
    tmp.write_text(document(rows, args.command, args.output, args.title, args.rev), encoding="utf-8")
    tmp.replace(args.output)
    print(f"wrote {args.output} ({len(rows)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
