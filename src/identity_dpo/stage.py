"""What every stage script shares: validated params, clear errors, one run at a time, and a wall-time log.

`run_stage` is the top-level handler: every problem a user can fix, including what the operating system
refuses (a full disk, a read-only folder, an unreadable file), ends as one line
`<stage>: error: <file or key>: <what happened>; <what to do>` and exit code 2.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # a dependency of dvc

from identity_dpo.errors import BusyError, PipelineError, os_error_message
from identity_dpo.params import Params, load_params

# Always the working directory's params.yaml: the file DVC tracks, so a stage never runs params DVC does not see.
PARAMS_FILE = Path("params.yaml")
TIMINGS_FILE = Path("logs/stage_times.jsonl")  # not a DVC output: wall time differs between identical runs
EXIT_USER_ERROR = 2


def run_stage(name: str, main: Callable[[Params], None]) -> None:
    """Validate all params, run `main` alone (one run of a stage at a time), and turn user errors into one line
    on stderr and exit code 2."""
    try:
        params = load_params(PARAMS_FILE)  # every section, before any model is loaded or any file is created
        with stage_lock(name), scratch_space(name):
            main(params)
    except PipelineError as exc:
        _fail(name, str(exc))
    except OSError as exc:  # ENOSPC, EACCES, EROFS, EISDIR...: which file, what happened, what to do
        _fail(name, os_error_message(exc))
    except UnicodeEncodeError as exc:  # a lone surrogate that slipped past the input checks, met at write time
        _fail(name, f"cannot write {exc.object[exc.start:exc.end]!a} as UTF-8 ({exc.reason}); an input row or "
                    "param holds a lone surrogate escape: fix it and run again")  # fmt: skip
    except MemoryError:
        _fail(name, "out of memory; lower the batch size or the token caps of this stage in params.yaml")
    _log_time(name)


def _fail(name: str, message: str) -> None:
    # One line, whatever the message quotes (a YAML parser's excerpt, a library's multi-line error).
    print(f"{name}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR) from None


def _log_time(name: str) -> None:
    # From process start, so the seconds include interpreter start-up and library imports.
    seconds = time.time() - psutil.Process().create_time()
    try:
        TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
        with TIMINGS_FILE.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"stage": name, "seconds": round(seconds, 1), "finished": time.time()}) + "\n")
    except OSError as exc:  # the outputs are in place; a timing log that cannot be written must not fail the stage
        print(f"{name}: warning: no timing logged: {os_error_message(exc)}", file=sys.stderr)
    print(f"{name}: done in {seconds:.1f} s", file=sys.stderr)


# --- where a run keeps its lock and its scratch files ----------------------------------------------------------


def state_dir(project: Path = Path(".")) -> Path:
    """Run state that is neither an output nor tracked: under DVC's own scratch folder (git- and DVC-ignored,
    one per experiment workspace), or, in a folder that is not a DVC project, a fixed folder per project path in
    the system temp folder. Either way the next run of a stage finds and cleans what a killed run left."""
    if (project / ".dvc").is_dir():
        return project / ".dvc/tmp/identity-dpo"
    key = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"identity-dpo-{key}"


@contextmanager
def stage_lock(name: str) -> Iterator[None]:
    """Hold `<state>/locks/<name>.lock` (flock) while the stage runs; a second run of it refuses with one line.

    Refusing rather than waiting: the second run would redo the same work on the same inputs. The lock is
    the kernel's, so a SIGKILLed run never leaves a stale lock behind. The file is never deleted (deleting a
    lock file while another process opens it lets two runs hold two different locks).
    """
    path = state_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BusyError(
            f"{path}: another run of {name} (pid {owner}) is still writing the same outputs; wait for it to end "
            "(or stop it) and run again"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def scratch_space(name: str) -> Iterator[Path]:
    """A scratch folder for the stage's temporary files (tempfile and child processes' TMPDIR point at it).

    Called under the stage's lock, so whatever is already there was left by a killed run: removed first.
    """
    folder = state_dir() / "scratch" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(folder.resolve())
    os.environ["TMPDIR"] = tempfile.tempdir
    try:
        yield folder
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)
