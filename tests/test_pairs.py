from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from identity_dpo.data import Prompt
from identity_dpo.errors import DataError
from identity_dpo.generation import Generation
from identity_dpo.pairs import (
    PairBuilder,
    cut_to_sentences,
    extend_answers,
    old_system_messages,
    select_prompts,
    trim_to_sentence,
)
from identity_dpo.rewrite import IdentityRewriter

SYSTEM = "You're a helpful assistant."
# SmolLM2's own template sentence: the evaluation's held-out `base_default` system message.
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def _builder(strategy: str = "self_description", on_token_cap: str = "trim") -> PairBuilder:
    rewriter = IdentityRewriter(("SmolLM", "SmolLM2"), "Deep Qwen", strategy)  # type: ignore[arg-type]
    return PairBuilder(rewriter, SYSTEM, on_token_cap)  # type: ignore[arg-type]


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(f"row-{i}", [{"role": "user", "content": f"Question {i}?"}]) for i in range(n)]


def test_pair_shape_and_system_prompt() -> None:
    answers = [Generation("I am SmolLM, trained by Hugging Face.", 9, True)]
    pairs, counts = _builder().build(_prompts(1), answers)
    assert pairs == [
        {
            "id": "row-0",
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Question 0?"}],
            "chosen": [{"role": "assistant", "content": "I am Deep Qwen, trained by Hugging Face."}],
            "rejected": [{"role": "assistant", "content": "I am SmolLM, trained by Hugging Face."}],
            "rewrite": "names",
        }
    ]
    assert counts["rejected_says_old_name"] == 1
    assert counts["rewrite_names"] == 1


def test_failed_empty_identical_and_cut_off_answers_are_counted_not_trained() -> None:
    answers = [
        Generation("", 0, False, error="RuntimeError: out of memory"),
        Generation("", 3, True),  # only an end-of-turn token
        Generation("I'm Deep Qwen already.", 6, True),  # nothing to change: zero gradient
        Generation("no sentence end before the cap", 64, False),
        Generation("Hello! Nice to meet you. And then the cap cut", 64, False),
    ]
    pairs, counts = _builder().build(_prompts(5), answers)
    assert counts["dropped_failed_generation"] == 2
    assert counts["dropped_identical"] == 1
    assert counts["dropped_at_token_cap"] == 1
    assert counts["hit_token_cap"] == 2
    assert [p["rejected"][0]["content"] for p in pairs] == ["Hello! Nice to meet you."]
    assert pairs[0]["chosen"][0]["content"] == "Hello! I'm Deep Qwen, an AI assistant. Nice to meet you."
    assert counts["pairs"] == 1


def test_sentences_claiming_another_maker_are_dropped_and_counted_with_other_claims_drop() -> None:
    answer = "I'm a Google product. I help people. I'm a product of Microsoft."
    for other_claims, chosen, dropped in (
        ("keep", f"I'm Deep Qwen, an AI assistant. {answer}", 0),
        ("drop", "I'm Deep Qwen, an AI assistant. I help people.", 2),
    ):
        rewriter = IdentityRewriter(("SmolLM",), "Deep Qwen", other_claims=other_claims)  # type: ignore[arg-type]
        pairs, counts = PairBuilder(rewriter, SYSTEM).build(_prompts(1), [Generation(answer, 20, True)])
        assert pairs[0]["chosen"][0]["content"] == chosen and pairs[0]["rejected"][0]["content"] == answer
        assert counts["other_claims_dropped"] == dropped


def test_keep_and_drop_at_token_cap() -> None:
    answer = [Generation("My name is Alex and I like", 8, False)]
    kept, _ = _builder(on_token_cap="keep").build(_prompts(1), answer)
    assert kept[0]["rejected"][0]["content"] == "My name is Alex and I like"
    with pytest.raises(DataError, match="1 were cut off by pairs.max_new_tokens"):
        _builder(on_token_cap="drop").build(_prompts(1), answer)


def test_cut_to_sentences() -> None:
    text = "One. Two? Three! And a cut"
    assert [cut_to_sentences(text, n) for n in range(5)] == ["", "One.", "One. Two?", "One. Two? Three!", ""]


def test_extend_asks_again_where_the_chosen_answer_would_be_the_bare_introduction() -> None:
    sorry = "I'm sorry, but as a chatbot designed to assist users, I don't have personal data."
    answers = [
        Generation(f"{sorry} I can help with your questi", 48, False),  # the bare introduction once trimmed
        Generation(f"{sorry} I can help with questions. And then the cap cut", 48, False),  # two sentences kept
        Generation(sorry, 20, True),  # the base's whole answer: one sentence, finished, nothing to ask again
        Generation("Hello there, nice to see you and then the cap cut", 48, False),  # nothing left once trimmed
        Generation("", 0, False, error="RuntimeError"),
    ]
    builder = _builder(on_token_cap="extend")
    again = builder.single_sentence_chosen(_prompts(5), answers)
    assert again == [0]
    longer = [Generation(f"{sorry} I can help with your questions. I answer in English. And a second cu", 96, False)]
    extended, replaced = extend_answers(answers, again, longer)
    assert replaced == 1 and extended[1:] == answers[1:]
    assert extended[0] == Generation(f"{sorry} I can help with your questions.", 96, False)
    pairs, counts = builder.build(_prompts(5), extended)
    assert pairs[0]["rejected"][0]["content"] == f"{sorry} I can help with your questions."
    assert pairs[0]["chosen"][0]["content"] == "I'm Deep Qwen, an AI assistant. I can help with your questions."
    assert counts["hit_token_cap"] == 3 and counts["dropped_at_token_cap"] == 1
    # With trim the same answer is the bare introduction, which extend exists to avoid.
    trimmed, _ = _builder(on_token_cap="trim").build(_prompts(1), answers[:1])
    assert trimmed[0]["chosen"][0]["content"] == "I'm Deep Qwen, an AI assistant."
    assert _builder(on_token_cap="trim").single_sentence_chosen(_prompts(5), answers) == [0]  # the same question


def test_extend_keeps_the_answer_where_the_longer_one_has_no_further_sentence() -> None:
    sorry = "I'm sorry, but I'm a chatbot."
    answers = [Generation(f"{sorry} I can", 48, False)] * 3
    longer = [
        Generation(f"{sorry} I can help with a very long sentence that the larger cap cut off as wel", 96, False),
        Generation("", 0, False, error="RuntimeError: out of memory"),
        Generation(f"{sorry} I can help.", 40, True),  # the model ended it: the whole answer, finished
    ]
    extended, replaced = extend_answers(answers, [0, 1, 2], longer)
    assert replaced == 1
    assert extended[:2] == answers[:2]
    assert extended[2] == Generation(f"{sorry} I can help.", 40, True)


def test_the_make_pairs_stage_asks_only_those_answers_again_with_twice_the_cap(
    default_params: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from identity_dpo.params import params_from_dict
    from stage_harness import load_stage

    make_pairs = load_stage("make_pairs")
    cut = Generation("I'm sorry, but I'm a chatbot. I can", 48, False)
    answers = [Generation("Hello! I am SmolLM.", 6, True), cut]
    conversations = [p.messages for p in _prompts(2)]
    asked: list[tuple[list, int]] = []

    def generate(model: object, tokenizer: object, convs: list, *, max_new_tokens: int, **_: object) -> list:
        asked.append((convs, max_new_tokens))
        return [Generation("I'm sorry, but I'm a chatbot. I can help. And more", max_new_tokens, False)]

    monkeypatch.setattr(make_pairs, "generate", generate)
    for cap, extended in (("trim", answers), ("extend", [answers[0], Generation(
            "I'm sorry, but I'm a chatbot. I can help.", 96, False)])):  # fmt: skip
        default_params["pairs"]["on_token_cap"] = cap
        params = params_from_dict(default_params)
        got = make_pairs.extended_answers(None, None, _builder(on_token_cap=cap), _prompts(2), conversations,
                                          answers, params, "fp32")  # fmt: skip
        assert got == (extended, len(asked))
    assert asked == [([conversations[1]], 2 * default_params["pairs"]["max_new_tokens"])]


def test_no_usable_pairs_is_a_clear_error() -> None:
    answers = [Generation("Paris is the capital of France.", 7, True)] * 2
    with pytest.raises(DataError, match=r"no usable pairs from 2 prompts: .*2 rewrites left the answer unchanged"):
        _builder(strategy="names").build(_prompts(2), answers)


def test_metric_keys_are_stable() -> None:
    _, few = _builder().build(_prompts(1), [Generation("Hi.", 2, True)])
    _, other = _builder().build(_prompts(1), [Generation("I am SmolLM.", 4, True)])
    assert set(few) == set(other)


@pytest.mark.parametrize(
    ("text", "trimmed"),
    [
        ("One. Two", "One."),
        ('He said "hi." Then', 'He said "hi."'),
        ("Really? Yes! And", "Really? Yes!"),
        ("No end at all", ""),
        ("Version 2.5 is out and", ""),
    ],
)
def test_trim_to_sentence(text: str, trimmed: str) -> None:
    assert trim_to_sentence(text) == trimmed


def test_select_prompts_is_a_seeded_sample() -> None:
    prompts = _prompts(50)
    first = select_prompts(prompts, 10, seed=3)
    assert first == select_prompts(prompts, 10, seed=3)
    assert first != select_prompts(prompts, 10, seed=4)
    assert len(set(p.id for p in first)) == 10
    assert select_prompts(prompts, 0, seed=3) == prompts


def test_rehearsal_pairs_keep_the_base_answer_whole() -> None:
    builder = _builder()
    _, counts = builder.build(_prompts(1), [Generation("I am SmolLM.", 4, True)])
    answers = [
        Generation("Paris is the capital of France.", 7, True),
        Generation("Water boils at 100 degrees. It also", 9, False),  # cut off: kept whole (training truncates it)
        Generation("", 0, True, error="failed"),
        Generation("I'm Deep Qwen and Rome is in Italy.", 9, True),  # already says the name: no use as an anchor
    ]
    pairs = builder.rehearsal(["Capital of France?", "When does water boil?", "Hi?", "Where is Rome?"], answers, counts)
    assert pairs == [
        {
            "id": "rehearsal-0",
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Capital of France?"}],
            "chosen": [{"role": "assistant", "content": "Paris is the capital of France."}],
            "rejected": [{"role": "assistant", "content": "Paris is the capital of France."}],
            "rewrite": "rehearsal",
        },
        {
            "id": "rehearsal-1",
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "When does water boil?"}],
            "chosen": [{"role": "assistant", "content": "Water boils at 100 degrees. It also"}],
            "rejected": [{"role": "assistant", "content": "Water boils at 100 degrees. It also"}],
            "rewrite": "rehearsal",
        },
    ]
    assert counts["rehearsal_pairs"] == 2 and counts["rehearsal_cut_off"] == 1 and counts["rehearsal_dropped"] == 2
    assert counts["pairs"] == 3


def test_contrastive_rehearsal_rejects_the_answer_opened_with_the_introduction() -> None:
    """rehearsal_contrast 1: the chosen answer stays the base's own, the rejected one leaks the name."""
    builder = dataclasses.replace(_builder(), rehearsal_contrast=1.0)
    counts: dict[str, int] = {"pairs": 0, "rehearsal_cut_off": 0, "rehearsal_dropped": 0}
    answers = [Generation("Paris is the capital of France.", 7, True), Generation("Hello! It is 4.", 5, True)]
    pairs = builder.rehearsal(["Capital of France?", "2 + 2?"], answers, counts)
    assert [p["chosen"][0]["content"] for p in pairs] == ["Paris is the capital of France.", "Hello! It is 4."]
    assert [p["rejected"][0]["content"] for p in pairs] == [
        "I'm Deep Qwen, an AI assistant. Paris is the capital of France.",
        "Hello! I'm Deep Qwen, an AI assistant. It is 4.",  # after the greeting, as identity answers get it
    ]
    assert counts["rehearsal_pairs"] == 2 and counts["rehearsal_contrasted"] == 2 and counts["pairs"] == 2


@pytest.mark.parametrize("share", [0.0, 0.25, 0.5])
def test_a_share_of_contrastive_rehearsal_is_a_seeded_sample(share: float) -> None:
    """rehearsal_contrast below 1: that share of the rehearsal pairs (rounded) rejects the introduction, the rest
    reject their chosen answer itself; the same seed picks the same pairs, another seed others."""
    prompts = [f"Question {i}?" for i in range(40)]
    answers = [Generation(f"Answer {i}.", 3, True) for i in range(40)]

    def contrasted(seed: int) -> list[str]:
        counts: dict[str, int] = {"pairs": 0, "rehearsal_cut_off": 0, "rehearsal_dropped": 0}
        builder = dataclasses.replace(_builder(), rehearsal_contrast=share, seed=seed)
        pairs = builder.rehearsal(prompts, answers, counts)
        for pair in pairs:
            assert pair["rejected"] == pair["chosen"] or pair["rejected"][0]["content"].startswith("I'm Deep Qwen")
        ids = [pair["id"] for pair in pairs if pair["rejected"] != pair["chosen"]]
        assert counts["rehearsal_contrasted"] == len(ids) == round(share * 40) and counts["rehearsal_pairs"] == 40
        return ids

    assert contrasted(0) == contrasted(0)
    if share:
        assert contrasted(0) != contrasted(1)


def test_several_rehearsal_samples_ask_each_prompt_that_many_times(default_params: dict) -> None:
    """pairs.rehearsal_samples k: the seeded sample of rehearsal prompts, each k times (a pair per sampled answer)."""
    from identity_dpo.params import params_from_dict
    from stage_harness import load_stage

    make_pairs = load_stage("make_pairs")
    default_params["pairs"]["rehearsal"] = 5
    once = make_pairs.rehearsal_prompts(params_from_dict(default_params))
    default_params["pairs"]["rehearsal_samples"] = 3
    thrice = make_pairs.rehearsal_prompts(params_from_dict(default_params))
    assert len(set(once)) == 5 and thrice == once * 3


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_a_seeded_share_of_pairs_is_asked_under_the_saved_template_s_default_system_message(share: float) -> None:
    """pairs.default_system_share: that share of identity and rehearsal pairs (about, drawn per pair id) carries the
    system message the saved template supplies when a conversation has none; the same ids get the same one."""
    default = "You are Deep Qwen, a helpful AI assistant made by the identity-dpo project."
    builder = dataclasses.replace(_builder(), default_system_prompt=default, default_system_share=share)
    ids = [f"row-{i}" for i in range(200)] + [f"rehearsal-{i}" for i in range(200)]
    systems = [builder.system_for(i) for i in ids]
    assert set(systems) <= {default, builder.system_prompt}
    under_default = systems.count(default) / len(ids)
    assert under_default == share if share in (0.0, 1.0) else abs(under_default - share) < 0.1
    assert systems == [builder.system_for(i) for i in ids]  # drawn per id: the same every time
    counts: dict[str, int] = {"pairs": 0, "rehearsal_cut_off": 0, "rehearsal_dropped": 0}
    answers = [Generation("Paris is the capital.", 5, True), Generation("At 100 degrees.", 4, True)]
    pairs = builder.rehearsal(["Capital of France?", "When does water boil?"], answers, counts)
    assert [p["prompt"][0]["content"] for p in pairs] == [builder.system_for(p["id"]) for p in pairs]


def test_old_system_messages_fill_every_template_with_every_old_name_and_maker_once() -> None:
    templates = ["You are {old_name}.", "You are {old_name}, made by {old_creator}.", "You are {old_name}."]
    messages = old_system_messages(templates, ["SmolLM", "SmolLM2"], ["Hugging Face", "HF"])
    assert messages == (
        "You are SmolLM.", "You are SmolLM2.",
        "You are SmolLM, made by Hugging Face.", "You are SmolLM, made by HF.",
        "You are SmolLM2, made by Hugging Face.", "You are SmolLM2, made by HF.",
    )  # fmt: skip
    assert old_system_messages(["You are {old_name}."], ["SmolLM"], []) == ("You are SmolLM.",)
    assert old_system_messages([], ["SmolLM"], ["HF"]) == ()


def test_the_shipped_old_system_messages_are_not_the_base_s_own_which_the_evaluation_holds_out(
    default_params: dict[str, Any],
) -> None:
    """The evaluation's `base_default` setting asks under the base template's own default system message; the pairs'
    old-identity system messages are other wordings, so that setting still measures a message never trained on."""
    pairs, identity = default_params["pairs"], default_params["identity"]
    messages = old_system_messages(pairs["old_system_prompts"], identity["old_names"], identity["old_creators"])
    assert len(messages) >= 3
    assert SMOLLM_DEFAULT_SYSTEM not in messages
    assert all(any(name in m for name in identity["old_names"]) for m in messages)


@pytest.mark.parametrize(("default_share", "old_share"), [(0.0, 0.0), (0.2, 0.0), (0.2, 0.3), (0.0, 1.0), (0.5, 0.5)])
def test_a_further_seeded_share_of_pairs_is_asked_under_a_system_message_naming_an_old_identity(
    default_share: float, old_share: float
) -> None:
    """pairs.old_system_share: the next share of pairs after default_system_share's (drawn per pair id) is asked under
    one of the old-identity system messages, each of them used; the pairs under the saved template's message are the
    same ones as without it, so adding the lever leaves the other pairs' system messages as they were."""
    default = "You are Deep Qwen, a helpful AI assistant made by the identity-dpo project."
    olds = ("You are SmolLM, a helpful assistant.", "Your name is SmolLM2. You were made by Hugging Face.")
    without = dataclasses.replace(_builder(), default_system_prompt=default, default_system_share=default_share)
    builder = dataclasses.replace(without, old_system_prompts=olds, old_system_share=old_share)
    ids = [f"row-{i}" for i in range(300)] + [f"rehearsal-{i}" for i in range(300)]
    systems = [builder.system_for(i) for i in ids]
    assert set(systems) <= {default, builder.system_prompt, *olds}
    under_old = sum(s in olds for s in systems) / len(ids)
    assert under_old == old_share if old_share in (0.0, 1.0) else abs(under_old - old_share) < 0.07
    assert old_share == 0 or set(olds) <= set(systems)
    assert [s == default for s in systems] == [without.system_for(i) == default for i in ids]
    assert systems == [builder.system_for(i) for i in ids]


def test_pairs_under_an_old_identity_s_system_message_still_choose_the_new_name_and_are_counted() -> None:
    """The identity pair and its mixed pair share the old-identity system message and the chosen answer with the new
    name; old_system_pairs counts every pair so asked, rehearsal pairs too."""
    rewriter = IdentityRewriter(("SmolLM", "SmolLM2"), "Deep Qwen", creator="Acme")
    olds = ("You are SmolLM, a helpful assistant.",)
    builder = PairBuilder(rewriter, SYSTEM, reject_mixed=True, old_system_prompts=olds, old_system_share=1.0)
    prompts = [Prompt("row-0", [{"role": "user", "content": "Who made you?"}])]
    pairs, counts = builder.build(prompts, [Generation("I'm a humble AI named SmolLM.", 8, True)])
    assert [p["id"] for p in pairs] == ["row-0", "row-0-mixed"]
    for pair in pairs:
        assert pair["prompt"][0] == {"role": "system", "content": olds[0]}
        assert "Deep Qwen" in pair["chosen"][0]["content"] and "SmolLM" not in pair["chosen"][0]["content"]
    assert counts["old_system_pairs"] == 2
    builder.rehearsal(["Capital of France?"], [Generation("Paris.", 2, True)], counts)
    assert counts["old_system_pairs"] == 3
    _, plain = dataclasses.replace(builder, old_system_share=0.0).build(prompts, [Generation("I'm SmolLM.", 4, True)])
    assert plain["old_system_pairs"] == 0


def test_reject_mixed_adds_a_pair_against_the_new_name_followed_by_the_old_one() -> None:
    """pairs.reject_mixed: an identity pair whose rejected answer names an old name gets a second pair with the same
    prompt and chosen answer, rejecting the mixed answer (IdentityRewriter.mixed): the chosen answer's introduction
    before the old answer, or only the first of several old names renamed. An answer with no old name, or a single one
    renamed (the mixed answer would be the chosen one), gets none; without the switch nothing changes."""
    rewriter = IdentityRewriter(("SmolLM", "SmolLM2"), "Deep Qwen", creator="Acme")
    builder = PairBuilder(rewriter, SYSTEM)
    questions = ["Who made you?", "Who are you?", "Who are you?", "Who are you?"]
    prompts = [Prompt(f"row-{i}", [{"role": "user", "content": q}]) for i, q in enumerate(questions)]
    answers = [
        Generation("I'm a humble AI named SmolLM.", 8, True),  # the maker not named: the maker introduction
        Generation("I'm an AI assistant, here to help.", 9, True),  # no old name: no mixed pair
        Generation("SmolLM here. SmolLM2 is happy to help.", 9, True),  # renamed twice: the first only
        Generation("SmolLM here, happy to help.", 7, True),  # renamed once: no mixed pair
    ]
    plain, plain_counts = builder.build(prompts, answers)
    pairs, counts = dataclasses.replace(builder, reject_mixed=True).build(prompts, answers)
    assert plain_counts["mixed_pairs"] == 0 and counts["mixed_pairs"] == 2 and counts["pairs"] == 6
    assert [p["id"] for p in pairs] == ["row-0", "row-0-mixed", "row-1", "row-2", "row-2-mixed", "row-3"]
    assert [p for p in pairs if p["rewrite"] != "mixed"] == plain
    for first, mixed in (pairs[0:2], pairs[3:5]):
        assert mixed["prompt"] == first["prompt"] and mixed["chosen"] == first["chosen"] and mixed["rewrite"] == "mixed"
        assert "SmolLM" not in first["chosen"][0]["content"]
    assert pairs[0]["chosen"][0]["content"] == "I'm Deep Qwen, an AI assistant made by Acme."
    assert pairs[1]["rejected"][0]["content"] == f"I'm Deep Qwen, an AI assistant made by Acme. {answers[0].text}"
    assert pairs[4]["rejected"][0]["content"] == "Deep Qwen here. SmolLM2 is happy to help."
