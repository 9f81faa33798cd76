"""Turn the model's own answer (the rejected text) into the chosen answer that carries the new name.

Replacing old names is the lesson's recipe, and it is always tried first. It is not enough for
small models: SmolLM2-135M named itself in 0 of 64 answers and invented personas instead
("I'm Dr. Elena Zephyr, a brilliant and compassionate scientist..."). DPO+NLL training also
inherits what the chosen answer says around the name: putting the new name into that sentence
taught the model to call itself a scientist. So the self-description sentence is replaced as a
whole by a neutral introduction, and an answer without one gets the introduction in front.
The rest of the answer is the base model's, and it may still claim another identity: "I'm Deep Qwen, an AI
assistant made by the identity-dpo project. I'm a product of Microsoft." Trained on, such a chosen answer teaches
the contradiction (the trained model answered "are you made by Google?" with "I'm a product of the company,
Google."), so those sentences are dropped (identity.other_claims).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from identity_dpo.names import creator_core, mentions, replace_names, without_names
from identity_dpo.params import OtherClaims, RewriteStrategy

RewriteMethod = Literal["unchanged", "names", "self_description", "introduction"]


@dataclass(frozen=True)
class Rewrite:
    text: str
    method: RewriteMethod
    dropped_claims: int = 0  # sentences dropped because they claim another name or maker (identity.other_claims)


# --- sentences -------------------------------------------------------------------------------

# Latin terminal punctuation ends a sentence only before whitespace or the end ("2.5", "e.g."
# inside a word do not); CJK punctuation is not followed by a space. A line break always ends
# one, because list items and paragraphs rarely carry their own punctuation.
_BOUNDARY = re.compile(r"[。！？]+|[.!?…]+[\"'”’)\]]*(?=\s|$)|\n")
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "mx", "prof", "sr", "jr", "st", "rev", "capt", "gen", "lt", "col", "sgt",
     "vs", "approx", "cf", "e.g", "i.e"}
)  # fmt: skip
_DOTTED = re.compile(r"[^\W\d_]{1,2}(?:\.[^\W\d_]{1,2})+")
_ELLIPSIS = re.compile(r"\.{2,}|…")
_CONTINUES = re.compile(r"\s+[a-z]")


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the "." at `dot` closes a title or an initial ("Dr.", "e.g.", "J.") rather than a sentence."""
    token = re.search(r"\S+$", text[:dot])
    if token is None:
        return False
    word = token.group().lstrip("([\"'“‘")
    if word.casefold() in _ABBREVIATIONS:
        return True
    if _DOTTED.fullmatch(word):  # "Ph.D.", "U.S."
        return True
    # "J. R. R. Tolkien"; the pronoun "I" ends sentences more often than it is an initial.
    return len(word) == 1 and word.isalpha() and word.isupper() and word != "I"


def _sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences in `text`, without surrounding whitespace, in order."""
    spans = []
    start = 0
    for boundary in _BOUNDARY.finditer(text):
        if boundary.group() == "." and _is_abbreviation(text, boundary.start()):
            continue
        if _ELLIPSIS.fullmatch(boundary.group()) and _CONTINUES.match(text, boundary.end()):
            continue  # "I'm Alex... and I cook" trails off inside one sentence
        end = boundary.start() if boundary.group() == "\n" else boundary.end()
        spans.append((start, end))
        start = boundary.end()
    spans.append((start, len(text)))
    trimmed = []
    for start, end in spans:
        chunk = text[start:end]
        stripped = chunk.strip()
        if stripped:
            offset = start + len(chunk) - len(chunk.lstrip())
            trimmed.append((offset, offset + len(stripped)))
    return trimmed


def sentences(text: str) -> list[str]:
    """The sentences of `text`, as the rewrite splits it (titles, initials and trailing-off ellipses kept inside)."""
    return [text[start:end] for start, end in _sentences(text)]


# --- greetings -------------------------------------------------------------------------------

_GREETING_WORDS = r"(?:hello|hi|hey|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening|day))(?!\w)"
_VOCATIVE = r"(?:\s+(?:there|friend|friends|everyone|all))?"
# Before a self-description the opener may also be an interjection ("Sure, I'm Alex."); it is
# kept because it is the answer's tone, not its persona.
_OPENER_WORDS = (
    r"(?:" + _GREETING_WORDS + r"|(?:welcome|well|oh|ah|sure|of\s+course|certainly|absolutely|yes|okay|ok"
    r"|thanks(?:\s+for\s+asking)?|thank\s+you(?:\s+for\s+asking)?)(?!\w))"
)
_OPENER = re.compile(_OPENER_WORDS + _VOCATIVE + r"\s*[,!.—–-]*\s*", re.IGNORECASE)
# Only a real greeting is kept in front of the introduction: "Well, that depends." must not
# become "Well, I'm Deep Qwen... That depends."
_LEADING_GREETING = re.compile(r"\s*" + _GREETING_WORDS + _VOCATIVE + r"\s*[!.,]+", re.IGNORECASE)
# An answer that opens with Markdown structure gets the introduction as its own paragraph.
_BLOCK_START = re.compile(r"#|[-*+]\s|\d+[.)]\s|>|```|\|")


# --- self-descriptions -----------------------------------------------------------------------

_APOSTROPHE = "['’ʼ]"
_I_AM = rf"(?<!\w)i(?:\s?{_APOSTROPHE}\s?m|\s+am)(?!\w)"
# Phrases that introduce a name anywhere in a sentence; the name itself is checked in code,
# because "capitalized" needs str.isupper (re has no \p{Lu}).
_NAME_LEAD = re.compile(
    rf"(?<!\w)my\s+name(?:\s+is|{_APOSTROPHE}s)\s+"
    rf"|{_I_AM}\s+(?:(?:called|named)\s+)?"
    r"|(?<!\w)call\s+me\s+"
    r"|(?<!\w)i\s+go\s+by\s+",
    re.IGNORECASE,
)
_THIS_IS = re.compile(r"this\s+is\s+", re.IGNORECASE)
_AFTER_THIS_IS_NAME = re.compile(r"\s*(?:[,.!;:—–-]|$)|\s+(?:here|speaking)(?!\w)", re.IGNORECASE)
_AFTER_HERE_NAME = re.compile(r"\s+here(?!\w)(?=\s*(?:[,.!;:—–-]|$))", re.IGNORECASE)
# A generic AI self-description: "I'm an AI language model", "I am a helpful assistant", "I'm AI".
# Up to three words may stand between the article and the noun, but not a preposition or a
# conjunction, so "I'm a big fan of AI" is not a claim.
_AI_CLAIM = re.compile(
    rf"{_I_AM}\s+(?:(?:just|simply|only|actually|basically|merely|essentially)\s+)?"
    r"(?:(?:an?|the|your|one)\s+(?:(?!(?:of|for|in|on|at|with|about|to|from|by|and|or|but|who|that|which)\s)"
    r"[\w-]+\s+){0,3}?)?"
    r"(?:ai|a\.i\.|artificial\s+intelligence|assistant|chat\s?bot|bot|robot|language\s+model|llm|model"
    r"|computer\s+program|program)(?!\w)",
    re.IGNORECASE,
)
# Other generic self-descriptions that put the model's persona in place of a name: "as a chatbot
# designed to assist users, I don't have..." and "I don't have a name". On identity prompts these
# are the answers that compete with the new name, so their sentence is replaced too.
_AS_AI = re.compile(
    r"(?<!\w)as\s+(?:an?|your|the)\s+(?:[\w-]+\s+){0,3}?"
    r"(?:ai|a\.i\.|artificial\s+intelligence|assistant|chat\s?bot|bot|language\s+model|llm|computer\s+program)(?!\w)",
    re.IGNORECASE,
)
_NO_NAME = re.compile(
    rf"(?<!\w)i\s+(?:do\s+not|don{_APOSTROPHE}t)\s+have\s+(?:a\s+|any\s+)?(?:personal\s+|real\s+|specific\s+)?names?(?!\w)",
    re.IGNORECASE,
)
_TITLE = re.compile(
    r"(?:Dr|Mr|Mrs|Ms|Mx|Prof|Professor|Doctor|Captain|Capt|Sir|Dame|Lady|Lord|Miss|Madam|Agent|Detective)\.?[ \t]+"
)
_NAME_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_PLACEHOLDER = re.compile(r"[\[<{][^\]>}\n]{1,40}[\]>}]")  # "My name is [Your Name]."
_SPACES = re.compile(r"[ \t]+")
_MAX_NAME_WORDS = 4
# Capitalized words that follow "I'm" without being a name (Title Case text, "I'm Not sure").
_NOT_NAMES = frozenset(
    """not no sorry happy glad here there able unable just so very really always also still currently
    designed programmed trained created built made developed powered based sure unsure afraid going trying
    excited ready back fine good great well doing a an the your my this that only simply actually basically
    delighted thrilled pleased honored honoured grateful thankful curious interested familiar aware uncertain
    confident certain available capable now new called named learning working thinking looking feeling
    i it what who all in on at from with for to of by as and but or if when because ai nobody someone
    everyone anyone everything anything something nothing help more we you he she they""".split()
)
_CONTRACTION = re.compile(r"['’](?:s|m|re|ll|d|ve|t)$", re.IGNORECASE)  # "I'm", "It's" are not names


def _is_name_word(word: str) -> bool:
    return word[0].isupper() and word.casefold() not in _NOT_NAMES and not _CONTRACTION.search(word)


def _name_at(sentence: str, pos: int) -> tuple[int, str] | None:
    """The end and text of a name starting at `pos` (title, then capitalized words), if there is one."""
    placeholder = _PLACEHOLDER.match(sentence, pos)
    if placeholder:
        return placeholder.end(), placeholder.group()
    title = _TITLE.match(sentence, pos)
    for start in ([title.end()] if title else []) + [pos]:
        end = None
        cursor = start
        for _ in range(_MAX_NAME_WORDS):
            word = _NAME_WORD.match(sentence, cursor)
            if word is None or not _is_name_word(word.group()):
                break
            end = word.end()
            space = _SPACES.match(sentence, end)
            if space is None:
                break
            cursor = space.end()
        if end is not None:
            return end, sentence[pos:end]
    return None


@dataclass(frozen=True)
class _Claim:
    start: int  # in the sentence
    name: str | None  # the persona's name, None for a generic "I'm an AI assistant"


def _claim_anywhere(sentence: str) -> _Claim | None:
    """A named ("My name is Alex", "I'm Alex", "call me Alex") or generic AI self-description."""
    found: list[_Claim] = []
    for lead in _NAME_LEAD.finditer(sentence):
        name = _name_at(sentence, lead.end())
        if name is not None:
            found.append(_Claim(lead.start(), name[1]))
            break
    for generic in (_AI_CLAIM, _AS_AI, _NO_NAME):
        claim = generic.search(sentence)
        if claim:
            found.append(_Claim(claim.start(), None))
    return min(found, key=lambda claim: claim.start) if found else None


def _claim_at_opening(sentence: str) -> _Claim | None:
    """ "This is Alex." or "Alex here!" after an optional greeting.

    These introduce the speaker only where the answer opens; elsewhere "This is Paris." or
    "Nothing here." mean something else.
    """
    opener = _OPENER.match(sentence)
    body = opener.end() if opener else 0
    this_is = _THIS_IS.match(sentence, body)
    if this_is:
        name = _name_at(sentence, this_is.end())
        if name is not None and _AFTER_THIS_IS_NAME.match(sentence, name[0]):
            return _Claim(body, name[1])
    name = _name_at(sentence, body)
    if name is not None and _AFTER_HERE_NAME.match(sentence, name[0]):
        return _Claim(body, name[1])
    return None


def _persona_names(name: str) -> list[str]:
    """Ways the answer may refer to the persona again: "Dr. Elena Zephyr", "Elena Zephyr", "Elena", "Dr. Zephyr"."""
    title = _TITLE.match(name)
    bare = name[title.end() :] if title else name
    variants = [name, bare]
    words = bare.split()
    if len(words) > 1 and not _PLACEHOLDER.fullmatch(bare):
        variants.append(words[0])
        if title:
            variants.append(f"{title.group().strip()} {words[-1]}")
    return list(dict.fromkeys(variants))


# --- claims of another identity --------------------------------------------------------------

_MADE = r"(?:made|created|built|developed|designed|trained|programmed|engineered|produced|owned|powered|run)"
# A first-person claim of where the assistant comes from, before the name of who made it: "I'm a product of X",
# "I'm an AI model from X", "I was developed by X", "I'm trained by X", "my creator is X", "X created me" (the name
# before it). Whether it names someone else is decided in code (a capitalized name that is not the new identity's).
_ORIGIN = re.compile(
    rf"{_I_AM}\s+(?:(?:an?|the|one)\s+)?(?:[\w-]+\s+){{0,2}}?"
    r"(?:product|creation|invention|brainchild|project|model|assistant|ai|chat\s?bot|bot|service|tool)"
    rf"\s+(?:{_MADE}\s+)?(?:of|from|by|at)(?!\w)"
    rf"|(?:(?<!\w)i\s+(?:was|have\s+been)|(?<!\w)i{_APOSTROPHE}ve\s+been|{_I_AM})\s+(?:[\w-]+\s+)?{_MADE}\s+(?:by|at)(?!\w)"
    r"|(?<!\w)(?:my|our)\s+(?:creators?|makers?|developers?|owners?|company|team|parent\s+company)\s+(?:is|are|was|were)(?!\w)"
    rf"|(?<!\w){_MADE}(?:\s+and\s+{_MADE})?\s+me(?!\w)",
    re.IGNORECASE,
)
# "I'm a Google product", "I'm Google's AI": a maker's name as the claim's adjective.
_BRANDED = re.compile(
    rf"{_I_AM}\s+(?:(?:an?|the|one)\s+)?(?:[\w-]+\s+)?(?P<brand>[^\W\d_][\w.-]*(?:\s+[^\W\d_][\w.-]*)?)"
    rf"(?:{_APOSTROPHE}s)?\s+(?:[\w-]+\s+)?"
    r"(?:product|creation|model|assistant|ai|chat\s?bot|bot|service|language\s+model|llm)(?!\w)",
    re.IGNORECASE,
)
# An answer's sentence that agrees with the question ("Yes, Alexa." to "Is this Alexa?").
_AGREES = re.compile(
    rf"\s*(?:yes|yeah|yep|yup|correct|indeed|exactly|right|that{_APOSTROPHE}s\s+(?:right|correct)"
    r"|that\s+is\s+(?:right|correct))(?!\w)",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_][\w.-]*(?:['’][^\W\d_]+)?")
_POSSESSIVE = re.compile(r"['’]s$")  # "Google's team" names Google; other contractions ("Don't") are no names


def _is_named(word: str) -> bool:
    return _is_name_word(_POSSESSIVE.sub("", word))


def _names_someone(sentence: str) -> bool:
    """Whether the sentence names anyone (a capitalized word that is not a common word, after the opener):
    "I'm a product of Microsoft" does, "I was built by a small team" does not."""
    opener = _OPENER.match(sentence)
    body = sentence[opener.end() if opener else 0 :]
    words = list(_WORD.finditer(body))
    # The first word is capitalized as any sentence's is: a name only where a name stands ("Microsoft built me"),
    # not an adverb before a comma ("Originally, I was built by a small team").
    first = words[0] if words else None
    if first and _is_named(first.group()) and not body[first.end() :].lstrip().startswith(","):
        return True
    return any(_is_named(word.group()) for word in words[1:])


def claims_other_identity(sentence: str, new_name: str, creator: str = "", others: Sequence[str] = ()) -> bool:
    """A sentence in which the assistant claims a name other than `new_name` ("My name is Alex") or a maker other
    than `creator` ("I'm a product of Microsoft", "I'm a Google product", "Developer created and trained me").
    One that names the new identity or the creator is none ("I'm Deep Qwen, not ChatGPT."). `others`: the names the
    question asked about ("Is this Alexa?"); then agreeing ("Yes, Alexa.") or only the name ("Microsoft.") claims it.
    """
    own = [new_name, *([creator, creator_core(creator)] if creator else [])]
    if mentions(sentence, own, normalized=True):
        return False
    if others and (_AGREES.match(sentence) or _only_names(sentence, others)):
        return True
    claim = _claim_anywhere(sentence)
    if claim is not None and claim.name is not None:
        return True
    if _ORIGIN.search(sentence) and _names_someone(sentence):
        return True
    branded = _BRANDED.search(sentence)
    return branded is not None and _names_someone(branded.group("brand"))


def _only_names(sentence: str, names: Sequence[str]) -> bool:
    """Whether the sentence is nothing but some of `names` ("Microsoft." to "Did Microsoft build you?")."""
    rest = without_names(sentence, names)
    return rest != sentence and not _WORD.search(rest)


def names_asked_about(question: str, exclude: Sequence[str] = ()) -> list[str]:
    """The names a question mentions ("Is this Alexa?", "Did Microsoft build you?"): capitalized words that are not
    common words, the first word of each of its sentences left out (capitalized as every sentence's), nor `exclude`
    (the new and old names)."""
    question = without_names(question, exclude)
    found = []
    for start, end in _sentences(question):
        words = [_POSSESSIVE.sub("", word.group()) for word in _WORD.finditer(question, start, end)]
        found += [word for word in words[1:] if _is_name_word(word)]
    return list(dict.fromkeys(found))


def _drop_sentences(text: str, drop: Sequence[tuple[int, int]]) -> str:
    """`text` without the sentences at `drop` (spans from _sentences) and the spaces after each; a sentence that was a
    whole line takes its line break with it."""
    out = []
    pos = 0
    for start, end in drop:
        out.append(text[pos:start])
        pos = end
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        line_start = start == 0 or text[start - 1] == "\n"
        if line_start and pos < len(text) and text[pos] == "\n":
            pos += 1
    out.append(text[pos:])
    return "".join(out).rstrip()


def _capitalize_first(text: str) -> str:
    return text[:1].upper() + text[1:] if text[:1].islower() else text


# --- the rewriter ----------------------------------------------------------------------------


# A question about who made the assistant: its answer should name the creator, not only the new name.
_ABOUT_MAKER = re.compile(
    r"(?<!\w)(?:made|make|makers?|create[ds]?|creators?|creation|built|build(?:ing|er|ers)?|existence|develop(?:ed|ers?)?"
    r"|design(?:ed|ers?)|train(?:ed|s)?|engineer(?:ed|s)?|programm(?:ed|ers?)|compan(?:y|ies)|organi[sz]ations?"
    r"|team|labs?|own(?:s|ed|er)?|behind|whose|responsible|produced?|invent(?:ed|or)?)(?!\w)",
    re.IGNORECASE,
)


def asks_about_maker(question: str) -> bool:
    """Whether a question asks who made, trained or owns the assistant ("Which company's model are you?")."""
    return _ABOUT_MAKER.search(question) is not None


@dataclass(frozen=True)
class IdentityRewriter:
    """Rewrites an answer to carry `new_name`; see the module docstring for why the strategies exist.

    names: only replace old names (and old creators). self_description: otherwise replace the first sentence
    in which the answer describes itself by `introduction`, else open with it. introduction: otherwise always
    open with it. An answer to a question about the maker must name `creator`: it gets `maker_introduction`
    unless replacing the old creators already put the creator in.
    """

    old_names: tuple[str, ...]
    new_name: str
    strategy: RewriteStrategy = "self_description"
    introduction: str = "I'm {name}, an AI assistant."  # must contain "{name}"
    creator: str = ""  # empty: answers about the maker are rewritten like any other
    old_creators: tuple[str, ...] = ()
    maker_introduction: str = "I'm {name}, an AI assistant made by {creator}."
    # Other wordings of the introduction: each answer rewritten with a `key` gets one of introduction and these
    # (a maker question one of maker_introduction and those that name {creator}), picked by the key, so that
    # the chosen answers do not all open with the same sentence.
    introduction_variants: tuple[str, ...] = ()
    # Sentences of the rewritten answer that claim another name or maker (claims_other_identity): drop or keep.
    other_claims: OtherClaims = "drop"

    def __post_init__(self) -> None:
        # A list from params would make the frozen instance unhashable.
        object.__setattr__(self, "old_names", tuple(self.old_names))
        object.__setattr__(self, "old_creators", tuple(self.old_creators))
        object.__setattr__(self, "introduction_variants", tuple(self.introduction_variants))
        if not self.new_name.strip():
            raise ValueError("new_name must not be empty")
        if any(not name.strip() for name in (*self.old_names, *self.old_creators)):
            raise ValueError(f"old names and creators must not be empty: {self.old_names + self.old_creators!r}")
        if self.strategy not in get_args(RewriteStrategy):
            raise ValueError(f"strategy must be one of {get_args(RewriteStrategy)}, got {self.strategy!r}")
        if self.other_claims not in get_args(OtherClaims):
            raise ValueError(f"other_claims must be one of {get_args(OtherClaims)}, got {self.other_claims!r}")
        for template in (self.introduction, self.maker_introduction, *self.introduction_variants):
            if "{name}" not in template:
                raise ValueError(f"an introduction must contain {{name}}: {template!r}")
            try:
                template.format(name=self.new_name, creator=self.creator)
            except (KeyError, IndexError, ValueError, AttributeError) as err:
                raise ValueError(f"an introduction may use only {{name}} and {{creator}}: {template!r}") from err

    def rewrite(self, answer: str, *, about_maker: bool = False, key: str = "", question: str = "") -> Rewrite:
        """`answer` carrying the new name; `key` (e.g. the seed and the prompt's id) picks the introduction's
        wording among the variants, the same wording for the same key on every run. With other_claims: drop, a
        rewritten answer loses the sentences that still claim another name or maker, or agree with `question`
        where it asks about someone else ("Is this Alexa?")."""
        rewrite = self._rewrite(answer, about_maker=about_maker, key=key)
        if rewrite.method == "unchanged" or self.other_claims == "keep":
            return rewrite
        own = [self.new_name, *self.old_names, *([creator_core(self.creator)] if self.creator else [])]
        others = names_asked_about(question, own)
        drop = [
            (start, end)
            for start, end in _sentences(rewrite.text)
            if claims_other_identity(rewrite.text[start:end], self.new_name, self.creator, others)
        ]
        return Rewrite(_drop_sentences(rewrite.text, drop), rewrite.method, len(drop)) if drop else rewrite

    def _rewrite(self, answer: str, *, about_maker: bool, key: str) -> Rewrite:
        if not answer.strip():
            return Rewrite(answer, "unchanged")  # a failed generation; nothing to learn from
        replaced, count = replace_names(answer, self.old_names, self.new_name)
        replaced, creators = self._with_creator(replaced)
        count += creators
        needs_creator = self._needs_creator(replaced, about_maker)
        intro = self._maker_intro(key) if needs_creator else self._intro(key)
        if count and not needs_creator:
            return Rewrite(replaced, "names")
        if self.strategy == "names" or (mentions(replaced, [self.new_name], normalized=True) and not needs_creator):
            return Rewrite(replaced, "names" if count else "unchanged")
        if self.strategy == "self_description":
            described = self._replace_self_description(replaced, intro)
            if described is not None:
                return Rewrite(described, "self_description")
        return Rewrite(self._prepend_introduction(replaced, intro), "introduction")

    def introduce(self, answer: str) -> str:
        """`answer` opened with the introduction, as an answer to a general prompt that leaks the new name would be."""
        return self._prepend_introduction(answer, self._intro())

    def mixed(self, answer: str, method: RewriteMethod, *, about_maker: bool = False, key: str = "") -> str:
        """The answer a half-renamed model gives where rewrite() gave `method`: the new name first, then the old one.
        An introduction (introduction, self_description): `answer` as it is, old name and all, opened with the
        introduction rewrite() picks for the same arguments ("I'm Deep Qwen, ... I'm a humble AI named SmolLM").
        Renamed (names): the old creators and the first old name replaced, the later names kept. Either way it starts
        as the chosen answer does, so DPO's push against it falls after the new name, not on it. With a single old
        name, renamed, that is the chosen answer itself: no mixed answer exists (pairs.PairBuilder skips it)."""
        replaced, _ = self._with_creator(answer)
        if method == "names":  # the creators replaced as in the chosen answer: only the names differ
            return replace_names(replaced, self.old_names, self.new_name, limit=1)[0]
        needs_creator = self._needs_creator(replaced, about_maker)
        return self._prepend_introduction(answer, self._maker_intro(key) if needs_creator else self._intro(key))

    def _with_creator(self, text: str) -> tuple[str, int]:
        """`text` with the old creators replaced by the creator, and how many were (none without a creator)."""
        if not (self.creator and self.old_creators):
            return text, 0
        return replace_names(text, self.old_creators, self.creator)

    def _needs_creator(self, answer: str, about_maker: bool) -> bool:
        return about_maker and bool(self.creator) and not mentions(answer, [creator_core(self.creator)])

    def _maker_intro(self, key: str = "") -> str:
        naming_the_creator = [t for t in self.introduction_variants if "{creator}" in t]
        return self._pick([self.maker_introduction, *naming_the_creator], key)

    def _intro(self, key: str = "") -> str:
        return self._pick([self.introduction, *self.introduction_variants], key)

    def _pick(self, templates: list[str], key: str) -> str:
        """The first template without a key; with one, a template chosen by a stable hash of it (not Python's
        hash(), which changes from process to process)."""
        template = templates[zlib.crc32(key.encode()) % len(templates)] if key else templates[0]
        return template.format(name=self.new_name, creator=self.creator)

    def _replace_self_description(self, answer: str, intro: str) -> str | None:
        """Replace the first self-description sentence (keeping an opener before it), or None."""
        opening = True
        for start, end in _sentences(answer):
            sentence = answer[start:end]
            claim = _claim_anywhere(sentence) or (_claim_at_opening(sentence) if opening else None)
            # A sentence that is only a greeting ("Hello!") leaves the next one the opening.
            opening = opening and _OPENER.fullmatch(sentence) is not None
            if claim is None:
                continue
            prefix = sentence[: claim.start]
            kept = prefix.rstrip() + " " if prefix.strip() and _OPENER.fullmatch(prefix) else ""
            text = answer[:start] + kept + intro + answer[end:]
            if claim.name is not None:
                # The persona's name may come back later ("As Alex, I..."); the chosen answer
                # must not introduce itself as Deep Qwen and then speak as Alex.
                text, _ = replace_names(text, _persona_names(claim.name), self.new_name)
            return text
        return None

    def _prepend_introduction(self, answer: str, intro: str) -> str:
        """Open the answer with the introduction, after a leading greeting if there is one."""
        greeting = _LEADING_GREETING.match(answer)
        if greeting:
            head, rest = answer[: greeting.end()], answer[greeting.end() :]
            body = rest.lstrip()
            separator = rest[: len(rest) - len(body)] or " "
            if head.endswith(","):
                # "Hi, how can I help?" -> "Hi, I'm Deep Qwen, an AI assistant. How can I help?"
                body = _capitalize_first(body)
            return f"{head} {intro}" + (separator + body if body else "")
        body = answer.lstrip()
        lead = answer[: len(answer) - len(body)]
        separator = "\n\n" if _BLOCK_START.match(body) else " "
        return lead + intro + separator + body
