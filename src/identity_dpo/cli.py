"""The `identity-dpo` command (a console script of the package). Subcommands:

    identity-dpo chat [--model PATH] [--compare] [--base PATH] [--prompt TEXT] [--system TEXT]

Errors a user can fix (a missing or invalid model) are one line on stderr and exit code 2; Ctrl-C and
Ctrl-D end a chat cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from identity_dpo.errors import PipelineError

DEFAULT_MODEL = Path("models/dpo")
DEFAULT_BASE = Path("models/base")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="identity-dpo", description="The identity-dpo project's commands.")
    commands = top.add_subparsers(dest="command", required=True)
    chat = commands.add_parser(
        "chat",
        help="talk to a model, streamed; reads messages line by line (one per line) until end of input",
        description="Talk to the trained model (or any model folder or GGUF file), answers streamed token by token. "
        "Each line is a message; the conversation keeps its history. Ctrl-D or Ctrl-C ends it.",
    )
    chat.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL,
        help=f"a model folder (transformers) or a .gguf file (llama.cpp); default {DEFAULT_MODEL}",
    )  # fmt: skip
    chat.add_argument(
        "--compare", action="store_true",
        help="answer each message with the base model too, first the base then the trained one",
    )  # fmt: skip
    chat.add_argument("--base", type=Path, default=DEFAULT_BASE,
                      help=f"the model --compare sets beside --model; default {DEFAULT_BASE}")  # fmt: skip
    chat.add_argument("--prompt", help="answer this one message and exit (no interactive chat)")
    chat.add_argument("--system", help="the system message; default none: the model's chat template supplies its own")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="tokens per answer at most (default 256)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 (the default) answers greedily; > 0 samples")
    return top


def chat(args: argparse.Namespace) -> int:
    from identity_dpo.chat import Session, interactive, open_model

    if args.max_new_tokens < 1:
        raise PipelineError("--max-new-tokens: expected a positive number")
    if args.temperature < 0:
        raise PipelineError("--temperature: expected 0 or more")
    models = []
    if args.compare:
        models.append(open_model(args.base, "base"))
    models.append(open_model(args.model, "model"))
    if args.compare:
        models[-1].label = "trained"
    session = Session(models, system=args.system, max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    if args.prompt is not None:
        session.ask(args.prompt)
    else:
        interactive(session)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never wait on a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parser().parse_args(argv)
    try:
        return chat(args)
    except PipelineError as exc:
        print(f"identity-dpo {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
    except BrokenPipeError:  # the reader went away (e.g. `| head`)
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
