"""Atomic outputs: a stage's results appear complete or not at all.

Everything is first written next to its final place (same filesystem, so the final
`os.replace` is atomic) and moved in only when complete. A killed stage leaves at most a
hidden `.tmp-*` sibling behind, which the next run of the stage removes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TMP_PREFIX = ".tmp-"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_stale_temporaries(final: Path) -> None:
    """Remove temporaries an interrupted earlier run left beside `final`."""
    if final.parent.is_dir():
        for leftover in final.parent.glob(f"{_TMP_PREFIX}{final.name}-*"):
            _remove(leftover)


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent))
    try:
        yield tmp
        if final.exists() or final.is_symlink():
            # A folder cannot be replaced in one step: park the old one first, so a crash
            # between the two renames still leaves one complete version on disk.
            parked = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent))
            os.replace(final, parked / "old")
            os.replace(tmp, final)
            _remove(parked)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Yield a file handle whose content replaces `final` only once it is closed without error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_temporaries(final)
    fd, name = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{final.name}-", dir=final.parent)
    tmp = Path(name)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as handle:
        handle.write(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
