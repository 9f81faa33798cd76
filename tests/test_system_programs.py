"""tests/system_programs.py: a missing system program skips a test with one line naming its package, except in CI."""

from __future__ import annotations

import sys

import pytest

import system_programs
from system_programs import Program, require

MISSING = Program("nothing real", ("identity-dpo-no-such-program", "/nonexistent/identity-dpo"), "some-package")
PRESENT = Program("this interpreter", ("/nonexistent/python", sys.executable), "python3")


def test_a_present_program_is_found_by_name_or_absolute_path() -> None:
    assert require(PRESENT) == sys.executable
    assert Program("sh", ("sh",), "dash").path() is not None


def test_a_missing_program_skips_with_one_line_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_programs, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(MISSING)
    reason = str(skipped.value)
    assert "apt-get install some-package" in reason and "scripts/test.sh" in reason and "\n" not in reason


def test_in_ci_a_missing_program_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_programs, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI must install .*apt-get install some-package"):
        require(MISSING)
