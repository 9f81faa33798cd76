"""GGUF export with llama.cpp's own tools, an Ollama Modelfile, and a check of the identity in llama.cpp itself.

- Conversion: llama.cpp's `convert_hf_to_gguf.py` with its `gguf-py`, from the source distribution of the pinned
  `llama-cpp-python` (scripts/setup.sh downloads and unpacks it; `IDENTITY_DPO_LLAMA_CPP` names another checkout).
- Quantization: `llama_model_quantize` of the built bindings (Q8_0, Q4_K_M).
- Verification: the held-out identity questions, the general prompts and the benchmark answered greedily by each
  GGUF, batched in llama.cpp (identity_dpo.llama_batched) with the prompts llama-cpp-python's chat completion
  makes from the chat template stored in the GGUF (what llama.cpp users run), scored like the transformers
  evaluation (identity_dpo.scoring.identity_rates, evaluation.name_leak_rate, benchmark.generative_correct).

llama-cpp-python must be built for a portable CPU target: with the native build on an AVX-512/AMX Intel host
every quantized GGUF segfaulted at the first evaluation (scripts/setup.sh sets CMAKE_ARGS).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from identity_dpo.errors import PipelineError

LLAMA_CPP_PYTHON = "llama-cpp-python"
LLAMA_CPP_PYTHON_VERSION = "0.3.36"  # requirements-export.txt pins the same
SOURCE_ENV = "IDENTITY_DPO_LLAMA_CPP"  # a llama.cpp checkout holding convert_hf_to_gguf.py and gguf-py/
SETUP_HINT = "run `bash scripts/setup_export.sh` (downloads the llama-cpp-python source and builds it, once)"
# File names in models/gguf/, by GGUF type; f16 is converted, the others quantized from it.
QUANTS = ("q8_0", "q4_k_m")
THREADS = 2


def gguf_name(stem: str, kind: str) -> str:
    return f"{stem}-{kind}.gguf"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "identity-dpo"


def sdist_source_dir(version: str = LLAMA_CPP_PYTHON_VERSION) -> Path:
    """Where scripts/setup.sh unpacks llama.cpp's converter from the llama-cpp-python source distribution."""
    return cache_dir() / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def find_converter() -> Path:
    """llama.cpp's convert_hf_to_gguf.py (next to its gguf-py/), or a one-line error saying how to get it."""
    folder = Path(os.environ[SOURCE_ENV]) if os.environ.get(SOURCE_ENV) else sdist_source_dir()
    script = folder / "convert_hf_to_gguf.py"
    if not script.is_file() or not (folder / "gguf-py").is_dir():
        raise PipelineError(f"llama.cpp's converter not found at {script}: {SETUP_HINT}, or set {SOURCE_ENV}")
    if importlib.util.find_spec("sentencepiece") is None:
        raise PipelineError(f"the GGUF converter needs the sentencepiece package: {SETUP_HINT}")
    return script


def check_bindings() -> None:
    """llama-cpp-python importable, at the pinned version, or a one-line error."""
    try:
        version = importlib.metadata.version(LLAMA_CPP_PYTHON)
    except importlib.metadata.PackageNotFoundError:
        raise PipelineError(f"{LLAMA_CPP_PYTHON} is not installed: {SETUP_HINT}") from None
    if version != LLAMA_CPP_PYTHON_VERSION:
        raise PipelineError(
            f"{LLAMA_CPP_PYTHON} {version} is installed, {LLAMA_CPP_PYTHON_VERSION} expected: {SETUP_HINT}"
        )


def convert(model_dir: Path, out_file: Path, converter: Path, outtype: str = "f16") -> None:
    """llama.cpp's converter on a Hugging Face folder (safetensors) -> one GGUF file."""
    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "NO_LOCAL_GGUF": "1"}
    args = [sys.executable, str(converter), str(model_dir), "--outfile", str(out_file), "--outtype", outtype]
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out_file.is_file():
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise PipelineError(f"convert_hf_to_gguf.py failed on {model_dir} (exit {result.returncode}): {tail}")


def quantize(source: Path, out_file: Path, kind: str) -> None:
    """`kind` (q8_0, q4_k_m) of an f16 GGUF with llama.cpp's own quantizer."""
    import ctypes

    import llama_cpp

    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[kind]
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = THREADS
    with suppress_stdout_stderr(disable=False):  # a line per tensor from llama.cpp's C code
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(out_file).encode(), ctypes.byref(params))
    if code != 0 or not out_file.is_file():
        raise PipelineError(f"llama_model_quantize {kind} of {source} failed (code {code})")


def load_gguf(path: Path, n_ctx: int = 2048, verbose: bool = False) -> Any:
    """A llama-cpp-python model on 2 threads (llama.cpp spins its threads: more than the cores slows it)."""
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=THREADS, n_threads_batch=THREADS, seed=0,
                 verbose=verbose)  # fmt: skip


def chat_answers(path: Path, conversations: Sequence[list[dict[str, str]]], max_new_tokens: int) -> dict[str, Any]:
    """Greedy answers of the GGUF at `path` to each conversation (its own stored chat template), and the speed, one
    create_chat_completion at a time: what a llama.cpp user gets in a chat, the reference llama_batched's batched
    answers (which the export stage uses) are checked against."""
    llm = load_gguf(path)
    answers, tokens, start = [], 0, time.perf_counter()
    for messages in conversations:
        llm.reset()
        out = llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens, temperature=0.0, seed=0)
        answers.append((out["choices"][0]["message"]["content"] or "").strip())
        tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    del llm
    return {"answers": answers, "new_tokens": tokens, "seconds": seconds}


# Ollama's Go template for ChatML models (SmolLM2, Qwen2.5, ...): system first, then the turns, then the
# assistant's opening. Ollama passes the Modelfile's SYSTEM (or the request's system message) as .System.
CHATML_GO_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}
{{- end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""


def chatml_rendering(system: str, turns: Sequence[tuple[str, str]]) -> str:
    """What CHATML_GO_TEMPLATE writes for a system message and (role, content) turns ending with a user turn."""
    text = f"<|im_start|>system\n{system}<|im_end|>\n"
    for role, content in turns:
        text += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return text + "<|im_start|>assistant\n"


def check_chatml(tokenizer: Any) -> None:
    """The model's chat template writes ChatML exactly (the only format the Modelfile TEMPLATE is written for)."""
    turns = [("user", "U1"), ("assistant", "A1"), ("user", "U2")]
    messages = [{"role": "system", "content": "S"}, *({"role": r, "content": c} for r, c in turns)]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if rendered != chatml_rendering("S", turns):
        raise PipelineError(
            "the model's chat template is not ChatML (<|im_start|>role ... <|im_end|>); the Ollama Modelfile "
            f"TEMPLATE is written for ChatML only. It renders: {rendered[:120]!r}"
        )


def modelfile(gguf_file: str, system: str, stops: Sequence[str], temperature: float | None = None) -> str:
    """An Ollama Modelfile for the GGUF next to it: `ollama create NAME -f Modelfile` in that folder."""
    lines = [f"FROM ./{gguf_file}", "", f'TEMPLATE """{CHATML_GO_TEMPLATE}"""', "", f'SYSTEM """{system}"""', ""]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature}")
    return "\n".join(lines) + "\n"


def ollama_model_name(new_name: str) -> str:
    """ "Deep Qwen" -> "deep-qwen": an Ollama model name (lowercase letters, digits, - _ .)."""
    import re

    return re.sub(r"[^a-z0-9._-]+", "-", new_name.lower()).strip("-._") or "identity-dpo"
