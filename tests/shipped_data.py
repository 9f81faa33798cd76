"""The data files shipped in data/, and how the data tests read and compare them (standard library only)."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"
IDENTITY = DATA / "source" / "identity.jsonl"
EVAL_QUESTIONS = DATA / "eval" / "identity_questions.jsonl"
GENERAL_PROMPTS = DATA / "eval" / "general_prompts.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def normalize(text: str) -> str:
    """Lowercase, no punctuation, runs of spaces collapsed: two texts that differ only so are the same question."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())
