"""JSON Lines as the stages write and read them: a row's strings may hold any character.

Sampled answers (rehearsal answers at temperature 1) can contain U+2028 and other characters that
json.dumps(ensure_ascii=False) writes raw and that str.splitlines() treats as line ends; evaluate once read
data/pairs/pairs.jsonl that way and failed on such a pair.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from identity_dpo.atomic import jsonl_rows, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
# Every character str.splitlines() ends a line at, besides "\n" and "\r\n".
LINE_BREAKS_INSIDE_STRINGS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_rows_with_unicode_line_separators_round_trip(tmp_path: Path) -> None:
    rows = [
        {"id": f"row-{i}", "text": f"before{c}after", "chosen": [{"role": "assistant", "content": f"a{c}b"}]}
        for i, c in enumerate(LINE_BREAKS_INSIDE_STRINGS)
    ]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, rows)
    text = path.read_text(encoding="utf-8")
    assert "\u2028" in text, "the writer keeps the character raw (ensure_ascii=False): the case to handle"
    assert len(text.splitlines()) > len(rows), "str.splitlines() splits these rows (why jsonl_rows does not use it)"
    assert read_jsonl(path) == rows


def test_blank_lines_and_crlf_endings_are_read() -> None:
    assert jsonl_rows('{"a": 1}\r\n\n  \n{"b": "x\u2028y"}\n') == [{"a": 1}, {"b": "x\u2028y"}]
    assert jsonl_rows("") == []


def test_no_jsonl_reader_splits_lines_with_splitlines() -> None:
    # The pattern that failed: json.loads over text.splitlines(). Readers of the stages' JSON Lines use read_jsonl.
    offenders = []
    for folder in ("src", "stages", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "splitlines(" in line and re.search(r"json\.loads|\.jsonl", line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_reader_is_json_loads_per_line() -> None:
    row = {"nested": {"list": [1, 2.5, None, True]}, "text": "é ü 中"}
    assert jsonl_rows(json.dumps(row, ensure_ascii=False) + "\n") == [row]
