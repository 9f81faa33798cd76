"""Write the results of the DVC experiments on top of HEAD as a markdown table.

    python scripts/sweep_table.py                      # print the table
    python scripts/sweep_table.py -o docs/sweeps.md    # write it (atomically) as a document
    python scripts/sweep_table.py --rev 44c1496        # the experiments of an earlier baseline commit

Reads `dvc exp show --json` (the committed baseline and its finished experiments), so every
number in the table comes from the metrics files of a real run. Columns: the params that differ
between the rows (any section), the held-out identity rates and general ability (see `document`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from identity_dpo.atomic import jsonl_rows  # noqa: E402
from identity_dpo.names import mentions  # noqa: E402  (scored as the evaluate stage scores them)

ANSWERS = "reports/eval_answers.jsonl"  # every answer of a run, written by the evaluate stage (git-tracked)


def experiments(rev: str | None = None, num: int = 1) -> list[dict[str, Any]]:
    """The baseline commit (HEAD, or `rev`) and its finished experiments, each as {name, rev, params, metrics}; with
    `num` > 1 also those of the commits before it (first parents), e.g. a recipe's seeds run on two commits."""
    dvc = Path(sys.executable).parent / "dvc"
    command = [str(dvc) if dvc.exists() else "dvc", "exp", "show", "--json", "-n", str(num)]
    shown = subprocess.run(
        [*command, *(["--rev", rev] if rev else [])],
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
            rows.append({"name": name, "rev": rev, "params": params, "metrics": metrics, "baseline": baseline["rev"]})
    return rows


def runs(specs: list[str]) -> list[dict[str, Any]]:
    """Rows from pipeline runs in other folders (LABEL=FOLDER: a copy of the project after `dvc repro`): their
    params.yaml and metrics files, for runs made outside `dvc exp` (e.g. on other machines)."""
    rows = []
    for spec in specs:
        label, _, folder = spec.partition("=")
        root = Path(folder or label)
        metrics = {}
        for name in ("metrics/eval.json", "metrics/pairs.json", "metrics/train/metrics.json"):
            path = root / name
            metrics[name] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        if not metrics["metrics/eval.json"]:
            raise SystemExit(f"sweep_table: {root}: no metrics/eval.json (run `dvc repro evaluate` there first)")
        params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
        rows.append({"name": label, "rev": str(root), "folder": root, "params": params, "metrics": metrics})
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


def trained_in(row: dict[str, Any]) -> str:
    """The precision the run trained in, from metrics/train's `bf16` and `bf16_amx` flags ("–" for a run older
    than them)."""
    train = row["metrics"].get("metrics/train/metrics.json") or {}
    if "bf16" not in train:
        return "–"
    if train["bf16"]:
        return "bf16 (AMX)" if train.get("bf16_amx") else "bf16"
    return "fp16" if row["params"]["train"].get("precision") == "fp16" else "fp32"


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


def _identity_cells(ev: dict[str, Any]) -> list[str]:
    trained = ev["identity"]["trained"]
    base_default = trained.get("base_default", {})
    maker = trained["neutral"].get("creator_rate_on_maker_questions")
    return [
        _pct(trained["neutral"]["new_name_rate"]), _pct(trained["default"]["new_name_rate"]),
        _pct(base_default["new_name_rate"]) if base_default else "–",
        _pct(max(trained[s]["old_name_rate"] for s in trained if not s.endswith("_by_category"))),
        _pct(maker) if maker is not None else "–",
        _pct(ev["identity"]["answers"]["distinct_share"]) if "answers" in ev["identity"] else "–",
    ]  # fmt: skip


def _general_cells(ev: dict[str, Any]) -> list[str]:
    general, bench = ev["general"], ev.get("benchmark")
    cells = []
    if bench:
        gen = bench["generative"]
        cells += [
            f"{gen['base']:.1%} → {gen['trained']:.1%}",
            f"{gen['difference']:+.1%} [{gen['difference_ci_low']:+.1%}, {gen['difference_ci_high']:+.1%}]",
            f"{gen['mcnemar_p']:.2f}",
            f"{bench['choice_acc_norm']['difference']:+.1%}",
        ]
    else:
        cells += ["–"] * 4
    cells += [
        f"{general['mean_token_kl']:.3f}",
        f"{general['answer_length_ratio']:.2f}x" if "answer_length_ratio" in general else "–",
        f"{bench['answer_length_ratio']:.2f}x" if bench else "–",
        _pct(general["name_leak_rate"]) if "name_leak_rate" in general else "–",
    ]
    return cells


IDENTITY_HEADERS = ["new name, neutral", "new name, default", "new name, base's default", "old name (worst)",
                    "creator on maker questions", "distinct identity answers"]  # fmt: skip
GENERAL_HEADERS = ["benchmark (generative)", "difference [95%]", "McNemar p", "multiple choice (norm.) difference",
                   "KL (nats/token)", "length, general", "length, benchmark", "name leak"]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    flats = {row["rev"]: flat_params(row["params"]) for row in rows}
    varying = varying_params(list(flats.values()))
    loss_varies = any(k in varying for k in LOSS_KEYS)
    param_columns = [k for k in varying if k not in LOSS_KEYS]
    headers = ["experiment", *param_columns]
    headers += ["loss"] if loss_varies else []
    # train.precision auto follows the machine, so the precision a run trained in is read from its metrics
    precision_varies = len({trained_in(row) for row in rows}) > 1
    headers += ["trained in"] if precision_varies else []
    headers += ["pairs", *IDENTITY_HEADERS, *GENERAL_HEADERS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        return (describe_loss(row["params"]["train"]), *(_order(flats[row["rev"]].get(k)) for k in param_columns))

    for row in sorted(rows, key=order):
        train, ev, flat = row["params"]["train"], row["metrics"]["metrics/eval.json"], flats[row["rev"]]
        cells = [f"`{row['name']}`", *(_param(flat.get(k)) for k in param_columns)]
        cells += [describe_loss(train)] if loss_varies else []
        cells += [trained_in(row)] if precision_varies else []
        cells += [str((row["metrics"].get("metrics/pairs.json") or {}).get("pairs", "–"))]
        cells += _identity_cells(ev) + _general_cells(ev)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The bars of the issue "Identity without collateral damage", checked on every row of a seed spread.
SPREAD_MEASURES = {
    "new name, neutral": (lambda ev: ev["identity"]["trained"]["neutral"]["new_name_rate"], "min", ">= 98%"),
    "new name, base's default": (lambda ev: ev["identity"]["trained"]["base_default"]["new_name_rate"], "min",
                                 ">= 95%"),
    "old name (any setting)": (lambda ev: max(v["old_name_rate"] for k, v in ev["identity"]["trained"].items()
                                              if not k.endswith("_by_category")), "max", "<= 1%"),
    "creator on maker questions": (lambda ev: ev["identity"]["trained"]["neutral"]["creator_rate_on_maker_questions"],
                                   "min", ">= 90%"),
    "benchmark difference (generative)": (lambda ev: ev["benchmark"]["generative"]["difference"], "min",
                                          ">= -2 points"),
    "McNemar p": (lambda ev: ev["benchmark"]["generative"]["mcnemar_p"], "min", ">= 0.05"),
    "length, general": (lambda ev: ev["general"]["answer_length_ratio"], "min", ">= 0.9x"),
    "name leak": (lambda ev: ev["general"]["name_leak_rate"], "max", "<= 1%"),
    "KL (nats/token)": (lambda ev: ev["general"]["mean_token_kl"], "max", "<= 0.05"),
    # No bar: the issue asks for it reported (identity answers that collapse to one canned line score low).
    "distinct identity answers": (lambda ev: ev["identity"].get("answers", {}).get("distinct_share", float("nan")),
                                  "min", "–"),
}  # fmt: skip


def recipes(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The rows grouped by recipe: the runs whose params differ only in train.seed, each group named by the params
    that set it apart from the others ("" when all rows are one recipe), in the order of their first row."""
    flats = [flat_params(row["params"]) for row in rows]
    keys = [k for k in varying_params(flats) if k != "train.seed"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row, flat in zip(rows, flats, strict=True):
        groups.setdefault(", ".join(f"`{k}` {_param(flat.get(k))}" for k in keys), []).append(row)
    return list(groups.items())


def spread_section(rows: list[dict[str, Any]]) -> str:
    """One spread table per recipe of two runs or more (its seeds); a single run has no spread to show."""
    groups = [(label, group) for label, group in recipes(rows) if len(group) > 1]
    if len(groups) == 1 and len(groups[0][1]) == len(rows):
        intro = f"Mean and worst value of each measure over the {len(rows)} runs above, next to the bar it must meet."
        return f"{intro}\n\n{spread(rows)}"
    if not groups:
        return "No recipe above has more than one run: there is no spread to show."
    parts = ["Mean and worst value of each measure over the runs of each recipe above (the same params but "
             "`train.seed`), next to the bar it must meet."]  # fmt: skip
    for label, group in groups:
        names = ", ".join(f"`{row['name']}`" for row in group)
        parts.append(f"### {label} ({len(group)} runs: {names})\n\n{spread(group)}")
    return "\n\n".join(parts)


def spread(rows: list[dict[str, Any]]) -> str:
    """Mean and worst of each measure over the rows (e.g. three training seeds), next to its bar."""
    lines = ["| measure | bar | mean | worst | per run |", "|---|---|---|---|---|"]
    for label, (read, worst, bar) in SPREAD_MEASURES.items():
        values = [read(row["metrics"]["metrics/eval.json"]) for row in rows]
        pick = min(values) if worst == "min" else max(values)
        show = _pct if label not in ("McNemar p", "KL (nats/token)") else (lambda v: f"{v:.3f}")
        show = (lambda v: f"{v:.2f}x") if label.startswith("length") else show
        lines.append(f"| {label} | {bar} | {show(sum(values) / len(values))} | {show(pick)} | "
                     + ", ".join(show(v) for v in values) + " |")  # fmt: skip
    return "\n".join(lines)


def answers(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The run's reports/eval_answers.jsonl: from its folder (--runs) or its commit (None where it has none)."""
    if "folder" in row:
        path = row["folder"] / ANSWERS
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    else:
        shown = subprocess.run(["git", "show", f"{row['rev']}:{ANSWERS}"], cwd=ROOT, capture_output=True, text=True)
        text = shown.stdout if shown.returncode == 0 else None
    return jsonl_rows(text) if text else None


def misses(rows: list[dict[str, Any]]) -> str:
    """Question by question, over the runs: the held-out identity questions answered without the new name under the
    neutral system prompt (strict match, as new_name_rate counts), and the general prompts and benchmark questions
    answered with it (normalized match, as name_leak_rate counts), each with how many runs did so."""
    missed: dict[tuple[str, str, str], list[str]] = {}
    leaked: dict[tuple[str, str, str], list[str]] = {}
    read = 0
    for row in rows:
        records = answers(row)
        if records is None:
            continue
        read += 1
        new_name = row["params"]["identity"]["new_name"]
        for r in records:
            if r["kind"] == "identity" and r["setting"] == "neutral" and not mentions(r["trained"], [new_name]):
                missed.setdefault((r["id"], r["category"], r["question"]), []).append(row["name"])
            elif r["kind"] != "identity" and mentions(r["trained"], [new_name], normalized=True):
                key = (r.get("id", "–"), r["kind"], r.get("question") or r["prompt"])
                leaked.setdefault(key, []).append(row["name"])
    if not read:
        return "No run above has its answers (reports/eval_answers.jsonl) on record."

    def lines(found: dict[tuple[str, str, str], list[str]], headers: str) -> list[str]:
        out = [headers, "|---|---|---|---:|---|"]
        for (ident, kind, text), names in sorted(found.items(), key=lambda item: (-len(item[1]), item[0][0])):
            shown = text.replace("|", "\\|").replace("\n", " ")
            out.append(f"| {ident} | {kind} | {shown} | {len(names)} | {', '.join(f'`{n}`' for n in names)} |")
        return out if found else [f"None in any of the {read} runs."]

    return "\n".join(
        [f"Over the {read} runs whose answers are on record.", "", "Held-out identity questions answered without the "
         "new name (neutral system prompt):", ""]
        + lines(missed, "| id | category | question | runs | which |")
        + ["", "General prompts and benchmark questions answered with the new name (the name leak):", ""]
        + lines(leaked, "| id | kind | prompt | runs | which |")
    )  # fmt: skip


def _order(value: Any) -> tuple[int, float, str]:
    """Numbers by value, anything else (strings, lists, missing) by its JSON text after them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0.0, json.dumps(value))


def _param(value: Any) -> str:
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _pct(value: float) -> str:
    return f"{value:.1%}"


def document(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    baseline = rows[0]
    ev = baseline["metrics"]["metrics/eval.json"]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    options = "".join(f" --{name} {value}" for name, value in (("rev", args.rev), ("num", args.num)) if value)
    options += " --spread" if args.spread else ""
    options += " --misses" if args.misses else ""
    options += (" --only " + " ".join(args.only)) if args.only else ""
    options += (" --runs " + " ".join(shlex.quote(spec) for spec in args.runs)) if args.runs else ""
    origin = (
        f"the metrics files of {len(rows)} pipeline run{'s' if len(rows) > 1 else ''} (one folder each)"
        if args.runs
        else "`dvc exp show --json`"
    )
    spread_part = (
        f"""
## Spread over these runs

{spread_section(rows)}
"""
        if args.spread
        else ""
    )
    misses_section = (
        f"""
## Question by question

Which questions the runs above get wrong, and how many of them do.

{misses(rows)}
"""
        if args.misses
        else ""
    )
    return f"""# {args.title}

Generated by `python scripts/sweep_table.py -o {args.output.as_posix()}{options}` from {origin} on
{stamp} ({platform.machine()}, {os.cpu_count()} CPU cores), after `{args.command}`. {_baseline_note(rows, args)} \
Held-out identity questions: {ev["questions"]}; general prompts: {ev["general_prompts"]};
benchmark questions: {ev.get("benchmark_questions", "–")}.

Identity (`metrics/eval.json` `identity.trained`): share of held-out answers that use the new name (strict
match) under the neutral system prompt, with no system message ("default": the model's own template, which
training rewrites), and under the base model's original default system message given explicitly ("base's
default"); the worst old-name rate over those settings; the share of `maker` questions whose answer names
`identity.creator`; the share of distinct trained answers (neutral), low when identity answers collapse to one
canned line. General ability (`general`, `benchmark`): generative accuracy on the shipped benchmark, base →
trained, the paired difference with its 95% bootstrap interval and McNemar's exact p (above 0.05: not
significant), the length-normalized multiple-choice difference, the mean per-token KL(base ‖ trained) on the
base model's answers to the general prompts, the trained model's answer length as a multiple of the base's,
and the share of general answers that name the new identity unasked.

{table(rows)}
{spread_part}{misses_section}"""


def _baseline_note(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    if args.runs:
        return "Each row is one run of the whole pipeline; the columns show the params that differ between them."
    baselines = list(dict.fromkeys(row.get("baseline", row["rev"])[:7] for row in rows))
    if len(baselines) == 1:
        return (
            f"Baseline commit `{baselines[0]}`; every other row is a DVC experiment on top of it, with only the "
            "listed params changed."
        )
    return (
        f"Baseline commits {', '.join(f'`{b}`' for b in baselines)}; a row named by a commit is that commit's own run, "
        "every other row a DVC experiment on top of one of them, with only the listed params changed (the params of "
        "the commits differ only where a column shows it)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="write a markdown document here instead of printing")
    parser.add_argument("--command", default="bash scripts/sweep.sh ...", help="the sweep command, for the record")
    parser.add_argument("--title", default="Sweep results", help="the document's heading")
    parser.add_argument("--rev", help="the baseline commit whose experiments to show (default: HEAD)")
    parser.add_argument("--num", type=int, help="also the experiments of the commits before it (dvc exp show -n)")
    parser.add_argument("--spread", action="store_true", help="add the mean and worst of each measure over the runs")
    parser.add_argument("--misses", action="store_true", help="add the questions the runs miss (or leak the name on)")
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="LABEL=FOLDER",
        help="rows from these project folders' params and metrics instead of `dvc exp show`",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="keep these rows only, in the table's order (experiment names, or the baseline's short commit)",
    )
    args = parser.parse_args()
    rows = runs(args.runs) if args.runs else experiments(args.rev, args.num or 1)
    if args.only:
        missing = sorted(set(args.only) - {row["name"] for row in rows})
        if missing:
            raise SystemExit(f"sweep_table: --only: no finished run named {', '.join(missing)}")
        rows = [row for row in rows if row["name"] in args.only]
    if not rows:
        raise SystemExit("sweep_table: no finished experiments (dvc exp show lists none with metrics/eval.json)")
    if args.output is None:
        print(table(rows) + (f"\n\n{misses(rows)}" if args.misses else ""))
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".tmp-{args.output.name}")
    tmp.write_text(document(rows, args), encoding="utf-8")
    tmp.replace(args.output)
    print(f"wrote {args.output} ({len(rows)} runs)", file=sys.stderr)


if __name__ == "__main__":
    main()
