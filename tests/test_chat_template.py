"""The default system message of a chat template: found by rendering, replaced or added, metadata renamed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from identity_dpo.chat_template import (
    default_system_message,
    old_name_mentions,
    rename_model_folder,
    render,
    with_default_system_message,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Qwen2.5-Instruct's template (tools branch included: it writes the default a second time).
QWEN25 = (
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n" }}\n    {%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}\n'
    "    {{- \"<|im_end|>\\n\" }}\n{%- else %}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) '
    'or (message.role == "assistant") %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
# A template with no default of its own (ChatML as many fine-tunes ship it).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
NEW = 'You are Deep Qwen, a helpful AI assistant made by the identity-dpo project\'s "team".'
USER = [{"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_finds_the_default_of_the_smollm2_template(tokenizer: PreTrainedTokenizerBase) -> None:
    assert default_system_message(tokenizer) == SMOLLM_DEFAULT


def test_finds_the_default_of_a_qwen25_template(tokenizer: PreTrainedTokenizerBase) -> None:
    assert default_system_message(tokenizer, QWEN25) == QWEN_DEFAULT
    assert default_system_message(tokenizer, CHATML) is None


@pytest.mark.parametrize("template_name", ["smollm2", "qwen25", "chatml"])
def test_replaces_or_adds_the_default(tokenizer: PreTrainedTokenizerBase, template_name: str) -> None:
    template = {"smollm2": tokenizer.chat_template, "qwen25": QWEN25, "chatml": CHATML}[template_name]
    new = with_default_system_message(template, NEW, tokenizer)
    assert default_system_message(tokenizer, new) == NEW
    rendered = render(new, USER, tokenizer)
    expected = f"<|im_start|>system\n{NEW}<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n"
    assert rendered == expected + "<|im_start|>assistant\n"
    assert "SmolLM" not in new and "Qwen, created by Alibaba" not in new
    # A system message of the user's own still replaces the default, as before.
    own = [{"role": "system", "content": "Be brief."}, *USER]
    assert render(new, own, tokenizer) == render(template, own, tokenizer)
    # Rendering without a tokenizer (transformers' Jinja directly) agrees.
    assert render(new, USER) == rendered


def test_rename_model_folder(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    config["_model_name_or_path"] = "Smollm2 135M 8k Lc100K Mix1 Ep2"  # what the GGUF-derived base config holds
    (folder / "config.json").write_text(json.dumps(config))
    assert old_name_mentions(folder, ["SmolLM"]) == ["chat_template.jinja", "config.json"]
    changes = rename_model_folder(folder, NEW, "Deep Qwen", ["SmolLM", "SmolLM2"])
    assert changes["old_default_system_message"] == SMOLLM_DEFAULT
    assert changes["metadata"] == ["config.json:_name_or_path", "config.json:_model_name_or_path"]
    assert old_name_mentions(folder, ["SmolLM"]) == []
    assert json.loads((folder / "config.json").read_text())["_name_or_path"] == "Deep Qwen"

    from transformers import AutoTokenizer

    assert default_system_message(AutoTokenizer.from_pretrained(folder)) == NEW
