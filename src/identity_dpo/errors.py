"""One exception type for every problem a user can fix: bad params, bad data, bad sources.

`os_error_message` turns what the operating system refuses (a full disk, a read-only folder, a folder where a
file belongs) into the same kind of one line: which file, what happened, what to do.
"""

from __future__ import annotations

import errno


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


class TrainingError(PipelineError):
    """Training ran but its result is unusable (e.g. non-finite weights); nothing was moved into place."""


class BusyError(PipelineError):
    """Another run of the same stage is still writing the same outputs."""


# errno -> (what happened, what to do). Every stage writes its outputs to temporaries first, so whatever the
# error, the previous outputs are still in place: the advice only has to say how to make the next run work.
_OS_ADVICE: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "no space left on the device",
        "free some space (`dvc gc` drops cache entries no commit uses) "
        "and run again; the previous outputs are untouched",
    ),
    errno.EDQUOT: ("disk quota exceeded", "free some space or raise the quota and run again"),
    errno.EACCES: (
        "permission denied",
        "make it readable/writable for this user (DVC's hardlink cache keeps "
        "outputs read-only: `dvc unprotect <path>`), or run as a user who may write there",
    ),
    errno.EPERM: ("operation not permitted", "check the file's owner and permissions"),
    errno.EROFS: ("read-only filesystem", "run the pipeline from a writable copy of the project"),
    errno.EISDIR: ("is a folder, expected a file", "remove or rename the folder, or point the param at a file"),
    errno.ENOTDIR: ("a part of the path is a file, expected a folder", "remove or rename that file"),
    errno.ENOENT: ("not found", "check the path (paths are relative to the project folder)"),
    errno.EIO: ("input/output error", "the disk or network filesystem failed: check it and run again"),
    errno.EMFILE: ("too many open files", "raise the limit (`ulimit -n`) and run again"),
    errno.ENFILE: ("too many open files in the system", "close other programs and run again"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
}


def os_error_message(exc: OSError) -> str:
    """`<file>: <what happened>; <what to do>` for an OSError (the file is left out when the OS did not say)."""
    happened, todo = _OS_ADVICE.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check it and run again"))
    files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    where = " -> ".join(files)
    return f"{where}: {happened}; {todo}" if where else f"{happened}; {todo}"
