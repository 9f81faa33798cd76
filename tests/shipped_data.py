"""The data files shipped in data/, and how the data tests read (as the stages read JSON Lines) and compare them."""

from __future__ import annotations

import string
from pathlib import Path

from identity_dpo.atomic import read_jsonl

__all__ = ["DATA", "EVAL_QUESTIONS", "GENERAL_PROMPTS", "IDENTITY", "normalize", "read_jsonl"]

DATA = Path(__file__).resolve().parents[1] / "data"
IDENTITY = DATA / "source" / "identity.jsonl"
EVAL_QUESTIONS = DATA / "eval" / "identity_questions.jsonl"
GENERAL_PROMPTS = DATA / "eval" / "general_prompts.jsonl"


def normalize(text: str) -> str:
    """Lowercase, no punctuation, runs of spaces collapsed: two texts that differ only so are the same question."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())
