"""With LoRA the train stage keeps the adapter as its own output (models/adapter): PEFT's folder, a few MB, that
applied to the base model and merged gives the merged model's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from identity_dpo.training import check_training_inputs, train_dpo
from tiny_model import make_pairs, train_params


def test_lora_keeps_the_adapter_beside_the_merged_model(
    tiny_model_dir: Path, tmp_path: Path, default_params: dict[str, Any]
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    params = train_params(default_params, learning_rate=1e-2, lora={"enabled": True, "rank": 4, "alpha": 8})
    pairs = make_pairs()
    check_training_inputs(params, tiny_model_dir, pairs)
    out, adapter = tmp_path / "out", tmp_path / "adapter"
    train_dpo(tiny_model_dir, pairs, params, out, tmp_path / "curves", tmp_path / "scratch", adapter_dir=adapter)
    assert sorted(p.name for p in adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert all("lora_" in name for name in load_file(adapter / "adapter_model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, use_safetensors=True)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    trained = load_file(out / "model.safetensors")
    for name, tensor in merged.state_dict().items():
        if name in trained:
            assert torch.allclose(tensor, trained[name], atol=1e-5), name
