"""Chat generation: the one routine that answers prompts, for pair building and for evaluation.

Greedy decoding, so answers are reproducible; prompts are sorted by length and run in
left-padded batches, which keeps padding (wasted compute) small and gives the same greedy
answers as one prompt at a time.

`backend` selects the engine: `transformers` (the default, on the loaded model) or `vllm`, an optional
fast engine for a CUDA GPU (`pip install vllm`, not in requirements.txt) that loads the same model folder
and decodes greedily too. Call check_backend before loading any weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from identity_dpo.errors import ParamsError
from identity_dpo.params import GenerationBackend as Backend

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Message = dict[str, str]
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


def with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    """The conversation under `system_prompt`; None leaves the model's own default identity in charge."""
    messages = [m for m in messages if m["role"] != "system"]
    if system_prompt is None:
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]) -> list[int]:
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    # The template already writes the special tokens the model expects; adding BOS again would shift it.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


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
) -> list[Generation]:
    """Answer every conversation greedily; results are in input order.

    With backend `vllm`, vLLM loads the model from the folder `model` was loaded from and schedules the
    batches itself (batch_size does not apply); the prompts and the stop tokens are the same.
    """
    import torch

    prompts = [render_prompt(tokenizer, messages) for messages in conversations]
    if backend == "vllm":
        return _generate_vllm(model, tokenizer, prompts, max_new_tokens)
    if backend != "transformers":
        raise ParamsError(f"generation backend: expected transformers or vllm, got {backend!r}")
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            try:
                answers = _generate_batch(model, tokenizer, [prompts[i] for i in batch], max_new_tokens)
            except (RuntimeError, ValueError) as exc:
                # One bad row (e.g. too long for the model) must not take its batch down with it.
                answers = [_generate_alone(model, tokenizer, prompts[i], max_new_tokens, exc) for i in batch]
            for i, answer in zip(batch, answers, strict=True):
                results[i] = answer
    return [r for r in results if r is not None]


def _generate_alone(model, tokenizer, prompt: list[int], max_new_tokens: int, batch_error: Exception) -> Generation:  # noqa: ANN001
    if len(prompt) >= _context_size(model):
        return Generation("", 0, False, f"prompt of {len(prompt)} tokens exceeds the model's context")
    try:
        return _generate_batch(model, tokenizer, [prompt], max_new_tokens)[0]
    except (RuntimeError, ValueError) as exc:
        return Generation("", 0, False, f"{type(exc).__name__}: {exc} (batch failed with: {batch_error})")


def _context_size(model) -> int:  # noqa: ANN001
    return int(getattr(model.config, "max_position_embeddings", 1 << 30))


def _generate_batch(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[Generation]:  # noqa: ANN001
    import torch
    from transformers import GenerationConfig

    stops = stop_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad
    )
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    results = []
    for row in output[:, width:].tolist():
        ends = [k for k, token in enumerate(row) if token in stops]
        new = row[: ends[0]] if ends else row
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        results.append(Generation(text, len(new), finished=bool(ends)))
    return results


# --- the optional vLLM backend (needs a CUDA GPU; not run on the project's CPU machines) -------------------


def check_backend(backend: Backend, key: str) -> None:
    """Refuse a backend whose package is missing, before any weights load; `key` names the param."""
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ParamsError(
            f"{key}: backend vllm needs the vllm package, which is not installed (on a machine with a CUDA GPU: "
            "pip install vllm; see docs/scale-up.md), or use transformers"
        )


_engines: dict[str, Any] = {}  # model folder -> the vLLM engine; one at a time, so two models never share a GPU


def _vllm_engine(folder: str) -> Any:
    import gc

    from vllm import LLM

    if folder not in _engines:
        _engines.clear()  # release the previous model's engine (evaluation answers with two models in turn)
        gc.collect()
        _engines[folder] = LLM(
            model=folder,
            tokenizer=folder,
            dtype=_vllm_dtype(),
            seed=0,
            trust_remote_code=False,
            gpu_memory_utilization=VLLM_GPU_MEMORY_SHARE,
        )
    return _engines[folder]


def _vllm_dtype() -> str:
    """bf16 where the GPU has it; otherwise vLLM's auto (fp16 for the fp32 folders fetch_model writes by default)."""
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "auto"


def _generate_vllm(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> list[Generation]:  # noqa: ANN001
    check_backend("vllm", "generation backend")
    from vllm import SamplingParams

    stops = stop_token_ids(model, tokenizer)
    sampling = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stops)
    engine = _vllm_engine(str(model.name_or_path))
    outputs = engine.generate([{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False)
    results = []
    for output in outputs:  # vLLM returns them in input order
        row = list(output.outputs[0].token_ids)
        ends = [k for k, token in enumerate(row) if token in stops]
        new = row[: ends[0]] if ends else row
        text = tokenizer.decode(new, skip_special_tokens=True).strip()
        results.append(Generation(text, len(new), finished=bool(ends) or output.outputs[0].finish_reason == "stop"))
    return results
