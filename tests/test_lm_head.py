"""The answer-only LM head (lm_head.py) against TRL's own fused head: same numbers, same training."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from identity_dpo import lm_head
from identity_dpo.lm_head import add_answer_lm_head
from identity_dpo.models import load_model
from identity_dpo.params import params_from_dict
from identity_dpo.training import train_dpo
from test_training import make_pairs

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def patched_model(model_dir: Path, ours: bool) -> Any:
    from trl.trainer.utils import add_fused_lm_head

    model, _ = load_model(model_dir)
    if ours:
        add_answer_lm_head(model, outputs=OUTPUTS, fallback=add_fused_lm_head)
    else:
        add_fused_lm_head(model, outputs=OUTPUTS)
    return model


@pytest.mark.parametrize("chunk_tokens", [512, 7])  # 7: the batch spans several chunks, one of them partial
def test_same_log_probs_statistics_and_gradients_as_trl(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_tokens: int
) -> None:
    monkeypatch.setattr(lm_head, "CHUNK_TOKENS", chunk_tokens)
    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (3, 12))
    labels = input_ids.clone()
    labels[:, :5] = -100  # the prompt: no label
    labels[2, 9:] = -100  # a shorter answer (right padding)
    results = []
    for ours in (False, True):
        model = patched_model(tiny_model_dir, ours)
        out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() * 0.5).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        results.append((out, grads))
    (theirs, their_grads), (mine, my_grads) = results
    for field in ("log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(mine, field), getattr(theirs, field), rtol=1e-4, atol=1e-4)
    assert torch.equal(mine.is_top1, theirs.is_top1)
    assert torch.equal(mine.label_mask, theirs.label_mask)
    torch.testing.assert_close(mine.loss, theirs.loss, rtol=1e-5, atol=1e-5)
    assert (mine.log_probs[labels[:, 1:] == -100] == 0).all()
    for name, grad in their_grads.items():
        # float32 sums in another order: differences of about 1e-6 of the largest entry
        torch.testing.assert_close(my_grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)
    # the head itself gets a gradient (tied with the embedding), so the weight path is really checked
    assert my_grads["model.embed_tokens.weight"].abs().sum() > 0


def test_without_fused_flag_the_model_is_unchanged(tiny_model_dir: Path) -> None:
    plain, _ = load_model(tiny_model_dir)
    model = patched_model(tiny_model_dir, ours=True)
    input_ids = torch.randint(0, 1000, (2, 8))
    torch.testing.assert_close(model(input_ids=input_ids).logits, plain(input_ids=input_ids).logits)
    assert model.generate(input_ids=input_ids, max_new_tokens=3, do_sample=False).shape == (2, 11)


def test_training_gives_the_same_losses_as_trls_head(
    tiny_model_dir: Path, tmp_path: Path, default_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    default_params["train"].update({"batch_size": 4, "max_length": 128})
    params = dataclasses.replace(params_from_dict(default_params).train, precompute_ref_log_probs=False)
    losses = {}
    for name, enabled in (("trl", False), ("ours", True)):
        monkeypatch.setattr("identity_dpo.training.answer_only_lm_head", lambda enabled, _on=enabled: _switch(_on))
        folder = tmp_path / name
        train_dpo(tiny_model_dir, make_pairs(8), params, folder / "model", folder / "curves", folder / "scratch")
        losses[name] = _logged(folder / "curves", "loss")
    assert len(losses["ours"]) == 2
    assert losses["ours"] == pytest.approx(losses["trl"], rel=1e-4)


def _switch(enabled: bool) -> Any:
    return lm_head.answer_only_lm_head(enabled)


def _logged(curves: Path, name: str) -> list[float]:
    lines = (curves / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[-1]) for line in lines]
