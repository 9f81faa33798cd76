"""The one home for finding and replacing names in text.

Every stage that asks "does this answer say name X?" goes through `name_pattern`, so making
pairs, scoring and evaluation agree on what counts as a mention.

What counts as a mention of a name:
- the whole name, case-insensitive, with any run of whitespace between its words;
- not inside a longer token: `\\b` is avoided because names are not ASCII ("Zoë", "González"),
  so the edges are lookarounds on `\\w`, which `re` treats as Unicode for str patterns; a CJK
  character counts as an edge ("我是Qwen。"), since those scripts do not separate words by spaces;
- not a model/version token: "Qwen2.5" has no word edge after the name, and "Qwen-7B" or
  "Qwen-2" (a hyphen then a digit) is read the same way, as a model identifier rather than the
  name. "Qwen's", "(Qwen)", "Qwen." and "Qwen-based" are mentions.
- normalized matching also accepts the spellings a tokenizer makes likely between the words of
  a multi-word name: none ("DeepQwen"), a hyphen ("Deep-Qwen") or an underscore ("deep_qwen").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

_STRICT_SEPARATOR = r"\s+"
_NORMALIZED_SEPARATOR = r"(?:\s+|[-_])?"
# Chinese and Japanese put no space between words, and Korean attaches particles ("Qwen입니다"),
# so a CJK character next to a name is an edge even though it is \w.
_CJK = r"\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002fa1f"
_WORD_NOT_CJK = rf"[^\W{_CJK}]"
_START = rf"(?<!{_WORD_NOT_CJK})"
# A hyphen (ASCII, Unicode hyphen, non-breaking hyphen) followed by a digit marks a model version.
_END = rf"(?!{_WORD_NOT_CJK})(?![-\u2010\u2011]\d)"


@functools.lru_cache(maxsize=4096)  # the benchmark's options alone are ~850 names
def name_pattern(name: str, *, normalized: bool = False) -> re.Pattern[str]:
    """A compiled pattern matching `name` as a whole word (see the module docstring)."""
    parts = name.split()
    if not parts:
        raise ValueError("a name must contain at least one non-space character")
    separator = _NORMALIZED_SEPARATOR if normalized else _STRICT_SEPARATOR
    body = separator.join(re.escape(part) for part in parts)
    # Only the name is case-insensitive: the edges' Unicode classes need no case folding, which made compiling
    # the whole pattern with IGNORECASE several times slower.
    return re.compile(_START + "(?i:" + body + ")" + _END)


def mentions(text: str, names: Sequence[str], *, normalized: bool = False) -> bool:
    """Whether `text` mentions any of `names`."""
    return any(name_pattern(name, normalized=normalized).search(text) for name in names)


def without_names(text: str, names: Sequence[str]) -> str:
    """`text` with every mention of `names` (normalized matching) blanked out to a space."""
    for name in names:
        text = name_pattern(name, normalized=True).sub(" ", text)
    return text


def replace_names(text: str, old_names: Sequence[str], new_name: str, *, limit: int = 0) -> tuple[str, int]:
    """Replace every whole-word old name (the first `limit` ones, if given) with `new_name`; return the text and the
    number replaced.

    Old names are matched normalized, like `scoring.says_old_name` counts them, so whatever
    would be scored as an old name gets rewritten. Longer names are tried first, so an old name
    that extends another ("Qwen Chat" next to "Qwen") is replaced as a whole.

    Occurrences of the new name (normalized: "Deep Qwen", "DeepQwen", "deep-qwen") are left as
    written, even when the new name contains an old one ("Deep Qwen" contains "Qwen");
    otherwise "I'm Deep Qwen" would become "I'm Deep Deep Qwen". An old-name match that
    covers a new-name occurrence and more ("Deep Qwen Chat" as an old name) is still replaced.
    """
    if not old_names:
        return text, 0
    ordered = sorted(dict.fromkeys(old_names), key=lambda n: (-len(n), n))
    alternatives = "|".join(f"(?:{name_pattern(n, normalized=True).pattern})" for n in ordered)
    old = re.compile(alternatives, re.IGNORECASE)
    protected = [m.span() for m in name_pattern(new_name, normalized=True).finditer(text)]
    count = 0

    def substitute(match: re.Match[str]) -> str:
        nonlocal count
        start, end = match.span()
        for p_start, p_end in protected:
            overlaps = start < p_end and p_start < end
            covers_more = start <= p_start and p_end <= end and (start, end) != (p_start, p_end)
            if overlaps and not covers_more:
                return match.group()
        if limit and count >= limit:
            return match.group()
        count += 1
        return new_name

    return old.sub(substitute, text), count


def creator_core(creator: str) -> str:
    """The creator as answers write it: "the identity-dpo project" is matched as "identity-dpo project"."""
    words = creator.split()
    return " ".join(words[1:]) if len(words) > 1 and words[0].casefold() == "the" else creator
