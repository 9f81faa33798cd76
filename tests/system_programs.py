"""System programs that some tests start for real (not Python packages), and what a test does without one.

`bash scripts/test.sh` installs them with apt-get when it can (as root, or with passwordless sudo). Where one is
still missing, a test that needs it skips with one line naming the Debian package to install; under CI=true
(`.ci/run`) it fails instead, because CI must run every test.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"


@dataclass(frozen=True)
class Program:
    """A program a test starts: the names or absolute paths it may have, and the Debian package that ships it."""

    what: str  # what the tests use it for
    names: tuple[str, ...]
    package: str

    def path(self) -> str | None:
        for name in self.names:
            if Path(name).is_absolute():
                if Path(name).is_file() and os.access(name, os.X_OK):
                    return name
            elif found := shutil.which(name):
                return found
        return None

    def reason(self) -> str:
        return (
            f"{self.names[0]} ({self.what}) is not installed: "
            f"apt-get install {self.package}, or run `bash scripts/test.sh` as root or with passwordless sudo"
        )


SSHD = Program("the SSH remote's server", ("/usr/sbin/sshd",), "openssh-server")
CHROMIUM = Program("renders the offline plots page", ("chromium", "chromium-browser"), "chromium")
GO = Program("runs the Ollama Modelfile template", ("go",), "golang-go")


def require(program: Program) -> str:
    """Inside a test or fixture: the program's path; skip (under CI=true: fail) when it is missing."""
    found = program.path()
    if found is not None:
        return found
    if IN_CI:
        pytest.fail(f"CI must install every system program the tests start: {program.reason()}")
    pytest.skip(program.reason())
