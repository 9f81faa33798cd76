"""Greedy batched generation in llama.cpp through llama-cpp-python's low-level API.

Several conversations are decoded side by side in one llama.cpp context, as llama.cpp's own `batched` example
does: each conversation is a sequence (its own seq_id and its own KV stream), one `llama_decode` reads the
prompts of a wave of up to `parallel` sequences, then each step reads the last token of every sequence still
answering and the next token of each is the argmax of its logits. A sequence that says a stop token or reaches
the token cap leaves the batch at once and its KV cells are dropped (`llama_memory_seq_rm`), like our own
decoder in generation.py drops finished rows.

The prompts and the answers' text are made exactly as llama-cpp-python's `create_chat_completion` makes them for
export.chat_answers (the GGUF's stored chat template rendered with jinja2, tokenized with special tokens and no
added BOS; the answer detokenized after its prompt and cut at the template's stop string), and the stop tokens
are the same (every end-of-generation token of the vocabulary), so a batched answer can be compared with a
single-stream one token for token. Each sequence has its own KV stream (`kv_unified` off), so its attention
reads only its own cells, as in a single-stream context.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity_dpo.errors import PipelineError

# Sequences decoded side by side: wide enough that each step's matrix products run at a good share of the CPU's
# speed, small enough that the KV streams stay a few hundred MB for a 135M model.
PARALLEL = 64
N_BATCH = 512  # tokens per llama_decode call while reading prompts (llama-cpp-python's default)
KV_ROUND = 256  # each sequence's KV stream is rounded up to this many cells (llama.cpp pads the context to it)
DEFAULT_TEMPLATE_FORMAT = "chat_template.default"  # llama-cpp-python's name for "the GGUF's own chat template"


@dataclass(frozen=True)
class Answer:
    text: str
    tokens: tuple[int, ...]  # the new tokens, the stop token excluded
    finished: bool  # the model said a stop token before the cap


@dataclass(frozen=True)
class BatchedRun:
    answers: list[Answer]
    seconds: float  # generation only: the prompts rendered, the model loaded before the clock starts

    @property
    def new_tokens(self) -> int:
        return sum(len(a.tokens) for a in self.answers)


class ChatPrompts:
    """Conversations as the prompt tokens llama-cpp-python's create_chat_completion feeds this GGUF, and answers'
    tokens as the text it returns."""

    def __init__(self, llm: Any) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if llm.chat_format != DEFAULT_TEMPLATE_FORMAT:
            # llama-cpp-python renders a few well-known templates with its own code instead: not reproduced here.
            raise PipelineError(f"the GGUF's chat format is {llm.chat_format!r}; only a GGUF chat template "
                                "(tokenizer.chat_template, rendered with jinja2) is supported")  # fmt: skip
        model = llm._model  # llama-cpp-python's wrapper of llama_model: the template's special tokens, as llama.py
        eos, bos = llm.token_eos(), llm.token_bos()
        self.llm = llm
        self.formatter = Jinja2ChatFormatter(
            template=llm.metadata["tokenizer.chat_template"],
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def tokens(self, messages: Sequence[dict[str, str]]) -> tuple[list[int], list[bytes]]:
        """The prompt's tokens and the stop strings that end its answer's text."""
        result = self.formatter(messages=list(messages))
        prompt = self.llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stops = [] if result.stop is None else [result.stop] if isinstance(result.stop, str) else list(result.stop)
        return prompt, [s.encode("utf-8") for s in stops if s]

    def text(self, prompt: Sequence[int], tokens: Sequence[int], stops: Sequence[bytes]) -> str:
        raw = self.llm.detokenize(list(tokens), prev_tokens=list(prompt))
        cut = min((raw.index(s) for s in stops if s in raw), default=len(raw))
        return raw[:cut].decode("utf-8", errors="ignore").strip()


def greedy_batched(
    llm: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    parallel: int = PARALLEL,
    stops: Collection[int] = (),
) -> list[tuple[list[int], bool]]:
    """Greedy new tokens of each prompt (stop token excluded) and whether a stop token ended it, in input order.
    Stop tokens: the vocabulary's end-of-generation tokens (as create_completion stops) and `stops`.

    Waves of up to `parallel` prompts, longest first (as generation.py orders its batches), each in one context
    built on `llm`'s loaded weights with `llm`'s own context settings, one KV stream per sequence.
    """
    import llama_cpp

    if max_new_tokens < 1 or parallel < 1:
        raise PipelineError(f"batched generation: max_new_tokens and parallel must be >= 1, got {max_new_tokens} "
                            f"and {parallel}")  # fmt: skip
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise PipelineError("batched generation: an empty prompt")
    limit = llama_cpp.llama_model_n_ctx_train(llm._model.model)
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > limit:
        raise PipelineError(f"batched generation: a prompt of {longest} tokens + {max_new_tokens} new tokens "
                            f"exceeds the model's context of {limit}")  # fmt: skip
    parallel = min(parallel, len(prompts), llama_cpp.llama_max_parallel_sequences())
    per_sequence = -(-(longest + max_new_tokens) // KV_ROUND) * KV_ROUND
    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_seq_max = parallel
    params.kv_unified = False
    params.n_ctx = per_sequence * parallel
    params.n_batch = params.n_ubatch = max(N_BATCH, parallel)
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    if not ctx:
        raise PipelineError(f"llama.cpp could not make a context for {parallel} sequences of {per_sequence} tokens")
    batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
    try:
        order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
        results: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
        for start in range(0, len(order), parallel):
            wave = order[start : start + parallel]
            answers = _wave(ctx, batch, params.n_batch, llm, [prompts[i] for i in wave], max_new_tokens, set(stops))
            for i, answer in zip(wave, answers, strict=True):
                results[i] = answer
        return results
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def _wave(
    ctx: Any, batch: Any, n_batch: int, llm: Any, prompts: list[Sequence[int]], max_new_tokens: int, stops: set[int]
) -> list[tuple[list[int], bool]]:
    """One wave: sequence s (seq_id s) answers prompts[s]; the context's memory is empty before and after."""
    import llama_cpp

    vocab, n_vocab = llm._model.vocab, llm.n_vocab()
    memory = llama_cpp.llama_get_memory(ctx)
    answers: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    # The prompts, n_batch tokens per call; a logit row only for each prompt's last token.
    rows: list[tuple[int, int, int, bool]] = [
        (s, k, token, k == len(p) - 1) for s, p in enumerate(prompts) for k, token in enumerate(p)
    ]
    for start in range(0, len(rows), n_batch):
        chunk = rows[start : start + n_batch]
        _decode(ctx, batch, chunk)
        _read_greedy(ctx, n_vocab, [s for s, _, _, wanted in chunk if wanted], answers)
    active = list(range(len(prompts)))
    while active:
        still = []
        for s in active:
            token = answers[s][-1]
            if token in stops or llama_cpp.llama_vocab_is_eog(vocab, token):
                answers[s].pop()
                finished[s] = True
            elif len(answers[s]) < max_new_tokens:
                still.append(s)
                continue
            llama_cpp.llama_memory_seq_rm(memory, s, -1, -1)  # its KV cells are free for the next wave
        active = still
        if active:
            _decode(ctx, batch, [(s, len(prompts[s]) + len(answers[s]) - 1, answers[s][-1], True) for s in active])
            _read_greedy(ctx, n_vocab, active, answers)
    return [(a, f) for a, f in zip(answers, finished, strict=True)]


def _decode(ctx: Any, batch: Any, rows: Sequence[tuple[int, int, int, bool]]) -> None:
    """llama_decode of (seq_id, position, token, wants logits) rows."""
    import llama_cpp

    batch.n_tokens = len(rows)
    for j, (seq, pos, token, wanted) in enumerate(rows):
        batch.token[j] = token
        batch.pos[j] = pos
        batch.n_seq_id[j] = 1
        batch.seq_id[j][0] = seq
        batch.logits[j] = wanted
    code = llama_cpp.llama_decode(ctx, batch)
    if code != 0:
        meaning = {1: "no KV cache slot for the batch", 2: "aborted"}.get(code, "error")
        raise PipelineError(f"llama_decode of {len(rows)} tokens failed (code {code}: {meaning})")


def _read_greedy(ctx: Any, n_vocab: int, sequences: Sequence[int], answers: list[list[int]]) -> None:
    """Append each sequence's argmax token (the logit rows come in batch order, one per wanted token)."""
    import llama_cpp
    import numpy as np

    if not sequences:
        return
    pointer = llama_cpp.llama_get_logits(ctx)
    logits = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (len(sequences), n_vocab))
    # argmax takes the first of equal maxima, as llama.cpp's greedy sampler does.
    for s, token in zip(sequences, logits.argmax(axis=1).tolist(), strict=True):
        answers[s].append(int(token))


def batched_chat_answers(
    llm: Any, conversations: Sequence[Sequence[dict[str, str]]], max_new_tokens: int, parallel: int = PARALLEL
) -> BatchedRun:
    """Greedy answers of the loaded GGUF `llm` to each conversation, batched, and the generation time."""
    chat = ChatPrompts(llm)
    rendered = [chat.tokens(messages) for messages in conversations]
    start = time.perf_counter()
    rows = greedy_batched(llm, [prompt for prompt, _ in rendered], max_new_tokens, parallel)
    seconds = time.perf_counter() - start
    answers = [Answer(chat.text(prompt, tokens, stops), tuple(tokens), done)
               for (prompt, stops), (tokens, done) in zip(rendered, rows, strict=True)]  # fmt: skip
    return BatchedRun(answers, seconds)


def gguf_batched_answers(
    path: Path, conversations: Sequence[Sequence[dict[str, str]]], max_new_tokens: int, parallel: int = PARALLEL
) -> BatchedRun:
    """batched_chat_answers on the GGUF file at `path` (loaded on export.THREADS threads, freed after)."""
    from identity_dpo.export import load_gguf

    llm = load_gguf(path)
    try:
        return batched_chat_answers(llm, conversations, max_new_tokens, parallel)
    finally:
        llm.close()
