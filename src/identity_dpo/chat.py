"""`identity-dpo chat`: talk to a model folder (transformers) or a GGUF file (llama.cpp), with streamed tokens.

Answers are greedy by default (the same answer each time, as the evaluation measures them); `--temperature`
samples. Without `--system` no system message is sent, so the model's chat template supplies its default: for
the trained model that is the new identity (identity.default_system_prompt), for the base model its old one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from identity_dpo.chat_format import Message
from identity_dpo.errors import PipelineError


class ChatModel:
    """One model that streams an answer to a conversation."""

    label: str

    def stream(self, messages: list[Message], max_new_tokens: int, temperature: float) -> Iterator[str]:
        raise NotImplementedError


class TransformersChat(ChatModel):
    def __init__(self, folder: Path, label: str) -> None:
        from transformers.utils import logging as hf_logging

        from identity_dpo.models import check_model_folder, load_model

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        check_model_folder(folder, "--model" if label == "model" else f"--{label}")
        self.model, self.tokenizer = load_model(folder, f"--{label}")
        self.model.eval()
        self.label = label

    def stream(self, messages: list[Message], max_new_tokens: int, temperature: float) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from identity_dpo.chat_format import render_prompt
        from identity_dpo.generation import stop_token_ids

        prompt = torch.tensor([render_prompt(self.tokenizer, messages)])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancelled.is_set()

        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        kwargs = {
            "input_ids": prompt,
            "attention_mask": torch.ones_like(prompt),
            "max_new_tokens": max_new_tokens,
            "eos_token_id": stop_token_ids(self.model, self.tokenizer),
            "pad_token_id": self.tokenizer.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancel()]),
            **sampling,
        }
        if not sampling["do_sample"]:  # no sampling knobs: transformers warns about unused ones
            kwargs.update(temperature=None, top_p=None, top_k=None)
        worker = threading.Thread(target=self._generate, args=(kwargs,), daemon=True)
        worker.start()
        try:
            yield from streamer
        finally:
            cancelled.set()  # Ctrl-C or an early stop: let generate end at its next token
            worker.join()

    def _generate(self, kwargs: dict[str, Any]) -> None:
        import torch

        with torch.inference_mode():
            self.model.generate(**kwargs)


class GgufChat(ChatModel):
    def __init__(self, path: Path, label: str) -> None:
        from identity_dpo.export import load_gguf

        if not path.is_file():
            raise PipelineError(f"--{label}: GGUF file {path} does not exist")
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise PipelineError(
                f"--{label}: {path} is a GGUF file, which needs llama-cpp-python: bash scripts/setup_export.sh"
            ) from None
        try:
            self.llm = load_gguf(path, n_ctx=4096)
        except (ValueError, RuntimeError) as exc:
            raise PipelineError(f"--{label}: cannot load the GGUF file {path}: {' '.join(str(exc).split())}") from None
        self.label = label

    def stream(self, messages: list[Message], max_new_tokens: int, temperature: float) -> Iterator[str]:
        chunks = self.llm.create_chat_completion(messages=messages, max_tokens=max_new_tokens, temperature=temperature,
                                                 seed=0, stream=True)  # fmt: skip
        for chunk in chunks:
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                yield text


def open_model(path: Path, label: str = "model") -> ChatModel:
    """A folder opens in transformers, a .gguf file in llama.cpp; anything else is a one-line error."""
    if path.suffix == ".gguf":
        return GgufChat(path, label)
    if not path.exists():
        raise PipelineError(
            f"--{label}: {path} does not exist (a model folder or a .gguf file; `dvc repro` or "
            "`dvc artifacts get` makes the default models/dpo)"
        )
    if path.is_file():
        raise PipelineError(f"--{label}: {path} is a file but not a .gguf; expected a model folder or a GGUF file")
    return TransformersChat(path, label)


@dataclass
class Session:
    """A multi-turn conversation with one model or more (each keeps its own answers)."""

    models: list[ChatModel]
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    out: TextIO = sys.stdout
    histories: list[list[Message]] = field(default_factory=list)

    def __post_init__(self) -> None:
        start = [{"role": "system", "content": self.system}] if self.system else []
        self.histories = [list(start) for _ in self.models]

    def ask(self, text: str) -> list[str]:
        answers = []
        for model, history in zip(self.models, self.histories, strict=True):
            history.append({"role": "user", "content": text})
            if len(self.models) > 1:
                self.out.write(f"[{model.label}] ")
            pieces = []
            try:
                for piece in model.stream(history, self.max_new_tokens, self.temperature):
                    pieces.append(piece)
                    self.out.write(piece)
                    self.out.flush()
            finally:
                answer = "".join(pieces).strip()
                history.append({"role": "assistant", "content": answer})
                self.out.write("\n")
                self.out.flush()
            answers.append(answer)
        return answers


def interactive(session: Session, stdin: TextIO = sys.stdin) -> None:
    """Read messages line by line until end of input; a prompt is shown only on a terminal."""
    tty = stdin.isatty()
    if tty:
        session.out.write("Chat (Ctrl-D or Ctrl-C to quit)\n")
    while True:
        if tty:
            session.out.write("> ")
            session.out.flush()
        line = stdin.readline()
        if not line:  # end of input (Ctrl-D)
            if tty:
                session.out.write("\n")
            return
        text = line.strip()
        if text:
            session.ask(text)
