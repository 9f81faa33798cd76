"""scripts/summary.py: the end of scripts/run.sh, from the metrics files, within 100 columns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _rates(new: float, old: float = 0.0, creator: float = 0.0) -> dict:
    return {"new_name_rate": new, "new_name_rate_normalized": new, "old_name_rate": old,
            "creator_rate_on_maker_questions": creator}  # fmt: skip


def _summary(folder: Path) -> str:
    return subprocess.run([sys.executable, str(ROOT / "scripts/summary.py"), str(folder)], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


def test_summary_fits_100_columns_and_shows_the_results(tmp_path: Path) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert "run `dvc repro`" in _summary(tmp_path)  # nothing measured yet
    (tmp_path / "metrics").mkdir()
    comparison = {"base": 0.352, "trained": 0.341, "difference": -0.011, "difference_ci_low": -0.05,
                  "difference_ci_high": 0.03, "mcnemar_p": 0.61}  # fmt: skip
    evaluation = {
        "identity": {
            "base": {s: _rates(0.0, 0.12 if s == "default" else 0.0) for s in ("neutral", "default", "base_default")},
            "trained": {"neutral": _rates(0.985, creator=0.93), "default": _rates(0.97), "base_default": _rates(0.955),
                        "neutral_by_category": {"name": 1.0}},
        },
        "general": {"mean_token_kl": 0.041, "answer_length_ratio": 0.93, "name_leak_rate": 0.004},
        "benchmark": {"generative": comparison},
        "benchmark_questions": 270,
    }  # fmt: skip
    (tmp_path / "metrics/eval.json").write_text(json.dumps(evaluation))
    export = {"llama_cpp": {"f16": {"new_name_rate": 0.985}, "q8_0": {"new_name_rate": 0.97}}}
    (tmp_path / "metrics/export.json").write_text(json.dumps(export))
    text = _summary(tmp_path)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "new name, old default system prompt        0%      96%" in text
    assert "35.2% -> 34.1% (-1.1%, 95% [-5.0%, +3.0%], McNemar p 0.61); 270 questions" in text
    assert "KL 0.041 nats/token, answer length 0.93x, new name in 0.4% of general answers" in text
    assert "f16 98%, q8_0 97%" in text and "models/dpo" in text
