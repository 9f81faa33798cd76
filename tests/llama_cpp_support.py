"""Whether the export stage can run here: llama-cpp-python built and llama.cpp's converter unpacked.

`bash scripts/setup_export.sh` installs both (scripts/setup.sh calls it; it needs cmake and g++). The tests that
run the export or package stage use `needs_export` / `require_export()`: where the build is missing they skip with
one line saying how to install it; under CI=true (.ci/run installs cmake and g++ and builds it) they fail instead.
Every other tiny-model test reproduces up to `evaluate` and does not need llama.cpp at all.
"""

from __future__ import annotations

import importlib.util

import pytest

from system_programs import IN_CI

INSTALL = "bash scripts/setup_export.sh"


def _missing() -> str | None:
    """None when the export stage can run, else what is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: run `{INSTALL}`"
    from identity_dpo.errors import PipelineError
    from identity_dpo.export import check_bindings, find_converter

    try:
        check_bindings()
        find_converter()
    except PipelineError as exc:
        return str(exc)
    return None


MISSING = _missing()
REASON = (
    f"needs llama.cpp for the export stage: {MISSING} (the build needs cmake and g++: apt-get install cmake g++; "
    "`bash scripts/test.sh` installs them as root or with passwordless sudo)"
)
# Skips where the build is missing, except in CI: there the test runs and fails on the missing build.
needs_export = pytest.mark.skipif(MISSING is not None and not IN_CI, reason=REASON)


def require_export() -> None:
    """Inside a test or fixture: skip (or, in CI, fail) when the export stage cannot run here."""
    if MISSING is None:
        return
    if IN_CI:
        pytest.fail(f"CI must build llama.cpp for the export stage ({INSTALL}, .ci/run): {MISSING}")
    pytest.skip(REASON)
