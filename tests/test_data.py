from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from identity_dpo.data import MAX_TURN_CHARS, load_prompts, read_prompts, row_to_prompt, write_prompts
from identity_dpo.errors import DataError, SourceError

GOOD = {"conversations": [{"from": "human", "value": "Who are you?"}, {"from": "gpt", "value": "I'm Assistant."}]}


def _jsonl(tmp_path: Path, rows: list[Any], name: str = "identity.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompt_is_the_last_human_turn_with_context() -> None:
    row = {
        "conversations": [
            {"from": "human", "value": "Hi!"},
            {"from": "gpt", "value": "Hello."},
            {"from": "human", "value": " What is your name? "},
            {"from": "gpt", "value": "I'm Assistant."},
        ]
    }
    prompt = row_to_prompt(row, "row-1")
    assert prompt.messages == [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is your name?"},
    ]
    assert prompt.question == "What is your name?"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["not", "a", "dict"], "expected an object with a 'conversations' list, got list"),
        ({"messages": []}, "missing key 'conversations' (keys found: 'messages')"),
        ({"conversations": []}, "'conversations' must be a non-empty list"),
        ({"conversations": "hi"}, "'conversations' must be a non-empty list"),
        (
            {"conversations": [{"role": "user", "content": "hi"}]},
            "turn 0: expected exactly the keys 'from' and 'value'",
        ),
        ({"conversations": [{"from": "user", "value": "hi"}]}, "turn 0: 'from' must be 'human' or 'gpt', got 'user'"),
        ({"conversations": [{"from": "human", "value": 42}]}, "turn 0: 'value' must be a string, got int"),
        ({"conversations": [{"from": "human", "value": "  "}]}, "turn 0: 'value' is empty"),
        ({"conversations": [{"from": "gpt", "value": "I'm Assistant."}]}, "no human turn"),
        (
            {"conversations": [{"from": "human", "value": "x" * (MAX_TURN_CHARS + 1)}]},
            f"turn 0: 'value' has {MAX_TURN_CHARS + 1} characters",
        ),
    ],
)
def test_schema_errors_say_what_is_wrong(row: Any, message: str) -> None:
    with pytest.raises(DataError) as error:
        row_to_prompt(row, "row-1")
    assert message in str(error.value)


def test_bad_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "identity.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode()
        + b"\n{not json}\n"
        + b'{"conversations": [{"from": "human", "value": "caf\xe9"}]}\n'
        + json.dumps({"conversations": [{"from": "gpt", "value": "x"}]}).encode()
        + b"\n\n"
        + json.dumps(GOOD).encode()
    )
    prompts, report = load_prompts(str(path), "train", "skip")
    assert [p.id for p in prompts] == ["row-00000", "row-00004"]
    assert report.as_metrics() == {"rows": 5, "used": 2, "skipped": 3, "multi_turn": 0}
    assert f"{path}: line 2: invalid JSON" in report.problems[0]
    assert f"{path}: line 3: not UTF-8" in report.problems[1]
    assert f"{path}: line 4: no human turn" in report.problems[2]


def test_fail_mode_names_file_line_and_fix(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [GOOD, {"conversations": [{"from": "human", "value": None}]}])
    with pytest.raises(DataError, match=rf"{path}: line 2: turn 0: 'value' must be a string.*data.on_bad_row: skip"):
        load_prompts(str(path), "train", "fail")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="identity.jsonl: file not found"):
        load_prompts(str(tmp_path / "identity.jsonl"), "train", "skip")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="file is empty"):
        load_prompts(str(path), "train", "skip")


def test_no_usable_rows(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [{"conversations": []}, "[1, 2]"])
    with pytest.raises(DataError, match=r"no usable rows \(2 read, 2 malformed\)"):
        load_prompts(str(path), "train", "skip")


def test_json_list_files_are_read_too(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    path.write_text(json.dumps([GOOD, GOOD]))
    prompts, report = load_prompts(str(path), "train", "fail")
    assert report.used == 2


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(SourceError, match=r"data.source: unknown source scheme 's3' .*hf:OWNER/NAME@REVISION"):
        load_prompts("s3://bucket/identity.jsonl", "train", "skip")


def test_pypi_is_not_a_data_source() -> None:
    with pytest.raises(SourceError, match="data.source: pypi sources are not supported here"):
        load_prompts("pypi:foo==1.0", "train", "skip")


def test_unreachable_hub_names_the_offline_alternative() -> None:  # conftest turns the hub off
    with pytest.raises(SourceError, match=r"cannot load hf:mrfakename/identity@abc123 .*data/source/identity.jsonl"):
        load_prompts("hf:mrfakename/identity@abc123", "train", "skip")


def test_prepared_prompts_round_trip(tmp_path: Path) -> None:
    prompts, _ = load_prompts(str(_jsonl(tmp_path, [GOOD])), "train", "fail")
    write_prompts(tmp_path / "prompts.jsonl", prompts)
    assert read_prompts(tmp_path / "prompts.jsonl") == prompts
