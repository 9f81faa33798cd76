"""Identity conversations in the `mrfakename/identity` schema, checked row by row.

A row is `{"conversations": [{"from": "human" | "gpt", "value": str}, ...]}`. The prompt of
a row is its last human turn, with the turns before it kept as context (the lesson's recipe);
a trailing gpt turn is the data set's own answer and is not used, since the pairs are the
model's own answers.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identity_dpo.atomic import write_jsonl
from identity_dpo.errors import DataError, SourceError, os_error_message
from identity_dpo.sources import Source, check_hub_reachable, hub_unreachable, parse_source

ROLES = {"human": "user", "gpt": "assistant"}
MAX_TURN_CHARS = 8_000  # far above any identity exchange; a longer turn is a broken row
MAX_ROW_CHARS = 32_000  # all turns of one row together: a longer row is a broken (or pasted) file
LOCAL_SUFFIXES = (".jsonl", ".json")  # JSON lines, or one JSON list of rows

Message = dict[str, str]


@dataclass(frozen=True)
class Prompt:
    """What the model is asked: context turns and the final user turn, as chat messages."""

    id: str
    messages: list[Message]

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


@dataclass
class DataReport:
    rows: int = 0
    used: int = 0
    skipped: int = 0
    multi_turn: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, for the log

    def as_metrics(self) -> dict[str, int]:
        return {"rows": self.rows, "used": self.used, "skipped": self.skipped, "multi_turn": self.multi_turn}


def row_to_prompt(row: Any, row_id: str) -> Prompt:
    """Check one row against the schema and turn it into a Prompt; raise DataError saying what is wrong."""
    if not isinstance(row, dict):
        raise DataError(f"expected an object with a 'conversations' list, got {type(row).__name__}")
    if "conversations" not in row:
        keys = ", ".join(map(repr, row)) or "none"
        raise DataError(f"missing key 'conversations' (keys found: {keys})")
    turns = row["conversations"]
    if not isinstance(turns, list) or not turns:
        raise DataError("'conversations' must be a non-empty list of turns")
    messages: list[Message] = []
    for i, turn in enumerate(turns):
        where = f"turn {i}"
        if not isinstance(turn, dict) or set(turn) != {"from", "value"}:
            found = sorted(turn) if isinstance(turn, dict) else type(turn).__name__
            raise DataError(f"{where}: expected exactly the keys 'from' and 'value', got {found}")
        if turn["from"] not in ROLES:
            raise DataError(f"{where}: 'from' must be 'human' or 'gpt', got {turn['from']!r}")
        value = turn["value"]
        if not isinstance(value, str):
            raise DataError(f"{where}: 'value' must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: 'value' is empty")
        _refuse_lone_surrogates(value, f"{where}: 'value'")
        if len(value) > MAX_TURN_CHARS:
            raise DataError(f"{where}: 'value' has {len(value)} characters (at most {MAX_TURN_CHARS})")
        messages.append({"role": ROLES[turn["from"]], "content": value.strip()})
    total = sum(len(m["content"]) for m in messages)
    if total > MAX_ROW_CHARS:
        raise DataError(f"the turns have {total} characters together (at most {MAX_ROW_CHARS})")
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise DataError("no human turn: the prompt is the last human turn")
    return Prompt(row_id, messages[: last_user + 1])


def read_rows(source: Source, split: str) -> Iterator[tuple[str, Any]]:
    """Yield (location, raw row) from a local .jsonl/.json file or a hub data set."""
    if source.kind == "hf":
        yield from _read_hub_rows(source, split)
        return
    path = Path(source.name)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # some editors start UTF-8 files with a BOM
    except OSError as exc:  # unreadable (permissions), a broken disk, a FIFO that fails: one line, not a traceback
        raise DataError(os_error_message(exc)) from None
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    if path.suffix == ".json":
        try:
            rows = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, nesting thousands deep
            raise DataError(f"{path}: unreadable JSON: {_json_limit(exc)}") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
        yield from ((f"{path}: row {i}", row) for i, row in enumerate(rows))
        return
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            yield where, json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            yield where, _Unreadable(f"not UTF-8 (byte {exc.start} of the line)")
        except json.JSONDecodeError as exc:
            yield where, _Unreadable(f"invalid JSON: {exc.msg} at column {exc.colno}")
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, nesting thousands deep
            yield where, _Unreadable(f"unreadable JSON: {_json_limit(exc)}")


def _json_limit(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return "a number too long to read" if "digits" in str(exc) else " ".join(str(exc).split())[:120]


@dataclass(frozen=True)
class _Unreadable:
    reason: str


def _read_hub_rows(source: Source, split: str) -> Iterator[tuple[str, Any]]:
    check_hub_reachable("data.source")  # before the import: datasets reads the offline switch then
    import datasets  # imported here: loading it costs seconds that local sources do not need

    try:
        dataset = datasets.load_dataset(source.name, revision=source.revision, split=split)
    except (ConnectionError, OSError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise hub_unreachable(source, "data.source", exc, "the shipped data/source/identity.jsonl") from None
    except ValueError as exc:  # e.g. an unknown split
        raise SourceError(f"data.source: {source}: {exc}") from None
    for i, row in enumerate(dataset):
        yield f"{source} [{split}] row {i}", row


def load_prompts(spec: str, split: str, on_bad_row: str) -> tuple[list[Prompt], DataReport]:
    """Load and check every row; skip (and count) or refuse malformed rows as `on_bad_row` says.

    Every error names the param (data.source), the file and, for a row, its line and what is wrong.
    """
    source = parse_source(spec, "data.source", allowed=("hf", "local"))
    suffix = Path(source.name).suffix.lower()
    if source.kind == "local" and not Path(source.name).is_dir() and suffix not in LOCAL_SUFFIXES:
        raise DataError(
            f"data.source: {source.name}: expected a {' or '.join(LOCAL_SUFFIXES)} file in the mrfakename/identity "
            f"schema, got {suffix or 'a name without a suffix'}"
        )
    try:
        prompts, report = _check_rows(read_rows(source, split), on_bad_row)
    except DataError as exc:
        raise DataError(f"data.source: {exc}") from None
    if not prompts:
        first = f"; the first: {report.problems[0]}" if report.problems else ""
        raise DataError(f"data.source: {spec}: no usable rows ({report.rows} read, {report.skipped} malformed){first}")
    return prompts, report


def _check_rows(rows: Iterable[tuple[str, Any]], on_bad_row: str) -> tuple[list[Prompt], DataReport]:
    report = DataReport()
    prompts: list[Prompt] = []
    for index, (where, row) in enumerate(rows):
        report.rows += 1
        try:
            if isinstance(row, _Unreadable):
                raise DataError(row.reason)
            prompt = row_to_prompt(row, f"row-{index:05d}")
        except DataError as exc:
            if on_bad_row == "fail":
                raise DataError(f"{where}: {exc} (set data.on_bad_row: skip to skip such rows)") from None
            report.skipped += 1
            if len(report.problems) < 20:
                report.problems.append(f"{where}: {exc}")
            continue
        prompts.append(prompt)
        report.multi_turn += len(prompt.messages) > 1
    report.used = len(prompts)
    return prompts, report


def write_prompts(path: Path, prompts: Iterable[Prompt]) -> None:
    write_jsonl(path, ({"id": p.id, "messages": p.messages} for p in prompts))


def read_prompts(path: str | Path) -> list[Prompt]:
    """Read prompts written by `write_prompts` (the fetch_data stage's output)."""
    try:
        rows = list(read_rows(Source("local", str(path)), "train"))
    except DataError as exc:  # missing or empty: the previous stage did not run, or its output was removed
        raise DataError(f"{exc} (an output of the fetch_data stage: `dvc repro` makes it again)") from None
    prompts = []
    for where, row in rows:
        if isinstance(row, _Unreadable) or not isinstance(row, dict) or set(row) != {"id", "messages"}:
            raise DataError(f"{where}: not a prepared prompt (rerun the fetch_data stage)")
        prompts.append(Prompt(row["id"], row["messages"]))
    return prompts


def read_jsonl_records(path: str | Path, required: dict[str, type], what: str) -> list[dict[str, Any]]:
    """Read a small JSON-lines file whose rows must carry the `required` keys and types."""
    return [row for _, row in read_jsonl_located(path, required, what)]


def read_jsonl_located(path: str | Path, required: dict[str, type], what: str) -> list[tuple[str, dict[str, Any]]]:
    """As read_jsonl_records, with each row's location ("file: line N") for messages about a row."""
    records = []
    for where, row in read_rows(Source("local", str(path)), "train"):
        if isinstance(row, _Unreadable):
            raise DataError(f"{where}: {row.reason}")
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object ({what})")
        for key, kind in required.items():
            if not isinstance(row.get(key), kind) or (kind is str and not row[key].strip()):
                raise DataError(f"{where}: expected key {key!r} with a non-empty {kind.__name__} ({what})")
        _refuse_lone_surrogates(row, where)
        records.append((where, row))
    return records


def _refuse_lone_surrogates(value: Any, where: str) -> None:
    """JSON may spell half of a surrogate pair ("\\ud83d"); Python keeps it, and writing it as UTF-8 fails later,
    after the model has answered. Refuse the row now, naming it."""
    if isinstance(value, str):
        bad = next((i for i, c in enumerate(value) if "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            raise DataError(f"{where}: a lone surrogate escape ({value[bad]!a}) at character {bad}, which is not "
                            "text; write the character itself or a complete surrogate pair")  # fmt: skip
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key, where)
            _refuse_lone_surrogates(item, where)
    elif isinstance(value, list):
        for item in value:
            _refuse_lone_surrogates(item, where)
