"""Atomic outputs: a stage's results appear complete or not at all.

Everything is first written next to its final place (same filesystem, so the final rename is
atomic) and moved in only when complete. A folder that already exists is swapped with the new
one in a single step (Linux `renameat2(RENAME_EXCHANGE)`), so there is no moment without a
complete version in place. A killed stage leaves at most hidden `.tmp-*` siblings behind, which
the next run of the stage removes.

A stage with several outputs stages all of them with `atomic_outputs()` and moves them in one
after another only once every one is complete, so a kill before that point leaves every old
output untouched. (Several renames cannot be one atomic step; the window between them is a few
microseconds, and DVC never records a stage that did not finish.)

Every temporary is flock()ed by the process writing it, for as long as it exists: a second process (another
run of the stage) removes only leftovers nobody holds, never a live run's work. The lock goes with the
process, so a SIGKILLed run's leftovers are free at once. Temporaries get the permissions a plain `open`
would give (0o666 / 0o777 minus the umask), not tempfile's private 0600 / 0700, because they become the
outputs a team shares.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TMP_PREFIX = ".tmp-"
_PARKED = "parked-"  # a folder moved aside by the fallback two-step replace; holds the old version as "old"
_LIVE: set[Path] = set()  # temporaries this process is still writing (never "stale")
_HELD: dict[Path, int] = {}  # temporary -> the descriptor holding its flock while this process owns it


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races with
    other threads creating files); falls back to set-and-restore where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _hold(tmp: Path) -> None:
    """Lock a temporary this process just created, and give it the permissions of an ordinary new file/folder."""
    fd = os.open(tmp, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # just created by this process: nobody else can hold it
    os.fchmod(fd, (0o777 if tmp.is_dir() else 0o666) & ~current_umask())
    _HELD[tmp] = fd


def _release(tmp: Path) -> None:
    fd = _HELD.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def in_use(path: Path) -> bool:
    """Whether another live process holds `path`'s lock (its temporary is still being written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone, or unreadable: not ours to judge, and nothing to remove
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_stale_temporaries(final: Path) -> None:
    """Remove temporaries an interrupted earlier run left beside `final`.

    If that run was killed halfway through the fallback two-step replace of a folder, the old
    version is moved back first, so it is never lost.
    """
    if not final.parent.is_dir():
        return
    for leftover in sorted(final.parent.glob(f"{_TMP_PREFIX}{final.name}-*")):
        if leftover in _LIVE or in_use(leftover):  # another run is still writing it
            continue
        old = leftover / "old"
        if leftover.name.startswith(f"{_TMP_PREFIX}{final.name}-{_PARKED}") and old.exists():
            if not (final.exists() or final.is_symlink()):
                os.replace(old, final)
        _remove(leftover)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux >= 3.15, glibc >= 2.28); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0  # EINVAL / ENOSYS (a filesystem without it): use the fallback


def _move_into_place(tmp: Path, final: Path) -> None:
    """Put the complete `tmp` at `final`, replacing what is there."""
    if tmp.is_dir() and (final.exists() or final.is_symlink()):
        if final.is_dir() and not final.is_symlink() and _exchange(tmp, final):
            _remove(tmp)  # now holds the old version
            return
        # Fallback: park the old version first. A kill between the two renames leaves it in the
        # parked folder, and clear_stale_temporaries puts it back.
        parked = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-{_PARKED}", dir=final.parent))
        _hold(parked)
        try:
            os.replace(final, parked / "old")
            os.replace(tmp, final)
            _remove(parked)
        finally:
            _release(parked)
    else:
        os.replace(tmp, final)


class StagedOutputs:
    """Temporary versions of several outputs, moved into place together by `atomic_outputs`."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final), in the order they were staged

    def _claim(self, final: Path) -> None:
        if any(existing == final for _, existing in self._staged):
            raise ValueError(f"{final} is staged twice")
        final.parent.mkdir(parents=True, exist_ok=True)
        clear_stale_temporaries(final)

    def _add(self, tmp: Path, final: Path) -> None:
        self._staged.append((tmp, final))
        _LIVE.add(tmp)
        _hold(tmp)

    def dir(self, final: str | Path) -> Path:
        """An empty temporary folder that becomes `final`."""
        final = Path(final)
        self._claim(final)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent))
        except OSError as exc:  # EROFS, EACCES, ENOSPC: say which output, not which random temporary name
            exc.filename = str(final)
            raise
        self._add(tmp, final)
        return tmp

    @contextmanager
    def open(self, final: str | Path, mode: str = "w") -> Iterator[Any]:
        """A file handle whose content becomes `final`."""
        final = Path(final)
        self._claim(final)
        try:
            fd, name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent)
        except OSError as exc:
            exc.filename = str(final)
            raise
        self._add(Path(name), final)
        encoding = None if "b" in mode else "utf-8"
        try:
            with os.fdopen(fd, mode, encoding=encoding) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            _name_the_output(exc, [final])
            raise

    def write_text(self, final: str | Path, text: str) -> None:
        with self.open(final) as handle:
            handle.write(text)

    def write_json(self, final: str | Path, data: Any) -> None:
        self.write_text(final, _json_text(data))

    def write_jsonl(self, final: str | Path, rows: Iterable[Any]) -> None:
        with self.open(final) as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def _commit(self) -> None:
        while self._staged:
            tmp, final = self._staged[0]
            _move_into_place(tmp, final)
            self._staged.pop(0)
            _LIVE.discard(tmp)
            _release(tmp)

    def _discard(self) -> None:
        for tmp, _ in self._staged:
            _remove(tmp)
            _LIVE.discard(tmp)
            _release(tmp)
        self._staged.clear()


@contextmanager
def atomic_outputs() -> Iterator[StagedOutputs]:
    """Stage several outputs; they replace the old ones only if the block completes without error."""
    staged = StagedOutputs()
    try:
        yield staged
        staged._commit()
    except BaseException as exc:
        if isinstance(exc, OSError):
            _name_the_output(exc, [final for _, final in staged._staged], staged._staged)
        staged._discard()
        raise


def _name_the_output(exc: OSError, finals: list[Path], staged: Sequence[tuple[Path, Path]] = ()) -> None:
    """A failed write (ENOSPC, EIO) names no file, or names a temporary; the user needs the output's own name."""
    for tmp, final in staged:
        if exc.filename is not None and str(exc.filename).startswith(str(tmp)):
            exc.filename = str(final) + str(exc.filename)[len(str(tmp)) :]
            return
    if exc.filename is None and finals:
        exc.filename = ", ".join(dict.fromkeys(str(f) for f in finals))


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `final` in one step."""
    with atomic_outputs() as staged:
        yield staged.dir(final)


@contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Yield a file handle whose content replaces `final` only once it is closed without error."""
    with atomic_outputs() as staged, staged.open(final, mode) as handle:
        yield handle


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, _json_text(data))


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def jsonl_rows(text: str) -> list[Any]:
    """The rows of JSON Lines text as write_jsonl writes it: one JSON value per line, blank lines skipped.
    Lines end at "\n" only, not where str.splitlines() ends them: it also splits at U+2028, U+0085, form feeds and
    other characters that json.dumps(ensure_ascii=False) leaves raw inside strings, which a sampled answer can hold."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def read_jsonl(path: str | Path) -> list[Any]:
    """The rows write_jsonl wrote to `path` (jsonl_rows)."""
    return jsonl_rows(Path(path).read_text(encoding="utf-8"))
