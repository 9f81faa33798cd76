"""Preference pairs: the model's own answer is rejected, the same answer carrying the new name is chosen."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from identity_dpo.chat_format import with_system
from identity_dpo.data import Prompt
from identity_dpo.errors import DataError
from identity_dpo.generation import Generation
from identity_dpo.names import mentions
from identity_dpo.params import OnTokenCap
from identity_dpo.rewrite import IdentityRewriter, asks_about_maker, sentences

# The end of a sentence: terminal punctuation, optionally closing quotes/brackets, then space or the end.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*(?=\s|$)")


_COUNT_KEYS = (
    "prompts", "pairs", "dropped_failed_generation", "dropped_at_token_cap", "dropped_identical",
    "hit_token_cap", "rejected_says_old_name",
    "rewrite_names", "rewrite_self_description", "rewrite_introduction", "other_claims_dropped",
    "rehearsal_pairs", "rehearsal_contrasted", "rehearsal_cut_off", "rehearsal_dropped", "mixed_pairs",
    "extended_at_token_cap", "old_system_pairs",
)  # fmt: skip


def select_prompts(prompts: Sequence[Prompt], max_prompts: int, seed: int) -> list[Prompt]:
    """A seeded sample (0 = all), so a small run still covers every kind of identity question."""
    if max_prompts == 0 or max_prompts >= len(prompts):
        return list(prompts)
    return random.Random(seed).sample(list(prompts), max_prompts)


def trim_to_sentence(text: str) -> str:
    """Cut an answer that hit the token cap back to its last complete sentence ('' if none).

    Training on a cut-off chosen answer would teach the model to stop mid-sentence, because
    the trainer appends an end-of-turn token to every completion.
    """
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].rstrip() if ends else ""


def cut_to_sentences(text: str, count: int) -> str:
    """The first `count` complete sentences of `text` ('' if it has fewer), as trim_to_sentence finds them."""
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[count - 1].end()].rstrip() if count > 0 and len(ends) >= count else ""


def extend_answers(
    answers: Sequence[Generation], again: Sequence[int], longer: Sequence[Generation]
) -> tuple[list[Generation], int]:
    """`answers` with answer `again[k]` replaced by `longer[k]` (the same prompt answered with a higher cap) cut to
    one complete sentence more than the original keeps once trimmed; and how many were replaced. An answer stays as
    it is where the longer one failed or has no such sentence. A replaced answer counts as finished only where the
    cut kept the whole longer answer and the model had ended it."""
    extended = list(answers)
    replaced = 0
    for index, long in zip(again, longer, strict=True):
        count = len(_SENTENCE_END.findall(answers[index].text)) + 1  # the sentences a trim keeps, and one more
        text = cut_to_sentences(long.text, count) if long.ok else ""
        if text:
            extended[index] = Generation(text, long.new_tokens, long.finished and text == long.text.rstrip())
            replaced += 1
    return extended, replaced


def old_system_messages(
    templates: Sequence[str], old_names: Sequence[str], old_creators: Sequence[str]
) -> tuple[str, ...]:
    """Every pairs.old_system_prompts template filled with every old name (and old maker, where it names one): the
    system messages that name an old identity, which some pairs are asked under (PairBuilder.system_for)."""
    messages: dict[str, None] = {}  # ordered and without repeats, so the seeded pick is stable
    for template in templates:
        for name in old_names:
            for creator in old_creators if "{old_creator}" in template else [""]:
                messages[template.format(old_name=name, old_creator=creator)] = None
    return tuple(messages)


@dataclass(frozen=True)
class PairBuilder:
    rewriter: IdentityRewriter
    system_prompt: str
    on_token_cap: OnTokenCap = "trim"
    rehearsal_contrast: float = 0.0  # the share of rehearsal pairs that reject the answer opened with the introduction
    seed: int = 0  # which rehearsal pairs those are, and which introduction_variants wording each answer gets
    # The system message the saved chat template supplies when a conversation has none, and the share of pairs (a
    # seeded sample, by pair id) asked under it instead of system_prompt: the model then also learns its identity in
    # the setting it runs in by default (no system message), not only under the neutral one.
    default_system_prompt: str = ""
    default_system_share: float = 0.0
    # A second pair for each identity pair whose rejected answer names an old name: the same chosen answer against the
    # mixed answer a half-renamed model gives, the new name first and the old one after it (IdentityRewriter.mixed),
    # which the base's answer alone, starting elsewhere, does not teach against.
    reject_mixed: bool = False
    # System messages that name an old identity (old_system_messages), and the share of pairs asked under one of
    # them: their chosen answers keep the new name where the system message says otherwise. The base model's own
    # default system message names the old model too, and without such pairs the trained model reads its name from
    # there ("I'm Deep Qwen, ... named SmolLM"; docs/experiments.md).
    old_system_prompts: tuple[str, ...] = ()
    old_system_share: float = 0.0

    def system_for(self, pair_id: str) -> str:
        """The system message of pair `pair_id`: default_system_prompt for a seeded share of the ids, one of
        old_system_prompts for the next old_system_share of them, else system_prompt. Drawn per id, so a pair keeps
        its system message whatever else is in the set (and whatever old_system_share is, where it is not one of
        those)."""
        draw = random.Random(f"{self.seed}:system:{pair_id}")
        share = draw.random()
        if share < self.default_system_share:
            return self.default_system_prompt
        if share < self.default_system_share + self.old_system_share:
            return draw.choice(self.old_system_prompts)
        return self.system_prompt

    def build(
        self, prompts: Sequence[Prompt], answers: Sequence[Generation]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Turn answers into TRL conversational pairs; count every answer that is not used and why."""
        counts: Counter[str] = Counter(dict.fromkeys(_COUNT_KEYS, 0))  # stable keys for `dvc metrics diff`
        pairs = []
        first_failure = ""
        for prompt, answer in zip(prompts, answers, strict=True):
            counts["prompts"] += 1
            if not answer.ok:
                counts["dropped_failed_generation"] += 1
                first_failure = first_failure or f"{prompt.id}: {answer.error or 'an empty answer'}"
                continue
            rejected = answer.text
            if not answer.finished:
                counts["hit_token_cap"] += 1
                if self.on_token_cap in ("trim", "extend"):
                    rejected = trim_to_sentence(rejected)
                if self.on_token_cap == "drop" or not rejected:
                    counts["dropped_at_token_cap"] += 1
                    continue
            counts["rejected_says_old_name"] += mentions(rejected, self.rewriter.old_names)
            rewrite = self.rewriter.rewrite(rejected, question=prompt.question, **self._rewrite_context(prompt))
            if rewrite.text == rejected:
                counts["dropped_identical"] += 1  # zero DPO gradient, and it would dilute the batch
                continue
            counts[f"rewrite_{rewrite.method}"] += 1
            counts["other_claims_dropped"] += rewrite.dropped_claims
            system = self.system_for(prompt.id)
            counts["old_system_pairs"] += system in self.old_system_prompts
            pair = {
                "id": prompt.id,
                "prompt": with_system(prompt.messages, system),
                "chosen": [{"role": "assistant", "content": rewrite.text}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "rewrite": rewrite.method,
            }
            pairs.append(pair)
            if not self.reject_mixed:
                continue
            mixed = self.rewriter.mixed(rejected, rewrite.method, **self._rewrite_context(prompt))
            # A single old name, renamed, has no mixed answer (it is the chosen one).
            if mentions(mixed, self.rewriter.old_names) and mixed not in (rejected, rewrite.text):
                pairs.append({**pair, "id": f"{prompt.id}-mixed", "rejected": [{"role": "assistant", "content": mixed}],
                              "rewrite": "mixed"})  # fmt: skip
                counts["mixed_pairs"] += 1
                counts["old_system_pairs"] += system in self.old_system_prompts
        counts["pairs"] = len(pairs)
        if not pairs:
            raise DataError(self._no_pairs_message(counts, first_failure))
        return pairs, dict(sorted(counts.items()))

    def _rewrite_context(self, prompt: Prompt) -> dict[str, Any]:
        """What the rewriter needs to know of a prompt beyond its answer, the same for the chosen and the mixed
        answer: whether it asks about the maker, and the key that picks the introduction's wording."""
        return {"about_maker": asks_about_maker(prompt.question), "key": f"{self.seed}:{prompt.id}"}

    def single_sentence_chosen(self, prompts: Sequence[Prompt], answers: Sequence[Generation]) -> list[int]:
        """Which answers pairs.on_token_cap: extend asks again with a higher cap: those cut off at the cap whose
        trimmed text the rewrite turns into a chosen answer of one sentence. That is mostly the bare introduction:
        the base's one complete sentence was its self-description ("I'm sorry for any confusion, but as a chatbot
        designed to assist users, I don't have ..."), the rest was cut off, and the introduction replaced it. Trained
        on, the bare introduction becomes the canned answer to identity questions and leaks into short general ones."""
        found = []
        for index, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            trimmed = trim_to_sentence(answer.text) if answer.ok and not answer.finished else ""
            if not trimmed:
                continue
            chosen = self.rewriter.rewrite(trimmed, question=prompt.question, **self._rewrite_context(prompt)).text
            if chosen != trimmed and len(sentences(chosen)) == 1:
                found.append(index)
        return found

    def rehearsal(
        self, prompts: Sequence[str], answers: Sequence[Generation], counts: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Pairs that keep general behaviour: the base model's own complete answer to a general prompt is chosen.
        The NLL (sft) term anchors the model to the base's answers, their content and their length, while the
        identity pairs change who it says it is. The rejected answer is the same (the DPO term gets no gradient from
        the pair), or, for a seeded sample of `rehearsal_contrast` of the prompts, the same opened with the
        introduction (the DPO term also pushes against introducing itself in answers to general prompts).
        An answer cut off by its token cap is kept as it is: that cap is at least train.max_length (params.py checks
        it), so the trainer truncates the answer before its end-of-turn token (trimming or dropping such answers
        would teach, or leave only, short answers). Failed answers and answers that already use the new name are
        dropped. Counted into `counts` (rehearsal_pairs, rehearsal_contrasted, rehearsal_cut_off, rehearsal_dropped,
        and old_system_pairs, those asked under an old identity's system message)."""
        pairs = []
        contrasted = set(
            random.Random(self.seed).sample(range(len(prompts)), round(self.rehearsal_contrast * len(prompts)))
        )
        counts["rehearsal_contrasted"] = 0
        for number, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
            if not answer.ok or mentions(answer.text, [self.rewriter.new_name], normalized=True):
                counts["rehearsal_dropped"] += 1
                continue
            counts["rehearsal_cut_off"] += not answer.finished
            kept = [{"role": "assistant", "content": answer.text}]
            if number in contrasted:
                rejected = [{"role": "assistant", "content": self.rewriter.introduce(answer.text)}]
                counts["rehearsal_contrasted"] += 1
            else:
                rejected = kept
            system = self.system_for(f"rehearsal-{number}")
            counts["old_system_pairs"] = counts.get("old_system_pairs", 0) + (system in self.old_system_prompts)
            pairs.append(
                {
                    "id": f"rehearsal-{number}",
                    "prompt": with_system([{"role": "user", "content": prompt}], system),
                    "chosen": kept,
                    "rejected": rejected,
                    "rewrite": "rehearsal",
                }
            )
        counts["rehearsal_pairs"] = len(pairs)
        counts["pairs"] += len(pairs)
        return pairs

    def _no_pairs_message(self, counts: Counter[str], first_failure: str) -> str:
        """Why every answer was dropped, and what to change for the commonest reason."""
        failed, capped, same = (
            counts["dropped_failed_generation"], counts["dropped_at_token_cap"], counts["dropped_identical"]
        )  # fmt: skip
        _, hint = max(
            (failed, "the base model (models/base) produced no usable answer: check model.source"),
            (capped, "raise pairs.max_new_tokens, or set pairs.on_token_cap: keep"),
            (same, "check identity.old_names, or use identity.rewrite: self_description or introduction"),
            key=lambda item: item[0],
        )
        return (
            f"no usable pairs from {counts['prompts']} prompts: "
            f"{failed} generations failed or were empty"
            + (f" (first: {first_failure})" if first_failure else "")
            + ", "
            f"{capped} were cut off by pairs.max_new_tokens (pairs.on_token_cap: {self.on_token_cap}), "
            f"{same} rewrites left the answer unchanged (check identity.old_names and identity.rewrite). "
            f"Nothing to train on; {hint}"
        )
