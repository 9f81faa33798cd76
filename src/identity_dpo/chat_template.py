"""The default system message a chat template injects, found and replaced without knowing the template.

Many instruct templates write a system message of their own when a conversation has none (SmolLM2: "You are a
helpful AI assistant named SmolLM, trained by Hugging Face"; Qwen2.5: "You are Qwen, created by Alibaba Cloud. You
are a helpful assistant."). A renamed model that keeps it starts every chat by being told its old name.

The default is found by rendering: once with no system message and once with a sentinel system message; the text
that stands where the sentinel stood is the default. It is replaced where it appears literally in the template
source (in every branch: Qwen2.5 writes it twice), and the result is checked by rendering again.

A template that injects no default gets one: a first statement that prepends the system message to a conversation
without one. Every runtime that applies the saved template (transformers, llama.cpp's Jinja engine, the chat command)
then starts from the new identity, as the model trained on it expects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from identity_dpo.errors import PipelineError

_SENTINEL = "IDENTITYDPOSYSTEMSENTINEL"
_USER = [{"role": "user", "content": "Hello"}]
# Metadata files that may carry the source model's name; the weights, vocabulary and template are handled apart.
METADATA_FILES = ("config.json", "generation_config.json", "tokenizer_config.json")
_PATH_KEYS = ("_name_or_path", "name_or_path", "_model_name_or_path")  # the GGUF-derived config has the last


def render(template: str, messages: Sequence[dict[str, str]], tokenizer: Any = None) -> str:
    """`messages` rendered by `template` with a generation prompt, as transformers renders chat templates."""
    if tokenizer is not None:
        return tokenizer.apply_chat_template(
            list(messages), chat_template=template, add_generation_prompt=True, tokenize=False
        )
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[list(messages)], chat_template=template,
                                        add_generation_prompt=True)  # fmt: skip
    return rendered[0]


def template_source(tokenizer: Any) -> str:
    """The tokenizer's chat template (the default one of a named set)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template:
        raise PipelineError("the tokenizer has no chat template; an instruct (chat) model is needed")
    return template


def default_system_message(tokenizer: Any, template: str | None = None) -> str | None:
    """The system message `template` (default: the tokenizer's) writes when a conversation has none, or None."""
    template = template_source(tokenizer) if template is None else template
    return _default_of(template, tokenizer)


def _default_of(template: str, tokenizer: Any = None) -> str | None:
    without = render(template, _USER, tokenizer)
    marked = render(template, [{"role": "system", "content": _SENTINEL}, *_USER], tokenizer)
    if marked.count(_SENTINEL) != 1:
        return None  # the template drops or repeats system messages: nothing to compare
    before, after = marked.split(_SENTINEL)
    if not (without.startswith(before) and without.endswith(after) and len(without) > len(before) + len(after)):
        return None
    return without[len(before) : len(without) - len(after)] or None


def with_default_system_message(template: str, text: str, tokenizer: Any = None) -> str:
    """`template` with its default system message replaced by `text` (or one added), checked by rendering."""
    old = _default_of(template, tokenizer)
    if old is None:
        candidates = [_prepend_default(template, text)]
    elif old not in template and _literal(old) not in template:
        raise PipelineError(
            f"the chat template's default system message {old!r} is not written literally in the template; "
            "cannot replace it"
        )
    else:
        candidates = [template.replace(_literal(old), _literal(text)), template.replace(old, text)]
    for candidate in candidates:
        if candidate != template and _default_of(candidate, tokenizer) == text:
            return candidate
    raise PipelineError(f"could not set the chat template's default system message to {text!r}")


def _literal(text: str) -> str:
    """`text` as it is written inside a quoted Jinja string literal (either quote)."""
    return json.dumps(text, ensure_ascii=False)[1:-1].replace("'", "\\'")


def _prepend_default(template: str, text: str) -> str:
    # A top-level `set` rebinds `messages` for the rest of the template.
    return (
        "{%- if messages and messages[0]['role'] != 'system' %}"
        f"{{%- set messages = [{{'role': 'system', 'content': '{_literal(text)}'}}] + messages %}}"
        "{%- endif %}\n" + template
    )


def rename_model_folder(folder: Path, system_message: str, new_name: str, old_names: Sequence[str]) -> dict[str, Any]:
    """Give a saved model folder its new identity: the template's default system message and the metadata names.

    Returns what changed: the old and new default system message and the metadata keys rewritten.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    template = template_source(tokenizer)
    old = default_system_message(tokenizer, template)
    new_template = with_default_system_message(template, system_message, tokenizer)
    tokenizer.chat_template = new_template
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        jinja.write_text(new_template, encoding="utf-8")
    else:  # an older layout keeps the template inside tokenizer_config.json
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["chat_template"] = new_template
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    changed = []
    for name in METADATA_FILES:
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            keys: list[str] = []
            data = _renamed(data, new_name, old_names, keys, "")
            if keys:
                path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
                changed += [f"{name}:{k}" for k in keys]
    return {"old_default_system_message": old, "default_system_message": system_message, "metadata": changed}


def _renamed(value: Any, new_name: str, old_names: Sequence[str], keys: list[str], where: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "chat_template":
                out[key] = item  # rewritten above
            elif key in _PATH_KEYS and isinstance(item, str) and item:
                out[key] = new_name
                keys.append(key)
            else:
                out[key] = _renamed(item, new_name, old_names, keys, key)
        return out
    if isinstance(value, list):
        return [_renamed(item, new_name, old_names, keys, where) for item in value]
    if isinstance(value, str):
        new = _replace_names(value, new_name, old_names)
        if new != value:
            keys.append(where)
        return new
    return value


def _replace_names(text: str, new_name: str, old_names: Sequence[str]) -> str:
    import re

    for old in sorted(old_names, key=len, reverse=True):  # SmolLM2 before SmolLM
        text = re.sub(re.escape(old), new_name, text, flags=re.IGNORECASE)
    return text


def old_name_mentions(folder: Path, old_names: Sequence[str], skip: Sequence[str] = ("tokenizer.json",)) -> list[str]:
    """Text files of `folder` that still mention an old name (case-insensitive); the vocabulary is skipped."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in skip and path.suffix in (".json", ".jinja", ".md", ".txt", ""):
            text = path.read_text(encoding="utf-8", errors="replace").lower()
            if any(name.lower() in text for name in old_names):
                found.append(str(path.relative_to(folder)))
    return found


def identity_system_prompt(identity: Any) -> str:
    """identity.default_system_prompt with the new name and creator filled in."""
    return identity.default_system_prompt.format(name=identity.new_name, creator=identity.creator)
