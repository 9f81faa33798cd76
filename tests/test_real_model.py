"""The real effect, with the real shipped model: the default `dvc repro` changes the identity.

Slow (about 10 minutes on 2 CPU cores); `.ci/run` runs it. `-m "not slow"` skips it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_copy import make_copy, run


@pytest.mark.slow
def test_default_pipeline_gives_the_new_identity(tmp_path: Path) -> None:
    project = make_copy(tmp_path / "project")
    run(project, ["dvc", "repro"])
    metrics = json.loads((project / "metrics/eval.json").read_text())
    base, trained = metrics["identity"]["base"]["neutral"], metrics["identity"]["trained"]["neutral"]
    assert base["new_name_rate"] == 0.0
    assert trained["new_name_rate"] >= 0.9, metrics
    assert trained["old_name_rate"] <= 0.05, metrics
    # General ability: most of the base model's answers stay likely under the trained model.
    assert metrics["general"]["mean_token_kl"] < 1.0, metrics
    # ... and the trained model does not cut its general answers short (trained on short answers, it would).
    assert metrics["general"]["answer_length_ratio"] > 0.5, metrics
