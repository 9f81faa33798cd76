"""Render docs/bad-input.md: run every bad-input case of tests/test_bad_input.py and record what it prints.

    python scripts/bad_input_catalogue.py          # rewrite docs/bad-input.md
    python scripts/bad_input_catalogue.py --check  # exit 1 if it is out of date

Builds the tiny test model, reproduces the tiny pipeline once in a temporary folder (about a minute on
2 cores), then runs each case through its stage script. A case that does not behave as promised
(exit code 2, one error line matching its pattern, nothing written) stops the script: the catalogue
only ever lists messages the tests accept. The sections on `dvc repro`, the operating system and concurrent
runs are fixed text in tests/test_bad_input.py, each claim checked by tests/test_repro_safety.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from identity_dpo.atomic import write_text  # noqa: E402
from stage_harness import clean_project  # noqa: E402
from test_bad_input import CASES, CATALOGUE, problems, render_catalogue, run_all  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402


class _Folders:
    """The one method of pytest's tmp_path_factory that clean_project uses."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with docs/bad-input.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bad-input-") as scratch:
        folders = _Folders(Path(scratch))
        base = clean_project(folders, build_tiny_model(folders.mktemp("tiny-model")))
        outcomes = run_all(base, folders.mktemp("cases"))
    failed = {case.id: found for case in CASES if (found := problems(case, outcomes[case.id]))}
    for case_id, found in failed.items():
        print(f"{case_id}: {'; '.join(found)}\n  {outcomes[case_id].message}", file=sys.stderr)
    if failed:
        return 1
    text = render_catalogue(outcomes)
    if args.check:
        current = CATALOGUE.read_text(encoding="utf-8") if CATALOGUE.is_file() else ""
        print("docs/bad-input.md is " + ("current" if current == text else "out of date"))
        return 0 if current == text else 1
    write_text(CATALOGUE, text)
    print(f"wrote {CATALOGUE.relative_to(ROOT)} ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
