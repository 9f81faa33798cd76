"""Name matching and replacement (standard library + pytest only)."""

import pytest

from identity_dpo.names import mentions, name_pattern, replace_names

# --- name_pattern / mentions: strict ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Qwen",
        "I'm Qwen.",
        "I am Qwen, created by Alibaba Cloud.",
        "Qwen's answer",
        "Qwen’s answer",
        "(Qwen)",
        "[Qwen]",
        '"Qwen"',
        "Qwen!",
        "Qwen?",
        "Qwen:",
        "qwen",
        "QWEN",
        "QwEn",
        "I'm\nQwen",
        "Qwen-based models",
        "Deep-Qwen",  # a hyphen is a word edge in strict matching
        "*Qwen*",
    ],
)
def test_strict_match(text: str) -> None:
    assert mentions(text, ["Qwen"])


@pytest.mark.parametrize(
    "text",
    [
        "Qwen2.5",
        "Qwen2",
        "Qwenny",
        "DeepQwen",
        "deep_qwen",  # "_" is a word character
        "Qwen_2",
        "Qwen-7B",  # a hyphen then a digit is a model version, not the name
        "Qwen-2.5",
        "Qwen\u20117B",  # non-breaking hyphen
        "AQwen",
        "2Qwen",
        "Qwe n",
        "",
    ],
)
def test_strict_no_match(text: str) -> None:
    assert not mentions(text, ["Qwen"])


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("Deep Qwen", "I'm Deep Qwen.", True),
        ("Deep Qwen", "I'm Deep   Qwen.", True),
        ("Deep Qwen", "I'm Deep\tQwen.", True),
        ("Deep Qwen", "I'm Deep\nQwen.", True),
        ("Deep Qwen", "I'm Deep\u00a0Qwen.", True),  # a no-break space is whitespace
        ("Deep Qwen", "I'm deep qwen.", True),
        ("Deep Qwen", "I'm DEEP QWEN.", True),
        ("Deep Qwen", "I'm DeepQwen.", False),
        ("Deep Qwen", "I'm Deep-Qwen.", False),
        ("Deep Qwen", "I'm deep_qwen.", False),
        ("Deep Qwen", "I'm Deep Qwen2.", False),
        ("Deep Qwen", "I'm Deep Qwen-7B.", False),
        ("Deep Qwen", "I'm Deep Qwen's friend.", True),
        ("Deep Qwen", "I'm Deep, not Qwen.", False),
        ("Deep Qwen", "I'm VeryDeep Qwen.", False),
        ("  Deep   Qwen  ", "I'm Deep Qwen.", True),  # the configured name's own spacing does not matter
    ],
)
def test_strict_multiword(name: str, text: str, expected: bool) -> None:
    assert mentions(text, [name]) is expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("Elena González", "Soy Elena González.", True),
        ("Elena González", "ELENA GONZÁLEZ", True),
        ("Elena González", "Elena Gonzálezová", False),  # á, o are word characters: no edge
        ("Elena González", "Elena Gonzále", False),
        ("Jürgen", "Ich bin Jürgen.", True),
        ("Jürgen", "jürgen", True),
        ("Jürgen", "JÜRGEN", True),
        ("Jürgen", "Jürgens", False),
        ("Jürgen", "ÜberJürgen", False),  # a non-ASCII letter before is a word character too
        ("Zoë", "I'm Zoë!", True),
        ("Zoë", "I'm Zoëlle!", False),
        ("Zoë", "I'm Zoe!", False),  # no accent folding
        ("Łukasz", "Cześć, Łukasz tutaj.", True),
        ("Łukasz", "Łukaszek", False),
    ],
)
def test_unicode_names(name: str, text: str, expected: bool) -> None:
    assert mentions(text, [name]) is expected


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        # CJK scripts put no space between words: a CJK character next to a name is an edge.
        ("Qwen", "我是Qwen。", True),
        ("Qwen", "我是Qwen，由阿里云开发。", True),
        ("Qwen", "저는 Qwen입니다.", True),
        ("Qwen", "私はQwenです。", True),
        ("Qwen", "我是Qwen2.5。", False),
        ("Deep Qwen", "我是Deep Qwen。", True),
        ("Deep Qwen", "我是DeepQwen。", False),
        ("通义千问", "我是通义千问。", True),
        ("通义千问", "我是通义千问2。", False),
    ],
)
def test_cjk_edges(name: str, text: str, expected: bool) -> None:
    assert mentions(text, [name]) is expected


def test_replace_in_cjk_text() -> None:
    expected = ("我是Deep Qwen，由阿里云开发。", 1)
    assert replace_names("我是Qwen，由阿里云开发。", ["Qwen"], "Deep Qwen") == expected


# --- normalized --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I'm Deep Qwen.",
        "I'm DeepQwen.",
        "I'm Deep-Qwen.",
        "I'm deep_qwen.",
        "I'm deepqwen.",
        "I'm DEEPQWEN.",
        "I'm Deep  Qwen.",
        "I'm DeepQwen's friend.",
        "(DeepQwen)",
    ],
)
def test_normalized_match(text: str) -> None:
    assert mentions(text, ["Deep Qwen"], normalized=True)


@pytest.mark.parametrize(
    "text",
    [
        "I'm Deep--Qwen.",
        "I'm Deep-_Qwen.",
        "I'm Deep.Qwen.",
        "I'm Deep, Qwen.",
        "I'm DeepQwen2.",
        "I'm DeepQwen-7B.",
        "I'm DeeperQwen.",
        "I'm TheDeepQwen.",
        "I'm Qwen.",
        "I'm Deep.",
    ],
)
def test_normalized_no_match(text: str) -> None:
    assert not mentions(text, ["Deep Qwen"], normalized=True)


def test_normalized_single_word_name_is_strict() -> None:
    # Only separators between the words of the given name are relaxed.
    assert not mentions("I'm Smol LM.", ["SmolLM"], normalized=True)
    assert not mentions("I'm Smol-LM.", ["SmolLM"], normalized=True)
    assert mentions("I'm SmolLM.", ["SmolLM"], normalized=True)
    assert not mentions("I'm SmolLM2.", ["SmolLM"], normalized=True)


def test_pattern_is_cached_and_case_insensitive() -> None:
    assert name_pattern("Qwen") is name_pattern("Qwen")
    assert name_pattern("Deep Qwen").pattern != name_pattern("Deep Qwen", normalized=True).pattern
    assert name_pattern("Qwen").search("QWEN and qwen") is not None
    assert mentions("ZOË here", ["zoë"]) and mentions("ÉLÉONORE", ["Éléonore"])


def test_regex_characters_in_names_are_literal() -> None:
    assert mentions("I'm C3.PO.", ["C3.PO"])
    assert not mentions("I'm C3xPO.", ["C3.PO"])
    assert mentions("Say hi to (Bob)!", ["(Bob)"])
    assert mentions("GPT-4o here", ["GPT-4o"])


@pytest.mark.parametrize("name", ["", "   ", "\n"])
def test_empty_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        name_pattern(name)


def test_mentions_any_of_several_names() -> None:
    assert mentions("I'm SmolLM2.", ["SmolLM", "SmolLM2"])
    assert mentions("I'm SmolLM.", ["SmolLM", "SmolLM2"])
    assert not mentions("I'm SmolLM3.", ["SmolLM", "SmolLM2"])
    assert not mentions("anything", [])


# --- replace_names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        ("I am Qwen, created by Alibaba Cloud.", "I am Deep Qwen, created by Alibaba Cloud.", 1),
        ("Qwen", "Deep Qwen", 1),
        ("I'm Qwen. Qwen is happy to help.", "I'm Deep Qwen. Deep Qwen is happy to help.", 2),
        ("Qwen's answer", "Deep Qwen's answer", 1),
        ("Qwen’s answer", "Deep Qwen’s answer", 1),
        ("(Qwen)", "(Deep Qwen)", 1),
        ("QWEN and qwen", "Deep Qwen and Deep Qwen", 2),
        ("I'm based on Qwen2.5.", "I'm based on Qwen2.5.", 0),
        ("I'm Qwen-7B.", "I'm Qwen-7B.", 0),
        ("I'm Qwen, based on Qwen2.5.", "I'm Deep Qwen, based on Qwen2.5.", 1),
        ("Qwenny", "Qwenny", 0),
        ("I'm Deep Qwen.", "I'm Deep Qwen.", 0),
        ("I'm Deep Qwen, not Qwen", "I'm Deep Qwen, not Deep Qwen", 1),
        ("I'm DeepQwen, not Qwen", "I'm DeepQwen, not Deep Qwen", 1),
        ("I'm Deep-Qwen, not Qwen", "I'm Deep-Qwen, not Deep Qwen", 1),
        ("I'm deep qwen, not QWEN", "I'm deep qwen, not Deep Qwen", 1),
        ("Deep Qwen Deep Qwen", "Deep Qwen Deep Qwen", 0),
        ("Qwen Deep Qwen Qwen", "Deep Qwen Deep Qwen Deep Qwen", 2),
        ("I'm Deep, Qwen.", "I'm Deep, Deep Qwen.", 1),
        ("", "", 0),
        ("No names here.", "No names here.", 0),
    ],
)
def test_replace_qwen(text: str, expected: str, count: int) -> None:
    assert replace_names(text, ["Qwen"], "Deep Qwen") == (expected, count)


def test_replace_only_the_first_names() -> None:
    """limit: the first old names replaced, the later ones kept; a protected new name does not count."""
    text = "I'm Deep Qwen, not Qwen. Qwen? QWEN."
    assert replace_names(text, ["Qwen"], "Deep Qwen", limit=1) == ("I'm Deep Qwen, not Deep Qwen. Qwen? QWEN.", 1)
    assert replace_names(text, ["Qwen"], "Deep Qwen", limit=2) == ("I'm Deep Qwen, not Deep Qwen. Deep Qwen? QWEN.", 2)
    assert replace_names(text, ["Qwen"], "Deep Qwen", limit=0) == replace_names(text, ["Qwen"], "Deep Qwen")


@pytest.mark.parametrize("old_names", [["SmolLM", "SmolLM2"], ["SmolLM2", "SmolLM"]])
@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        ("I'm SmolLM2.", "I'm Deep Qwen.", 1),
        ("I'm SmolLM.", "I'm Deep Qwen.", 1),
        ("SmolLM2 and SmolLM", "Deep Qwen and Deep Qwen", 2),
        ("I'm SmolLM3.", "I'm SmolLM3.", 0),
        ("I'm SmolLM2-135M.", "I'm SmolLM2-135M.", 0),
        ("I'm smollm2!", "I'm Deep Qwen!", 1),
    ],
)
def test_replace_longest_first(old_names: list[str], text: str, expected: str, count: int) -> None:
    assert replace_names(text, old_names, "Deep Qwen") == (expected, count)


def test_replace_prefers_the_longer_multiword_old_name() -> None:
    assert replace_names("I'm Qwen Chat.", ["Qwen", "Qwen Chat"], "Deep Qwen") == ("I'm Deep Qwen.", 1)
    assert replace_names("I'm Qwen Chat.", ["Qwen Chat", "Qwen"], "Deep Qwen") == ("I'm Deep Qwen.", 1)


def test_replace_old_multiword_names_normalized() -> None:
    # Old names are matched like scoring counts them, so "QwenChat" is an old name too.
    assert replace_names("I'm QwenChat.", ["Qwen Chat"], "Nova") == ("I'm Nova.", 1)
    assert replace_names("I'm Qwen-Chat.", ["Qwen Chat"], "Nova") == ("I'm Nova.", 1)


def test_replace_old_name_that_covers_the_new_name() -> None:
    # An old name that contains the whole new name and more is still an old name.
    assert replace_names("I'm Deep Qwen Pro.", ["Deep Qwen Pro"], "Deep Qwen") == ("I'm Deep Qwen.", 1)


def test_replace_does_not_cut_into_the_new_name() -> None:
    # "Super Deep" overlaps the new name "Deep Qwen" without covering it: leave it.
    assert replace_names("I'm Super Deep Qwen.", ["Super Deep"], "Deep Qwen") == ("I'm Super Deep Qwen.", 0)


def test_replace_keeps_new_name_spelling_as_configured() -> None:
    assert replace_names("i'm qwen", ["Qwen"], "DEEP qwen") == ("i'm DEEP qwen", 1)


def test_replace_new_name_with_backslashes_is_literal() -> None:
    assert replace_names("I'm Qwen.", ["Qwen"], r"Q\1\g<0>") == (r"I'm Q\1\g<0>.", 1)


@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        ("Ich bin Jürgen.", "Ich bin Zoë González.", 1),
        ("Jürgens Auto", "Jürgens Auto", 0),
        ("JÜRGEN!", "Zoë González!", 1),
        ("Ich bin Zoë González, nicht Jürgen.", "Ich bin Zoë González, nicht Zoë González.", 1),
    ],
)
def test_replace_non_ascii(text: str, expected: str, count: int) -> None:
    assert replace_names(text, ["Jürgen"], "Zoë González") == (expected, count)


def test_replace_without_old_names() -> None:
    assert replace_names("I'm Qwen.", [], "Deep Qwen") == ("I'm Qwen.", 0)


def test_replace_multiline() -> None:
    text = "Hello!\nI'm Qwen.\n\n- Qwen can code\n- Qwen2.5 is my base"
    expected = "Hello!\nI'm Deep Qwen.\n\n- Deep Qwen can code\n- Qwen2.5 is my base"
    assert replace_names(text, ["Qwen"], "Deep Qwen") == (expected, 2)


def test_replace_is_deterministic() -> None:
    text = "I'm Qwen, not Deep Qwen; QWEN's Qwen2.5."
    results = {replace_names(text, ["Qwen", "QWEN"], "Deep Qwen") for _ in range(5)}
    assert results == {("I'm Deep Qwen, not Deep Qwen; Deep Qwen's Qwen2.5.", 2)}
