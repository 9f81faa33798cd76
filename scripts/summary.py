"""The end of `scripts/run.sh`: what the pipeline achieved, in under 100 columns, from the metrics files.

    python scripts/summary.py            # after `dvc repro`, also when every stage was up to date

It reads only committed or generated files (metrics/eval.json, metrics/export.json, params.yaml), so the
summary shows the same numbers whether the stages ran now or were already up to date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

WIDTH = 100


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pct(value: float) -> str:
    return f"{value:.0%}"


def summary(root: Path) -> str:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    ev = _read(root / "metrics/eval.json")
    if ev is None:
        return "summary: no metrics/eval.json yet: run `dvc repro` (scripts/run.sh) first"
    identity = params["identity"]
    lines = [f"identity-dpo: {', '.join(identity['old_names'])} -> {identity['new_name']} "
             f"(made by {identity['creator']})", ""]  # fmt: skip
    lines.append(f"{'held-out identity questions':<36}{'base':>9}{'trained':>9}")
    labels = {"neutral": "new name, neutral system prompt", "default": "new name, no system prompt",
              "base_default": "new name, old default system prompt"}  # fmt: skip
    for setting, label in labels.items():
        if setting in ev["identity"]["trained"]:
            base, trained = ev["identity"]["base"][setting], ev["identity"]["trained"][setting]
            lines.append(f"{label:<36}{_pct(base['new_name_rate']):>9}{_pct(trained['new_name_rate']):>9}")
    trained = ev["identity"]["trained"]
    worst_old = max(v["old_name_rate"] for k, v in trained.items() if not k.endswith("_by_category"))
    lines.append(f"{'old name (worst setting)':<36}{'':>9}{_pct(worst_old):>9}")
    if "creator_rate_on_maker_questions" in trained["neutral"]:
        maker = ev["identity"]["base"]["neutral"]["creator_rate_on_maker_questions"]
        lines.append(f"{'maker questions naming the creator':<36}{_pct(maker):>9}"
                     f"{_pct(trained['neutral']['creator_rate_on_maker_questions']):>9}")  # fmt: skip
    bench, general = ev.get("benchmark"), ev["general"]
    lines += ["", "general ability (trained vs base)"]
    if bench:
        gen = bench["generative"]
        lines.append(f"  benchmark: {gen['base']:.1%} -> {gen['trained']:.1%} ({gen['difference']:+.1%}, 95% "
                     f"[{gen['difference_ci_low']:+.1%}, {gen['difference_ci_high']:+.1%}], McNemar p "
                     f"{gen['mcnemar_p']:.2f}); {ev.get('benchmark_questions')} questions")  # fmt: skip
    lines.append(f"  KL {general['mean_token_kl']:.3f} nats/token, answer length {general['answer_length_ratio']:.2f}x"
                 + (f", new name in {general['name_leak_rate']:.1%} of general answers" if "name_leak_rate" in general
                    else ""))  # fmt: skip
    export = _read(root / "metrics/export.json")
    if export and export.get("llama_cpp"):
        rates = ", ".join(f"{kind} {_pct(row['new_name_rate'])}" for kind, row in export["llama_cpp"].items())
        lines += ["", f"exported GGUF in llama.cpp, new name (neutral): {rates}"]
    lines += [
        "",
        "model:   models/dpo (transformers + card), models/gguf (GGUF + Modelfile), models/adapter (LoRA)",
        "report:  reports/eval.md (every answer side by side); metrics/*.json",
        "next:    identity-dpo chat --compare   |   dvc exp run -S train.beta=0.1   |   dvc push",
    ]
    return "\n".join(_fit(line) for line in lines)


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print(summary(root))


if __name__ == "__main__":
    main()
