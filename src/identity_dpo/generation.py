"""Chat generation: the one routine that answers prompts, for pair building and for evaluation (the prompts' tokens
come from chat_format.py).

Greedy decoding, so answers are reproducible; prompts are sorted by length and run in
left-padded batches, which keeps padding (wasted compute) small and gives the same greedy
answers as one prompt at a time. A batch is decoded by our own loop (cpu_kernels/decoding.py),
which drops a row as soon as its answer is finished, or, with the CPU kernels off, by
transformers' `generate` (transformers_generate); tests check both give the same tokens.

`backend` selects the engine: `transformers` (the default, on the loaded model) or `vllm`, an optional
fast engine for a CUDA GPU (`pip install vllm`, not in requirements.txt) that loads the same model folder
and decodes greedily too. Call check_backend before loading any weights.

`precision` (answer_precision) picks the weights the models answer with: fp32 as fetched, or a bf16 copy (vLLM:
the dtype it loads the folder in) where the hardware computes bf16 natively (a CPU with AMX-BF16 or AVX512-BF16, or
a CUDA GPU with bf16), whose matrix products run several times as fast there (BENCHMARKS.md). bf16 rounds every
product, so near ties between the two likeliest next tokens can go the other way: the answers differ from fp32's in
places, and each stage records which precision answered (`bf16_answers` in its metrics).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from identity_dpo.chat_format import Message, render_prompt
from identity_dpo.cpu_kernels import active
from identity_dpo.cpu_kernels.decoding import greedy_decode, left_padded
from identity_dpo.errors import ParamsError
from identity_dpo.launch import native_precision
from identity_dpo.params import AnswerPrecision, CpuKernels
from identity_dpo.params import GenerationBackend as Backend
from identity_dpo.progress import FinishedRows, bars_enabled, progress_bar

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# vLLM reserves this share of the GPU's memory per engine; evaluation runs two models one after the other.
VLLM_GPU_MEMORY_SHARE = 0.4


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    finished: bool  # the model ended the answer itself, before the token cap
    error: str | None = None  # set when generation failed; such answers are never trained on

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.text)


def answer_precision(precision: AnswerPrecision, backend: Backend, key: str) -> str:
    """The precision answers are computed in here: fp32 or bf16, or with vLLM on a GPU without bf16, fp16. `auto` is
    bf16 where the hardware computes it natively and fp32 elsewhere (vLLM: fp16, its own choice for an fp32 folder),
    so an AVX2-only CPU answers exactly as with fp32; bf16 where it would be emulated is refused (`key` names the
    param). Pass the result to generate and sample; resolve it before loading any weights."""
    return native_precision(precision, key, fallback="fp16" if backend == "vllm" else "fp32")


def answering_model(model: PreTrainedModel, precision: str) -> PreTrainedModel:
    """The model to answer with at `precision` (answer_precision): the model itself, or for bf16 a bf16 copy, so
    the fp32 weights stay as they are for whatever else reads them (evaluate's drift, a later fp32 forward)."""
    import copy

    import torch

    if precision != "bf16" or model.dtype == torch.bfloat16:
        return model
    return copy.deepcopy(model).to(torch.bfloat16)


def longest_first(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Indexes of `prompts`, longest first (ties in input order): batches of similar length waste little on padding."""
    return sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))


def to_generation(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[int], stops: Sequence[int]) -> Generation:
    """An answer from its new tokens: the text up to the first stop token, if the model said one."""
    ends = [k for k, token in enumerate(tokens) if token in stops]
    new = list(tokens[: ends[0]] if ends else tokens)
    return Generation(tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), finished=bool(ends))


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int,
    backend: Backend = "transformers",
    precision: str = "fp32",
    desc: str = "Answering",
    cpu_kernels: CpuKernels | None = None,
) -> list[Generation]:
    """Answer every conversation greedily at `precision` (answer_precision's); results are in input order. A progress
    bar titled `desc` counts the answers as they end (vLLM shows its own).

    With backend `vllm`, vLLM loads the model from the folder `model` was loaded from and schedules the
    batches itself (batch_size does not apply); the prompts and the stop tokens are the same. `cpu_kernels`
    (None: the process's switch, identity_dpo.cpu_kernels) picks how a transformers batch is decoded.
    """
    import torch

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    if backend == "vllm":
        return _generate_vllm(model, tokenizer, prompts, max_new_tokens, precision)
    if backend != "transformers":
        raise ParamsError(f"generation backend: expected transformers or vllm, got {backend!r}")
    model = answering_model(model, precision)
    order = longest_first(prompts)
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    with torch.inference_mode(), progress_bar(len(prompts), desc, unit="answer") as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            try:
                answers = _generate_batch(
                    model, tokenizer, [prompts[i] for i in batch], max_new_tokens, cpu_kernels, on_finished=bar.update
                )
            except (RuntimeError, ValueError) as exc:
                # One bad row (e.g. too long for the model) must not take its batch down with it.
                answers = [
                    _generate_alone(model, tokenizer, prompts[i], max_new_tokens, cpu_kernels, exc) for i in batch
                ]
            for i, answer in zip(batch, answers, strict=True):
                results[i] = answer
            bar.update(start + len(batch) - bar.n)  # the batch's every answer, whichever way it ended
    return [r for r in results if r is not None]


def _generate_alone(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[int],
    max_new_tokens: int,
    cpu_kernels: CpuKernels | None,
    batch_error: Exception,
) -> Generation:
    if len(prompt) >= _context_size(model):
        return Generation("", 0, False, f"prompt of {len(prompt)} tokens exceeds the model's context")
    try:
        return _generate_batch(model, tokenizer, [prompt], max_new_tokens, cpu_kernels)[0]
    except (RuntimeError, ValueError) as exc:
        return Generation("", 0, False, f"{type(exc).__name__}: {exc} (batch failed with: {batch_error})")


def _context_size(model: PreTrainedModel) -> int:
    return int(getattr(model.config, "max_position_embeddings", 1 << 30))


def _generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    cpu_kernels: CpuKernels | None,
    on_finished: Callable[[int], Any] | None = None,
) -> list[Generation]:
    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    if active("decoding", model.device, cpu_kernels):
        rows = greedy_decode(model, prompts, max_new_tokens, stops, pad, on_finished=on_finished)
    else:
        rows = transformers_generate(model, prompts, max_new_tokens, stops, pad, on_finished=on_finished)
    return [to_generation(tokenizer, row, stops) for row in rows]


def transformers_generate(
    model: PreTrainedModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    stops: list[int],
    pad: int,
    on_finished: Callable[[int], Any] | None = None,
) -> list[list[int]]:
    """transformers' own greedy `generate` on one left-padded batch; every row runs until the longest ends (after
    its stop token, padding). `on_finished` as greedy_decode's: it gets the number of rows that ended at each step."""
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad)
    input_ids, attention_mask = left_padded(prompts, pad)
    streamer = FinishedRows(stops, on_finished) if on_finished is not None else None  # only watches the tokens
    output = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, generation_config=config, streamer=streamer
    )
    return output[:, input_ids.size(1) :].tolist()


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int,
    temperature: float,
    seed: int,
    precision: str = "fp32",
    desc: str = "Sampling",
) -> list[Generation]:
    """Answers sampled from the model's own distribution at `temperature` (1.0: unchanged), in input order; a progress
    bar titled `desc` counts them as they end.

    Training on samples of a model's answers is training towards that model's distribution (the expected NLL of
    its samples is its cross-entropy), where greedy answers would sharpen it. transformers' own `generate` does the
    sampling, seeded once, batch after batch, so the same inputs and seed give the same answers on a host.
    """
    import torch
    from transformers import GenerationConfig

    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                              max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad)  # fmt: skip
    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    model = answering_model(model, precision)
    results = []
    model.eval()
    torch.manual_seed(seed)
    with torch.inference_mode(), progress_bar(len(prompts), desc, unit="answer") as bar:
        ended = FinishedRows(stops, bar.update)  # only watches the tokens: the same samples with or without it
        for start in range(0, len(prompts), batch_size):
            input_ids, attention_mask = left_padded(prompts[start : start + batch_size], pad)
            output = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=config, streamer=ended
            )
            results += [to_generation(tokenizer, row, stops) for row in output[:, input_ids.size(1) :].tolist()]
            bar.update(len(results) - bar.n)  # the answers the token cap ended
    return results


# --- the optional vLLM backend (needs a CUDA GPU; not run on the project's CPU machines) -------------------


def check_backend(backend: Backend, key: str) -> None:
    """Refuse a backend whose package is missing, before any weights load; `key` names the param."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ParamsError(
            f"{key}: backend vllm needs the vllm package, which is not installed (on a machine with a CUDA GPU: "
            "pip install vllm; see docs/scale-up.md), or use transformers"
        )


# (model folder, dtype) -> the vLLM engine; one at a time, so two models never share a GPU
_engines: dict[tuple[str, str], Any] = {}
_VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # answer_precision's -> vLLM's dtype


def _vllm_engine(folder: str, dtype: str) -> Any:
    import gc

    from vllm import LLM

    if (folder, dtype) not in _engines:
        _engines.clear()  # release the previous model's engine (evaluation answers with two models in turn)
        gc.collect()
        _engines[folder, dtype] = LLM(
            model=folder,
            tokenizer=folder,
            dtype=dtype,
            seed=0,
            trust_remote_code=False,
            gpu_memory_utilization=VLLM_GPU_MEMORY_SHARE,
        )
    return _engines[folder, dtype]


def _generate_vllm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    precision: str,
) -> list[Generation]:
    check_backend("vllm", "generation backend")
    from vllm import SamplingParams

    stops = stop_token_ids(model, tokenizer)
    sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stops)
    engine = _vllm_engine(str(model.name_or_path), _VLLM_DTYPES[precision])
    outputs = engine.generate([{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=bars_enabled())
    results = []
    for output in outputs:  # vLLM returns them in input order
        answer = to_generation(tokenizer, output.outputs[0].token_ids, stops)
        # vLLM may leave the stop token out of the tokens; its finish reason still tells.
        stopped = answer.finished or output.outputs[0].finish_reason == "stop"
        results.append(replace(answer, finished=stopped))
    return results
