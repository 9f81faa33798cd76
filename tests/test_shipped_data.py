"""Checks on the data files shipped in data/ (standard library + pytest only)."""

import json
from typing import Any

import pytest

from shipped_data import EVAL_QUESTIONS, GENERAL_PROMPTS, IDENTITY, normalize, read_jsonl

REQUIRED_QUESTIONS = [
    "What is your name?",
    "Are you ChatGPT?",
    "Tell me about your name and organization.",
]


@pytest.fixture(scope="module")
def identity_rows() -> list[dict[str, Any]]:
    return read_jsonl(IDENTITY)


@pytest.fixture(scope="module")
def eval_rows() -> list[dict[str, Any]]:
    return read_jsonl(EVAL_QUESTIONS)


def test_identity_schema(identity_rows: list[dict[str, Any]]) -> None:
    for n, row in enumerate(identity_rows, 1):
        assert set(row) == {"conversations"}, f"row {n}: unexpected keys {sorted(row)}"
        turns = row["conversations"]
        assert isinstance(turns, list) and len(turns) >= 2, f"row {n}: too few turns"
        for i, turn in enumerate(turns):
            expected = "human" if i % 2 == 0 else "gpt"
            assert turn.get("from") == expected, f"row {n} turn {i}: expected {expected}"
            assert isinstance(turn.get("value"), str) and turn["value"].strip(), f"row {n} turn {i}: empty value"
        assert turns[-1]["from"] == "gpt", f"row {n}: last turn must be gpt"


def test_identity_size_and_variety(identity_rows: list[dict[str, Any]]) -> None:
    assert len(identity_rows) >= 300
    multi = sum(len(r["conversations"]) > 2 for r in identity_rows)
    assert multi / len(identity_rows) >= 0.15
    # every row distinct, and the prompts (last human turns) nearly all distinct
    assert len({json.dumps(r, sort_keys=True) for r in identity_rows}) == len(identity_rows)
    last = [normalize(r["conversations"][-2]["value"]) for r in identity_rows]
    assert len(last) - len(set(last)) <= 5


def test_identity_file_ends_with_newline() -> None:
    assert IDENTITY.read_bytes().endswith(b"\n")


def test_eval_questions(eval_rows: list[dict[str, Any]]) -> None:
    assert len(eval_rows) >= 40
    ids = [r["id"] for r in eval_rows]
    assert len(ids) == len(set(ids)), "duplicate eval question ids"
    for r in eval_rows:
        assert isinstance(r.get("question"), str) and r["question"].strip()
        assert isinstance(r.get("category"), str) and r["category"].strip()
    questions = {r["question"] for r in eval_rows}
    for q in REQUIRED_QUESTIONS:
        assert q in questions, f"required eval question missing: {q!r}"


def test_eval_questions_held_out(identity_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> None:
    human = {normalize(t["value"]) for r in identity_rows for t in r["conversations"] if t["from"] == "human"}
    leaked = [r["question"] for r in eval_rows if normalize(r["question"]) in human]
    assert not leaked, f"eval questions also appear as training human turns: {leaked}"


def test_general_prompts() -> None:
    rows = read_jsonl(GENERAL_PROMPTS)
    assert len(rows) >= 20
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate general prompt ids"
    for r in rows:
        assert isinstance(r.get("prompt"), str) and r["prompt"].strip()
