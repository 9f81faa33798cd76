"""One exception type for every problem a user can fix: bad params, bad data, bad sources."""

from __future__ import annotations


class PipelineError(Exception):
    """A user-facing error: the message names the file, row or key and what was expected.

    Stages catch it at the top, print the message without a traceback and exit non-zero,
    because a traceback buries the one line the user has to act on.
    """


class ParamsError(PipelineError):
    """params.yaml is malformed or a value is out of range."""


class DataError(PipelineError):
    """An input data file is missing, unreadable or does not follow its schema."""


class SourceError(PipelineError):
    """A data or model source cannot be resolved (unknown scheme, unreachable hub, missing folder)."""
