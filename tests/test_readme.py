"""README.md is a short user guide whose results come from the metrics files, and every document's links resolve.

The README's results table and docs/results.md are written by scripts/results_doc.py from metrics/*.json: a number
typed by hand, or metrics committed without regenerating them, fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/results_doc.py"
README = ROOT / "README.md"
MAX_LINES = 250
# [text](target) and ![alt](target); the target ends at the first space (a link title may follow) or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s[^)]*)?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def results_doc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, check=False
    )


def test_readme_table_and_results_doc_are_generated_from_the_committed_metrics() -> None:
    result = results_doc(ROOT, "--check")
    assert result.returncode == 0, f"run `python scripts/results_doc.py` and commit the result:\n{result.stderr}"


def test_a_changed_metric_makes_the_check_fail_until_regenerated(tmp_path: Path) -> None:
    for name in ("README.md", "params.yaml", "metrics", "docs/results.md"):
        source, dest = ROOT / name, tmp_path / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, dest) if source.is_dir() else shutil.copy2(source, dest)
    assert results_doc(tmp_path, "--check").returncode == 0
    eval_json = tmp_path / "metrics/eval.json"
    metrics = json.loads(eval_json.read_text())
    metrics["identity"]["trained"]["neutral"]["new_name_rate"] = 0.4321
    eval_json.write_text(json.dumps(metrics))

    stale = results_doc(tmp_path, "--check")
    assert stale.returncode == 1
    assert "README.md is out of date" in stale.stderr and "docs/results.md is out of date" in stale.stderr
    assert results_doc(tmp_path).returncode == 0
    regenerated = (tmp_path / "README.md").read_text()
    assert "| new name, neutral system prompt | 0.0% | 43.2% |" in _between_markers(regenerated)
    assert "43.2%" in (tmp_path / "docs/results.md").read_text()
    assert results_doc(tmp_path, "--check").returncode == 0
    outside = regenerated.replace(_between_markers(regenerated), "")
    assert outside == README.read_text().replace(_between_markers(README.read_text()), ""), "changed outside markers"


def _between_markers(readme: str) -> str:
    return readme.split("<!-- results:begin")[1].split("<!-- results:end -->")[0]


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("metrics/eval.json", "metrics/eval.json not found: run `dvc repro`"),
        ("README.md", "README.md needs one `<!-- results:begin"),
    ],
)
def test_missing_input_is_one_line_and_exit_2(tmp_path: Path, broken: str, message: str) -> None:
    for name in ("README.md", "params.yaml", "metrics"):
        source, dest = ROOT / name, tmp_path / name
        shutil.copytree(source, dest) if source.is_dir() else shutil.copy2(source, dest)
    path = tmp_path / broken
    if broken == "README.md":
        path.write_text("# a README without the results markers\n")
    else:
        path.unlink()
    result = results_doc(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"results_doc: error: {message}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "docs/results.md").exists()


def test_readme_is_short_and_names_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < MAX_LINES, f"README.md has {len(text.splitlines())} lines: move detail to docs/"
    commands = "\n".join(block for block in FENCE.findall(text))
    for command in ("bash scripts/run.sh", "bash scripts/test.sh"):
        assert re.search(rf"^{re.escape(command)}(\s|$)", commands, re.MULTILINE), f"{command} not in a code block"


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file(document: Path) -> None:
    text = FENCE.sub("", document.read_text())
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]
    missing = [t for t in targets if not (document.parent / t.split("#")[0]).exists()]
    assert not missing, f"{document.relative_to(ROOT)} links to files that do not exist: {missing}"


# docs/how-it-works.md's table of the main parameters: "| `section.key` / `other` | `value` / value | meaning |".
PARAMS_DOC = ROOT / "docs/how-it-works.md"
PARAM_ROW = re.compile(r"^\| (`[a-z_]+\.[^|]*`) \| ([^|]+) \| [^|]* \|$", re.MULTILINE)


def split_cells(text: str) -> list[str]:
    """Split "`a`, [x, y] / 1" into ["a", "[x, y]", "1"]: at ", " and " / " outside brackets and backticks."""
    items, current, depth, quoted, skip = [], "", 0, False, 0
    for i, char in enumerate(text):
        if skip:
            skip -= 1
            continue
        quoted ^= char == "`"
        depth += (char == "[") - (char == "]")
        separator = next((s for s in (", ", " / ") if text.startswith(s, i)), None)
        if separator and not quoted and depth == 0:
            items.append(current)
            current, skip = "", len(separator) - 1
        else:
            current += char
    return [item.strip().strip("`") for item in [*items, current]]


def stale_defaults(doc: str, params: dict[str, Any]) -> list[str]:
    """Every key of the table whose documented default is not params.yaml's. A key after the first one without a
    section of its own ("new_name" after "identity.old_names") is in the first one's section; wildcards ("launch.*")
    are skipped. Fails if the table is not found."""
    checked, stale = 0, []
    for keys_cell, values_cell in PARAM_ROW.findall(doc):
        keys, values = split_cells(keys_cell), split_cells(values_cell)
        values = values * len(keys) if len(values) == 1 else values
        assert len(keys) == len(values), f"docs/how-it-works.md: {keys_cell} has {len(keys)} keys, {values_cell!r}"
        parent = keys[0].rsplit(".", 1)[0]
        for key, documented in zip(keys, values, strict=True):
            full = key if key.split(".")[0] in params else f"{parent}.{key}"
            if "*" in full:
                continue
            actual = params
            for part in full.split("."):
                actual = actual[part]
            expected = yaml.safe_load(documented)
            if isinstance(actual, float):
                expected = float(documented)
            checked += 1
            if expected != actual:
                stale.append(f"{full}: documented {documented!r}, params.yaml {actual!r}")
    assert checked >= 20, f"the parameter table of docs/how-it-works.md was not found ({checked} keys read)"
    return stale


def test_the_parameter_table_shows_the_defaults_of_params_yaml(default_params: dict[str, Any]) -> None:
    assert stale_defaults(PARAMS_DOC.read_text(encoding="utf-8"), default_params) == []


def test_a_stale_default_in_the_parameter_table_is_caught(default_params: dict[str, Any]) -> None:
    assert split_cells("`[SmolLM, SmolLM2]` / `Deep Qwen`") == ["[SmolLM, SmolLM2]", "Deep Qwen"]
    assert split_cells("1e-3, 1, 4") == ["1e-3", "1", "4"]
    doc = PARAMS_DOC.read_text(encoding="utf-8")
    params = default_params
    params["train"]["lora"]["rank"] = 8  # the third key of its row, in the first key's section
    params["evaluate"]["backend"] = "vllm"  # the second key of a row with one value for both
    params["identity"]["other_claims"] = "keep"
    assert stale_defaults(doc, params) == [
        "identity.other_claims: documented 'drop', params.yaml 'keep'",
        "train.lora.rank: documented '16', params.yaml 8",
        "evaluate.backend: documented 'transformers', params.yaml 'vllm'",
    ]
