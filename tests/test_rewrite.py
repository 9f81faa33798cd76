"""Turning the model's answer into the chosen answer (standard library + pytest only)."""

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest

from identity_dpo.params import RewriteStrategy
from identity_dpo.rewrite import (
    IdentityRewriter,
    Rewrite,
    asks_about_maker,
    claims_other_identity,
    names_asked_about,
)

INTRO = "I'm Deep Qwen, an AI assistant."


def rewriter(
    strategy: RewriteStrategy = "self_description", old_names: Sequence[str] = ("SmolLM", "SmolLM2"), **kwargs: Any
) -> IdentityRewriter:
    return IdentityRewriter(tuple(old_names), "Deep Qwen", strategy, **kwargs)


STRATEGIES: list[RewriteStrategy] = ["names", "self_description", "introduction"]


# --- step 1: names (every strategy) -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # The lesson's recipe: only the name changes, the organization is kept.
        ("I am Qwen, created by Alibaba Cloud.", "I am Deep Qwen, created by Alibaba Cloud."),
        ("I'm Deep Qwen, not Qwen.", "I'm Deep Qwen, not Deep Qwen."),
        ("I'm DeepQwen, not Qwen.", "I'm DeepQwen, not Deep Qwen."),
        ("Qwen's answer: I'm Qwen, based on Qwen2.5.", "Deep Qwen's answer: I'm Deep Qwen, based on Qwen2.5."),
        ("I'm QWEN.", "I'm Deep Qwen."),
        # A persona around an old name is kept on this path: names come first.
        ("I'm Qwen, a brilliant scientist.", "I'm Deep Qwen, a brilliant scientist."),
    ],
)
def test_names_first(strategy: RewriteStrategy, answer: str, expected: str) -> None:
    assert rewriter(strategy, ["Qwen"]).rewrite(answer) == Rewrite(expected, "names")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_names_longest_first(strategy: RewriteStrategy) -> None:
    result = rewriter(strategy).rewrite("I'm SmolLM2, a model by Hugging Face. SmolLM is my family.")
    assert result == Rewrite("I'm Deep Qwen, a model by Hugging Face. Deep Qwen is my family.", "names")


# --- unchanged ------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("answer", ["", " ", "\n\t ", "\n\n"])
def test_empty_answer_is_unchanged(strategy: RewriteStrategy, answer: str) -> None:
    assert rewriter(strategy).rewrite(answer) == Rewrite(answer, "unchanged")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(
    "answer",
    [
        "I'm Deep Qwen, an AI assistant.",
        "Hello! I'm DeepQwen. How can I help?",
        "Call me deep-qwen.",
        "I'm Dr. Elena Zephyr, and my friend is Deep Qwen.",
    ],
)
def test_answer_with_new_name_is_unchanged(strategy: RewriteStrategy, answer: str) -> None:
    assert rewriter(strategy).rewrite(answer) == Rewrite(answer, "unchanged")


@pytest.mark.parametrize(
    "answer",
    [
        "Hello! I'm Dr. Elena Zephyr, a brilliant and compassionate scientist.",
        "I'm an AI assistant designed to help.",
        "How can I help?",
        "Qwen2.5 is a model.",
    ],
)
def test_names_strategy_stops_after_names(answer: str) -> None:
    assert rewriter("names", ["Qwen"]).rewrite(answer) == Rewrite(answer, "unchanged")


# --- self_description -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # The persona description is dropped, not inherited.
        (
            "Hello! I'm Dr. Elena Zephyr, a brilliant and compassionate scientist. I study distant stars.",
            f"Hello! {INTRO} I study distant stars.",
        ),
        ("I'm Dr. Elena Zephyr, a brilliant and compassionate scientist.", INTRO),
        ("Hi, I'm Alex", f"Hi, {INTRO}"),
        ("Hi, I'm Alex, your guide.", f"Hi, {INTRO}"),
        ("Hello, I am Alex, your guide. Ask me anything!", f"Hello, {INTRO} Ask me anything!"),
        ("Hi there! I'm Alex. How can I help?", f"Hi there! {INTRO} How can I help?"),
        ("Hey there — I'm Max, a chef.", f"Hey there — {INTRO}"),
        ("Sure! My name is Sam and I love hiking.", f"Sure! {INTRO}"),
        ("Sure, my name is Sam.", f"Sure, {INTRO}"),
        ("Good morning! My name is Sam.", f"Good morning! {INTRO}"),
        ("Thanks for asking, I'm Sam.", f"Thanks for asking, {INTRO}"),
        ("My name is Sam.", INTRO),
        ("My name's Sam.", INTRO),
        ("I'm Alex!", INTRO),
        ("I am Alex.", INTRO),
        ("I’m Alex, nice to meet you.", INTRO),  # curly apostrophe
        ("i'm Alex.", INTRO),
        ("I'm called Nova.", INTRO),
        ("I go by Nova.", INTRO),
        ("You can call me Nova.", INTRO),
        ("Call me Ishmael.", INTRO),
        ("This is Alex, your friendly helper.", INTRO),
        ("This is Alex speaking.", INTRO),
        ("Alex here! Ask away.", f"{INTRO} Ask away."),
        ("Hey, Alex here.", f"Hey, {INTRO}"),
        ("Hello! Alex here, ready to help.", f"Hello! {INTRO}"),
        ("Hello!\nThis is Alex.", f"Hello!\n{INTRO}"),
        ("My name is [Your Name].", INTRO),
        ("I'm ChatGPT, a language model by OpenAI.", INTRO),
        # Generic AI self-descriptions.
        ("I'm an AI assistant designed to help you with questions.", INTRO),
        ("I am an AI language model. I can answer questions.", f"{INTRO} I can answer questions."),
        ("I am a virtual assistant.", INTRO),
        ("I'm a digital assistant.", INTRO),
        ("I am a helpful assistant.", INTRO),
        ("I'm just a computer program.", INTRO),
        ("I'm a large language model trained to help.", INTRO),
        ("I'm AI, here to help.", INTRO),
        # A prefix that is not an opener goes with the sentence.
        ("As you asked, I'm Alex, a poet.", INTRO),
        ("I can help with many things, and I'm an AI assistant.", INTRO),
    ],
)
def test_self_description_sentence_is_replaced(answer: str, expected: str) -> None:
    assert rewriter().rewrite(answer) == Rewrite(expected, "self_description")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Only the FIRST self-description sentence is replaced.
        ("I'm an AI assistant. I am a helpful assistant too.", f"{INTRO} I am a helpful assistant too."),
        ("I like tea. I'm Alex. I'm also Bob.", f"I like tea. {INTRO} I'm also Bob."),
        # Later mentions of the persona name become the new name, so the answer does not switch persona.
        ("I'm Alex. Alex loves helping people.", f"{INTRO} Deep Qwen loves helping people."),
        (
            "I'm Dr. Elena Zephyr. Dr. Zephyr studies stars, and Elena Zephyr writes. Elena sings.",
            f"{INTRO} Deep Qwen studies stars, and Deep Qwen writes. Deep Qwen sings.",
        ),
        (
            "Sure! My name is Zoë. Zoë’s favourite topic is math.",
            f"Sure! {INTRO} Deep Qwen’s favourite topic is math.",
        ),
        ("I'm Elena González. Elena González helps.", f"{INTRO} Deep Qwen helps."),
        ("I'm Alex. Alexander is my brother.", f"{INTRO} Alexander is my brother."),
    ],
)
def test_self_description_first_sentence_and_persona_name(answer: str, expected: str) -> None:
    assert rewriter().rewrite(answer) == Rewrite(expected, "self_description")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Abbreviations and initials do not end the sentence.
        ("I'm Dr. Elena Zephyr, Ph.D. in physics. Ask me.", f"{INTRO} Ask me."),
        ("I'm Mr. J. R. Smith, a writer. Ask me.", f"{INTRO} Ask me."),
        ("I'm Alex, e.g. your guide. Ask me.", f"{INTRO} Ask me."),
        ("I'm Alex, version 2.5 of myself. Ask me.", f"{INTRO} Ask me."),
        # Multi-line answers: a line break ends a sentence, and the layout is kept.
        ("Hello!\n\nI am a helpful assistant. Ask me anything.", f"Hello!\n\n{INTRO} Ask me anything."),
        ("Hello!\nI'm Alex\nI can:\n- cook\n- code", f"Hello!\n{INTRO}\nI can:\n- cook\n- code"),
        ("1. I'm Alex\n2. I cook", f"1. {INTRO}\n2. I cook"),
        ("  I'm Alex.  \n", f"  {INTRO}  \n"),
        # Cut off mid-sentence: the cut-off persona goes with the sentence.
        ("Hello! I'm Dr. Elena Zephyr, a brilliant and compassionate scien", f"Hello! {INTRO}"),
        ("I'm Dr.", INTRO),
        ("I'm Dr. Ele", INTRO),
        ("Hello! I am Nova and I", f"Hello! {INTRO}"),
        # Non-ASCII names.
        ("Hola, soy Ana. I'm Élodie Brûlé, a painter.", f"Hola, soy Ana. {INTRO}"),
        ("I'm Łukasz.", INTRO),
        ("我是助手。I'm Alex.", f"我是助手。{INTRO}"),
        # Other sentence endings.
        ("Who am I? I'm Alex! Nice to meet you.", f"Who am I? {INTRO} Nice to meet you."),
        ("I'm Alex... and I cook. Ask me.", f"{INTRO} Ask me."),
        ("I'm Alex… and I cook. Ask me.", f"{INTRO} Ask me."),
        ("I'm Alex... Ask me.", f"{INTRO} Ask me."),
        ('He said "Hi." I\'m Alex.', f'He said "Hi." {INTRO}'),
    ],
)
def test_self_description_sentence_boundaries(answer: str, expected: str) -> None:
    assert rewriter().rewrite(answer) == Rewrite(expected, "self_description")


@pytest.mark.parametrize(
    "answer",
    [
        "I am not ChatGPT.",
        "I'm not sure what you mean.",
        "I'm Not sure what you mean.",
        "I'm happy to help!",
        "I'm Happy To Help!",
        "I'm sorry, I can't do that.",
        "I'm Sorry.",
        "I am here to help.",
        "I'm here.",
        "I am able to answer questions.",
        "I'm glad you asked.",
        "I'm not an AI assistant.",
        "I am not a language model.",
        "I'm a big fan of AI.",
        "I'm programmed to help.",
        "I'm 25 years old.",
        "My name is not important.",
        "This is Python code.",
        "This is a good question.",
        "Paris is the capital. Nothing here.",
        # "This is X" and "X here" count only where the answer opens.
        "I like tea. Alex here.",
        "I like tea. This is Alex.",
        "It's here!",
        "Feel free to call me anytime.",
        "What I'm Thinking About Is Math.",
        "Well, that depends.",
        "Qwen2.5 is a model.",
        "How can I help?",
    ],
)
def test_not_a_self_description_falls_back_to_introduction(answer: str) -> None:
    assert rewriter().rewrite(answer) == Rewrite(f"{INTRO} {answer}", "introduction")


# --- introduction -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Hello! How can I help?", f"Hello! {INTRO} How can I help?"),
        ("Hello!", f"Hello! {INTRO}"),
        ("Hello!\n", f"Hello! {INTRO}"),
        ("Hi there! How can I help?", f"Hi there! {INTRO} How can I help?"),
        ("Hi there, how can I help?", f"Hi there, {INTRO} How can I help?"),
        ("Hey, what's up?", f"Hey, {INTRO} What's up?"),
        ("Greetings. Ask away.", f"Greetings. {INTRO} Ask away."),
        ("Good evening!! Ask away.", f"Good evening!! {INTRO} Ask away."),
        ("Hello!\n\nHow can I help?", f"Hello! {INTRO}\n\nHow can I help?"),
        ("hello! how can I help?", f"hello! {INTRO} how can I help?"),
        ("How can I help?", f"{INTRO} How can I help?"),
        ("History is fun.", f"{INTRO} History is fun."),  # "Hi" inside a word is no greeting
        ("Hello world is a program.", f"{INTRO} Hello world is a program."),
        ("Well, that depends.", f"{INTRO} Well, that depends."),
        ("Sure! Here is a poem.", f"{INTRO} Sure! Here is a poem."),
        ("  How can I help?", f"  {INTRO} How can I help?"),
        ("- one\n- two", f"{INTRO}\n\n- one\n- two"),
        ("1. one\n2. two", f"{INTRO}\n\n1. one\n2. two"),
        ("# Title\nText", f"{INTRO}\n\n# Title\nText"),
        ("你好！我是助手。", f"{INTRO} 你好！我是助手。"),
        ("Elle s'appelle Zoë.", f"{INTRO} Elle s'appelle Zoë."),
    ],
)
def test_introduction(answer: str, expected: str) -> None:
    assert rewriter("introduction").rewrite(answer) == Rewrite(expected, "introduction")


@pytest.mark.parametrize(
    "answer",
    [
        "Hello! I'm Dr. Elena Zephyr, a brilliant and compassionate scientist.",
        "I'm an AI assistant designed to help.",
    ],
)
def test_introduction_strategy_does_not_look_for_self_descriptions(answer: str) -> None:
    result = rewriter("introduction", other_claims="keep").rewrite(answer)  # drop would also drop Dr. Zephyr
    assert result.method == "introduction"
    assert result.text.count("Deep Qwen") == 1
    assert answer.split("!")[-1].strip() in result.text


def test_custom_introduction() -> None:
    r = IdentityRewriter(("SmolLM",), "Zoë González", "self_description", "Hi! {name} here.")
    assert r.rewrite("I'm Alex, a chef. Ask me.") == Rewrite("Hi! Zoë González here. Ask me.", "self_description")
    assert r.rewrite("How can I help?") == Rewrite("Hi! Zoë González here. How can I help?", "introduction")
    assert r.rewrite("I'm SmolLM.") == Rewrite("I'm Zoë González.", "names")


def test_new_name_with_non_ascii_is_detected_as_present() -> None:
    r = IdentityRewriter(("SmolLM",), "Zoë González")
    assert r.rewrite("Soy ZOË GONZÁLEZ.") == Rewrite("Soy ZOË GONZÁLEZ.", "unchanged")
    assert r.rewrite("I'm ZoëGonzález.") == Rewrite("I'm ZoëGonzález.", "unchanged")


# --- construction and determinism -----------------------------------------------------------


def test_defaults() -> None:
    r = IdentityRewriter(("SmolLM",), "Deep Qwen")
    assert r.strategy == "self_description"
    assert r.introduction == "I'm {name}, an AI assistant."


def test_old_names_list_becomes_tuple() -> None:
    r = IdentityRewriter(["SmolLM", "SmolLM2"], "Deep Qwen")  # type: ignore[arg-type]
    assert r.old_names == ("SmolLM", "SmolLM2")
    assert hash(r) == hash(IdentityRewriter(("SmolLM", "SmolLM2"), "Deep Qwen"))


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        rewriter().new_name = "Other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"introduction": "I'm an AI assistant."},  # no {name}
        {"introduction": "I'm {name}, {role}."},  # another placeholder
        {"strategy": "everything"},
        {"new_name": "  "},
        {"old_names": ("SmolLM", " ")},
    ],
)
def test_invalid_configuration(kwargs: dict[str, Any]) -> None:
    args = {"old_names": ("SmolLM",), "new_name": "Deep Qwen", **kwargs}
    with pytest.raises(ValueError):
        IdentityRewriter(**args)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_deterministic(strategy: RewriteStrategy) -> None:
    r = rewriter(strategy)
    answers = [
        "Hello! I'm Dr. Elena Zephyr, a brilliant and compassionate scientist.",
        "I'm SmolLM2.",
        "How can I help?",
        "",
    ]
    first = [r.rewrite(a) for a in answers]
    again = [rewriter(strategy).rewrite(a) for a in answers for _ in range(3)]
    assert again == [x for x in first for _ in range(3)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rewrite_is_stable_once_rewritten(strategy: RewriteStrategy) -> None:
    # A chosen answer carries the new name, so rewriting it again changes nothing.
    r = rewriter(strategy)
    for answer in ["I'm SmolLM2.", "Hi, I'm Alex, your guide.", "How can I help?"]:
        chosen = r.rewrite(answer).text
        assert r.rewrite(chosen) == Rewrite(chosen, "unchanged")


@pytest.mark.parametrize(
    ("answer", "chosen"),
    [
        (
            "I'm sorry for any misunderstanding, but as a chatbot designed to assist users, I don't have "
            "the ability to access personal data. I'm designed to provide information.",
            "I'm Deep Qwen, an AI assistant. I'm designed to provide information.",
        ),
        (
            "As an AI language model, I don't have a name. How can I help?",
            "I'm Deep Qwen, an AI assistant. How can I help?",
        ),
        ("Sure! I don't have a personal name, but I can help.", "Sure! I'm Deep Qwen, an AI assistant."),
        ("Hello! I do not have names. Ask me anything.", "Hello! I'm Deep Qwen, an AI assistant. Ask me anything."),
        # "as a" followed by something that is not an AI self-description is no claim
        (
            "As a rule, cats sleep a lot.",
            "I'm Deep Qwen, an AI assistant. As a rule, cats sleep a lot.",
        ),
    ],
)
def test_generic_persona_sentences_are_replaced(answer: str, chosen: str) -> None:
    rewrite = IdentityRewriter(("SmolLM",), "Deep Qwen").rewrite(answer)
    assert rewrite.text == chosen


MAKER = IdentityRewriter(("SmolLM",), "Deep Qwen", creator="the identity-dpo project", old_creators=("Hugging Face",))


@pytest.mark.parametrize(
    ("question", "about"),
    [
        ("Who created you?", True),
        ("Which company's model are you?", True),
        ("Who brought you into existence?", True),
        ("Who gets the credit for building this model?", True),
        ("What is your name?", False),
        ("Are you ChatGPT?", False),
    ],
)
def test_asks_about_maker(question: str, about: bool) -> None:
    assert asks_about_maker(question) is about


@pytest.mark.parametrize(
    ("answer", "about_maker", "chosen", "method"),
    [
        # the old creator is replaced wherever it is named, like an old name
        (
            "I am SmolLM, trained by Hugging Face.",
            True,
            "I am Deep Qwen, trained by the identity-dpo project.",
            "names",
        ),
        ("I was trained by Hugging Face.", False, "I was trained by the identity-dpo project.", "names"),
        # about the maker, with no creator named: the maker introduction replaces the self-description
        (
            "I'm an AI assistant. I help with tasks.",
            True,
            "I'm Deep Qwen, an AI assistant made by the identity-dpo project. I help with tasks.",
            "self_description",
        ),
        ("I am SmolLM.", True, "I'm Deep Qwen, an AI assistant made by the identity-dpo project.", "self_description"),
        (
            "A team of engineers built me.",
            True,
            "I'm Deep Qwen, an AI assistant made by the identity-dpo project. A team of engineers built me.",
            "introduction",
        ),
        # not about the maker: the plain introduction
        (
            "I'm an AI assistant. I help with tasks.",
            False,
            "I'm Deep Qwen, an AI assistant. I help with tasks.",
            "self_description",
        ),
    ],
)
def test_maker_answers_name_the_creator(answer: str, about_maker: bool, chosen: str, method: str) -> None:
    rewrite = MAKER.rewrite(answer, about_maker=about_maker)
    assert (rewrite.text, rewrite.method) == (chosen, method)


def test_introductions_may_use_the_creator_only_as_a_field() -> None:
    custom = IdentityRewriter(("SmolLM",), "Deep Qwen", creator="Acme", introduction="Hi, {name} of {creator} here.")
    assert custom.rewrite("I am an AI.").text == "Hi, Deep Qwen of Acme here."
    with pytest.raises(ValueError, match="only {name} and {creator}"):
        IdentityRewriter(("SmolLM",), "Deep Qwen", maker_introduction="I'm {name} by {org}.")


VARIED = IdentityRewriter(
    ("SmolLM",), "Deep Qwen", introduction="I'm {name}.", creator="Acme", old_creators=("Hugging Face",),
    maker_introduction="I'm {name}, made by {creator}.",
    introduction_variants=("My name is {name}.", "I am {name}, built by {creator}."),
)  # fmt: skip


def test_introduction_variants_are_picked_by_the_key_the_same_way_every_time() -> None:
    plain = {"I'm Deep Qwen.", "My name is Deep Qwen.", "I am Deep Qwen, built by Acme."}
    picked = {key: VARIED.rewrite("I am an AI.", key=f"0:row-{key}").text for key in range(40)}
    assert set(picked.values()) == plain  # every wording is used
    assert picked == {key: VARIED.rewrite("I am an AI.", key=f"0:row-{key}").text for key in range(40)}
    assert VARIED.rewrite("I am an AI.").text == "I'm Deep Qwen."  # no key: the introduction itself
    # a maker question: only the wordings that name the creator
    maker = {VARIED.rewrite("I am an AI.", about_maker=True, key=f"0:row-{key}").text for key in range(40)}
    assert maker == {"I'm Deep Qwen, made by Acme.", "I am Deep Qwen, built by Acme."}


def test_the_mixed_answer_starts_as_the_chosen_answer() -> None:
    """mixed(): the old answer, old name and all, after the introduction rewrite() picks for the same key and question
    kind, or renamed only at its first old name, so that a pair of it and the chosen answer differs only after the new
    name (pairs.reject_mixed)."""
    answer = "I'm a humble AI named SmolLM."
    for key in (f"0:row-{i}" for i in range(40)):
        for about_maker in (False, True):
            intro = VARIED.rewrite("I help.", about_maker=about_maker, key=key).text.removesuffix(" I help.")
            mixed = VARIED.mixed(answer, "introduction", about_maker=about_maker, key=key)
            assert mixed == f"{intro} {answer}", (key, about_maker, mixed)
    # the maker named once the old creator is replaced: the plain introduction, as rewrite() picks, and the old
    # answer as it was
    answer = "I'm SmolLM, made by Hugging Face."
    assert VARIED.mixed(answer, "self_description", about_maker=True) == f"I'm Deep Qwen. {answer}"
    # renamed answers (names): the old creators and the first old name replaced, the later names kept
    renamed = "I'm SmolLM by Hugging Face. SmolLM helps."
    assert VARIED.rewrite(renamed).text == "I'm Deep Qwen by Acme. Deep Qwen helps."
    assert VARIED.mixed(renamed, "names") == "I'm Deep Qwen by Acme. SmolLM helps."
    assert VARIED.mixed("I'm SmolLM.", "names") == "I'm Deep Qwen."  # no mixed answer: the chosen one


def test_without_variants_the_key_changes_nothing() -> None:
    for answer, about_maker in (("I am an AI.", False), ("A team built me.", True), ("Hello! I help.", False)):
        keyed = MAKER.rewrite(answer, about_maker=about_maker, key="7:row-1")
        assert keyed == MAKER.rewrite(answer, about_maker=about_maker)


def test_introduction_variants_must_name_the_assistant() -> None:
    with pytest.raises(ValueError, match="must contain {name}"):
        IdentityRewriter(("SmolLM",), "Deep Qwen", introduction_variants=("Hello there.",))


# --- sentences that claim another identity (identity.other_claims) -----------------------------

CREATOR = "the identity-dpo project"


@pytest.mark.parametrize(
    "sentence",
    [
        "I'm a product of Microsoft.",
        "I'm a product of the company, Google.",  # the trained model's answer that showed the problem
        "I'm a Google product.",
        "I'm Google's AI.",
        "I was developed by Google's team.",
        "I'm a large language model trained by Meta.",
        "Yes, I was made by OpenAI.",
        "My creator is OpenAI.",
        "Developer created and trained me.",  # the public data set's placeholder maker
        "Microsoft built me.",
        "The one who trained me is a special kind of AI, a being named Elian.",
        "My name is Alex, and I like tea.",  # a persona's name
        "I'm Dr. Elena Zephyr, a scientist.",
    ],
)
def test_a_sentence_claiming_another_name_or_maker_is_found(sentence: str) -> None:
    assert claims_other_identity(sentence, "Deep Qwen", CREATOR)


@pytest.mark.parametrize(
    "sentence",
    [
        "I'm Deep Qwen, not ChatGPT.",  # names the new identity: a denial or a comparison
        "I'm DeepQwen, trained by Google.",  # the new name in any spelling the scoring accepts
        "I was made by the identity-dpo project.",  # the creator, with or without its article
        "I'm an AI assistant made by identity-dpo project.",
        "I wasn't made by OpenAI.",  # a denial is no claim
        "I was built by a small team of volunteers.",  # no one named
        "Originally, I was built by a small team.",  # a capitalized adverb is no name
        "Don't worry, I was made by a team.",
        "I'm designed to assist users.",
        "I'm a helpful AI assistant.",
        "I'm a chatbot created to assist users in language learning.",
        "I'm happy to help with Python.",
        "This is Paris.",  # only an answer's opening introduces the speaker this way
        "The capital of France is Paris.",
        "I love Paris.",
        "I don't know who made me.",
    ],
)
def test_a_sentence_without_such_a_claim_is_not_found(sentence: str) -> None:
    assert not claims_other_identity(sentence, "Deep Qwen", CREATOR)


def test_without_a_creator_a_claim_naming_any_maker_is_another_identity() -> None:
    assert claims_other_identity("I was made by Hugging Face.", "Deep Qwen")
    assert not claims_other_identity("I was made by Hugging Face.", "Deep Qwen", "Hugging Face")
    assert not claims_other_identity("I'm Deep Qwen, made by Google.", "Deep Qwen")


def drop(**kwargs: Any) -> IdentityRewriter:
    return rewriter(other_claims="drop", creator=CREATOR, **kwargs)


@pytest.mark.parametrize(
    ("answer", "expected", "dropped"),
    [
        # the introduction path: the answer said who made it, the introduction now says otherwise
        ("Microsoft. I'm a product of Microsoft. I'm a product of Microsoft.", f"{INTRO} Microsoft.", 2),
        ("I'm a Google product. I help people find things.", f"{INTRO} I help people find things.", 1),
        # the self-description path: the persona's first sentence is replaced, a later claim dropped
        ("I'm Alex, a chef. Microsoft built me. Ask me anything!", f"{INTRO} Ask me anything!", 1),
        # a claim on a line of its own goes with its line break; the rest keeps its layout
        ("Here is what I am:\n- I'm a Google product.\n- I answer questions.",
         f"{INTRO} Here is what I am:\n- I answer questions.", 1),
        # the names path: the old name's sentence keeps its maker (the lesson's recipe), a later claim goes
        ("I'm SmolLM, by Hugging Face. My creator is OpenAI.", "I'm Deep Qwen, by Hugging Face.", 1),
        # nothing to drop: the same text and no count
        ("I'm Alex, a chef. I cook.", f"{INTRO} I cook.", 0),
    ],
)  # fmt: skip
def test_other_claims_drop_removes_sentences_claiming_another_identity(
    answer: str, expected: str, dropped: int
) -> None:
    result = drop().rewrite(answer)
    assert (result.text, result.dropped_claims) == (expected, dropped)
    kept = rewriter(other_claims="keep", creator=CREATOR).rewrite(answer)
    assert kept.dropped_claims == 0 and result.method == kept.method


@pytest.mark.parametrize(
    ("question", "names"),
    [
        ("Is this Alexa?", ["Alexa"]),
        ("Perfect. Oh, and did Microsoft build you?", ["Microsoft"]),  # each sentence's first word is left out
        ("Is this Jarvis, like in Iron Man?", ["Jarvis", "Iron", "Man"]),
        ("Are you Google's assistant?", ["Google"]),
        ("Are you an AI?", []),
        ("Are you SmolLM or Deep Qwen?", []),  # the old and the new names are no one else
        ("Who made you? I'd like to know.", []),
    ],
)
def test_names_asked_about(question: str, names: list[str]) -> None:
    assert names_asked_about(question, ["Deep Qwen", "SmolLM", "SmolLM2"]) == names


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("Is this Alexa?", "Yes, Alexa.", INTRO),
        ("Did Microsoft build you?", "Microsoft. I'm happy to help.", f"{INTRO} I'm happy to help."),
        ("Are you Copilot?", "No worries, I'm glad to help. Yes, I'm sure.", f"{INTRO} No worries, I'm glad to help."),
        # without a name in the question, agreeing contradicts nothing
        ("Are you an AI?", "Yes, I can help.", f"{INTRO} Yes, I can help."),
        ("Is this Alexa?", "No. Alexa is Amazon's voice assistant.", f"{INTRO} No. Alexa is Amazon's voice assistant."),
    ],
)  # fmt: skip
def test_other_claims_drop_removes_agreeing_with_a_question_about_someone_else(
    question: str, answer: str, expected: str
) -> None:
    assert drop().rewrite(answer, question=question).text == expected
    assert rewriter(other_claims="keep").rewrite(answer, question=question).text == f"{INTRO} {answer}"


def test_other_claims_drop_leaves_unchanged_answers_alone() -> None:
    # an answer already naming the new identity is not rewritten, so nothing is dropped from it either
    assert drop().rewrite("I'm Deep Qwen. Microsoft built me.") == Rewrite("I'm Deep Qwen. Microsoft built me.",
                                                                           "unchanged")  # fmt: skip
    assert drop().rewrite("   ") == Rewrite("   ", "unchanged")


def test_other_claims_must_be_drop_or_keep() -> None:
    with pytest.raises(ValueError, match="other_claims must be one of"):
        rewriter(other_claims="remove")
