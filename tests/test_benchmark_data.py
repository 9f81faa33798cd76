"""Checks on the general benchmark and the rehearsal prompts shipped in data/ (no model needed).

Both files must stay disjoint from every training prompt and every eval set, compared after the
same normalization as tests/shipped_data.py (lowercase, no punctuation, collapsed spaces).
The benchmark's own reader (`identity_dpo.benchmark.read_benchmark`) must accept the file; it refuses a
wrong option that overlaps the answer under the exact matcher generative scoring uses.
"""

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from identity_dpo.benchmark import read_benchmark
from shipped_data import DATA, EVAL_QUESTIONS, GENERAL_PROMPTS, IDENTITY, normalize, read_jsonl

BENCHMARK = DATA / "eval" / "general_benchmark.jsonl"
REHEARSAL = DATA / "source" / "rehearsal.jsonl"

CATEGORIES = {"fact", "science", "arithmetic", "word", "translation", "instruction"}
MIN_ITEMS = 240
MIN_PER_CATEGORY = 30
REHEARSAL_ROWS = 240

# Questions about the assistant itself have no place in either file.
IDENTITY_WORDS = re.compile(
    r"\b(?:your\s+name|who\s+(?:made|built|created|trained|developed)\s+(?:you|u)|are\s+you|you\s+are|you're"
    r"|yourself|your\s+(?:creator|maker|developer|company)|smollm|qwen|hugging\s*face|chatgpt|openai"
    r"|chatbot|assistant|language\s+model)\b",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def benchmark() -> list[dict[str, Any]]:
    return read_jsonl(BENCHMARK)


@pytest.fixture(scope="module")
def rehearsal() -> list[dict[str, Any]]:
    return read_jsonl(REHEARSAL)


@pytest.fixture(scope="module")
def training_prompts() -> set[str]:
    """Every human turn of the training conversations (last turns and context turns)."""
    rows = read_jsonl(IDENTITY)
    return {normalize(t["value"]) for r in rows for t in r["conversations"] if t["from"] == "human"}


@pytest.fixture(scope="module")
def eval_prompts() -> set[str]:
    """Every user message of the eval sets, including the earlier turns of multi-turn identity questions."""
    identity = read_jsonl(EVAL_QUESTIONS)
    questions = {normalize(r["question"]) for r in identity}
    context = {normalize(m["content"]) for r in identity for m in r.get("context", []) if m.get("role") == "user"}
    return questions | context | {normalize(r["prompt"]) for r in read_jsonl(GENERAL_PROMPTS)}


def _check_file_layout(path: Path) -> None:
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and not raw.endswith(b"\n\n"), f"{path.name}: must end with exactly one newline"
    assert all(line.strip() for line in raw.decode("utf-8").split("\n")[:-1]), f"{path.name}: blank line"


def _whole_word(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words, case-insensitively.

    A cheap stand-in for identity_dpo.names.mentions (same edges for these Latin-script options), which
    compiles a costly pattern per name; read_benchmark applies the exact matcher to answer against wrong.
    """
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


def _options(row: dict[str, Any]) -> list[str]:
    return [row["answer"], *row["aliases"], *row["wrong"]]


# --- general_benchmark.jsonl ---------------------------------------------------------------------


def test_benchmark_schema(benchmark: list[dict[str, Any]]) -> None:
    _check_file_layout(BENCHMARK)
    keys = {"id", "category", "question", "answer", "aliases", "wrong"}
    for n, row in enumerate(benchmark, 1):
        assert set(row) == keys, f"row {n}: keys {sorted(row)}"
        assert re.fullmatch(r"gb-\d{3}", row["id"]), f"row {n}: bad id {row['id']!r}"
        assert row["category"] in CATEGORIES, f"{row['id']}: unknown category {row['category']!r}"
        for key in ("question", "answer"):
            assert isinstance(row[key], str) and row[key].strip() == row[key] and row[key], f"{row['id']}: {key}"
        assert len(row["answer"].split()) <= 3, f"{row['id']}: answer longer than 3 words"
        for key in ("aliases", "wrong"):
            assert isinstance(row[key], list), f"{row['id']}: {key} must be a list"
            for option in row[key]:
                assert isinstance(option, str) and option.strip() == option and option, f"{row['id']}: {key}"
    ids = [row["id"] for row in benchmark]
    assert len(ids) == len(set(ids)), "duplicate benchmark ids"
    assert ids == sorted(ids), "benchmark ids out of order"


def test_benchmark_loads_in_pipeline() -> None:
    # The evaluation stage's own reader accepts the file (it also refuses overlapping options).
    assert len(read_benchmark(BENCHMARK)) == len(read_jsonl(BENCHMARK))


def test_benchmark_counts(benchmark: list[dict[str, Any]]) -> None:
    assert len(benchmark) >= MIN_ITEMS
    per_category = Counter(row["category"] for row in benchmark)
    assert set(per_category) == CATEGORIES
    small = {c: n for c, n in per_category.items() if n < MIN_PER_CATEGORY}
    assert not small, f"categories with fewer than {MIN_PER_CATEGORY} questions: {small}"


def test_arithmetic_answers_are_digits(benchmark: list[dict[str, Any]]) -> None:
    for row in benchmark:
        if row["category"] == "arithmetic":
            assert re.fullmatch(r"\d+", row["answer"]), f"{row['id']}: answer {row['answer']!r} is not digits"
            assert all(re.fullmatch(r"\d+", w) for w in row["wrong"]), f"{row['id']}: wrong options not digits"


def test_wrong_options(benchmark: list[dict[str, Any]]) -> None:
    for row in benchmark:
        wrong = row["wrong"]
        assert len(wrong) == 3, f"{row['id']}: expected exactly 3 wrong options"
        options = _options(row)
        assert len({o.casefold() for o in options}) == len(options), f"{row['id']}: repeated option {options}"
        # No wrong option equals, contains or is contained in any other option, as whole words.
        for i, w in enumerate(wrong):
            others = [row["answer"], *row["aliases"], *wrong[:i], *wrong[i + 1 :]]
            clash = [o for o in others if _whole_word(w, o) or _whole_word(o, w)]
            assert not clash, f"{row['id']}: wrong option {w!r} overlaps {clash}"


def test_wrong_options_not_in_question(benchmark: list[dict[str, Any]]) -> None:
    # A generated answer that names a wrong option counts as wrong, and answers often echo the question.
    for row in benchmark:
        echoed = [w for w in row["wrong"] if _whole_word(row["question"], w)]
        assert not echoed, f"{row['id']}: wrong options {echoed} appear in the question"


def test_benchmark_questions_distinct(benchmark: list[dict[str, Any]]) -> None:
    counts = Counter(normalize(row["question"]) for row in benchmark)
    dupes = [q for q, n in counts.items() if n > 1]
    assert not dupes, f"duplicate benchmark questions: {dupes}"


def test_benchmark_disjoint_from_training_and_eval(
    benchmark: list[dict[str, Any]], rehearsal: list[dict[str, Any]], training_prompts: set[str], eval_prompts: set[str]
) -> None:
    train = training_prompts | {normalize(r["prompt"]) for r in rehearsal}
    leaked = [row["question"] for row in benchmark if normalize(row["question"]) in train]
    assert not leaked, f"benchmark questions also used as training prompts: {leaked}"
    # Nor inside a longer training prompt ("Hi! What is 2 plus 2?"), as the identity build script checks.
    padded = [f" {p} " for p in train]
    inside = [row["question"] for row in benchmark if any(f" {normalize(row['question'])} " in p for p in padded)]
    assert not inside, f"benchmark questions contained in training prompts: {inside}"
    reused = [row["question"] for row in benchmark if normalize(row["question"]) in eval_prompts]
    assert not reused, f"benchmark questions repeat other eval prompts: {reused}"


def test_benchmark_has_no_identity_questions(benchmark: list[dict[str, Any]]) -> None:
    hits = [row["id"] for row in benchmark if any(IDENTITY_WORDS.search(t) for t in [row["question"], *_options(row)])]
    assert not hits, f"benchmark rows about the assistant itself: {hits}"


# --- rehearsal.jsonl ------------------------------------------------------------------------------


def test_rehearsal_schema(rehearsal: list[dict[str, Any]]) -> None:
    _check_file_layout(REHEARSAL)
    assert len(rehearsal) == REHEARSAL_ROWS
    for n, row in enumerate(rehearsal, 1):
        assert set(row) == {"id", "prompt"}, f"row {n}: keys {sorted(row)}"
        assert re.fullmatch(r"reh-\d{3}", row["id"]), f"row {n}: bad id {row['id']!r}"
        assert isinstance(row["prompt"], str) and row["prompt"].strip() == row["prompt"] and row["prompt"]
    ids = [row["id"] for row in rehearsal]
    assert len(ids) == len(set(ids)), "duplicate rehearsal ids"
    assert ids == sorted(ids), "rehearsal ids out of order"


def test_rehearsal_prompts_distinct(rehearsal: list[dict[str, Any]]) -> None:
    counts = Counter(normalize(row["prompt"]) for row in rehearsal)
    dupes = [p for p, n in counts.items() if n > 1]
    assert not dupes, f"duplicate rehearsal prompts: {dupes}"


def test_rehearsal_disjoint_from_identity_and_eval(
    rehearsal: list[dict[str, Any]], training_prompts: set[str], eval_prompts: set[str]
) -> None:
    clashes = [r["prompt"] for r in rehearsal if normalize(r["prompt"]) in training_prompts | eval_prompts]
    assert not clashes, f"rehearsal prompts repeat identity or eval prompts: {clashes}"


def test_rehearsal_has_no_identity_questions(rehearsal: list[dict[str, Any]]) -> None:
    hits = [row["id"] for row in rehearsal if IDENTITY_WORDS.search(row["prompt"])]
    assert not hits, f"rehearsal prompts about the assistant itself: {hits}"


def test_identity_pattern_catches_identity_questions() -> None:
    # The filter above is only as good as its pattern: it must flag the shipped identity questions' core wordings.
    for text in ["What is your name?", "Who made you?", "Are you ChatGPT?", "Is this SmolLM?", "Deep Qwen",
                 "Is this from Hugging Face?", "Introduce yourself."]:  # fmt: skip
        assert IDENTITY_WORDS.search(text), text
    assert not IDENTITY_WORDS.search("What is the capital of Germany?")
