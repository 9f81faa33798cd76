"""The answer-only LM head (cpu_kernels/answer_head.py) and its one row per pair (cpu_kernels/shared_prompt.py)
against TRL's own fused head and layout: same numbers, same training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig

from identity_dpo.cpu_kernels import answer_head
from identity_dpo.cpu_kernels.answer_head import add_answer_lm_head
from identity_dpo.cpu_kernels.shared_prompt import pack_pairs
from identity_dpo.models import load_model
from identity_dpo.training import train_dpo
from tiny_model import make_pairs, train_params

pytestmark = pytest.mark.cpu_kernels  # each test compares a kernel with TRL's own path

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")


def patched_model(model_dir: Path, ours: bool, share_prompts: bool = True) -> Any:
    from trl.trainer.utils import add_fused_lm_head

    model, _ = load_model(model_dir)
    if ours:
        add_answer_lm_head(model, outputs=OUTPUTS, fallback=add_fused_lm_head, share_prompts=share_prompts)
    else:
        add_fused_lm_head(model, outputs=OUTPUTS)
    return model


@pytest.mark.parametrize("chunk_tokens", [512, 7])  # 7: the batch spans several chunks, one of them partial
@pytest.mark.parametrize("kept_chunks", ["all", "none", "one"])  # the softmax kept for the backward, or recomputed
def test_same_log_probs_statistics_and_gradients_as_trl(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_tokens: int, kept_chunks: str
) -> None:
    monkeypatch.setattr(answer_head, "CHUNK_TOKENS", chunk_tokens)
    vocabulary = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    keep = {"all": answer_head.KEEP_BYTES, "none": 0, "one": chunk_tokens * vocabulary * 4}[kept_chunks]
    monkeypatch.setattr(answer_head, "KEEP_BYTES", keep)
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


@pytest.mark.parametrize("chunk_tokens", [512, 7])
@pytest.mark.parametrize("kept_chunks", ["all", "none"])
def test_under_bf16_autocast_same_log_probs_and_gradients_as_trl(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, chunk_tokens: int, kept_chunks: str
) -> None:
    """train.precision bf16 on a CPU: both heads under the same autocast, vocabulary products in bf16, softmax in
    fp32. (Autocast runs bf16 on any CPU, natively or not: the numbers are the same, only the speed differs.)"""
    monkeypatch.setattr(answer_head, "CHUNK_TOKENS", chunk_tokens)
    monkeypatch.setattr(answer_head, "KEEP_BYTES", answer_head.KEEP_BYTES if kept_chunks == "all" else 0)
    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (3, 12))
    labels = input_ids.clone()
    labels[:, :5] = -100
    labels[2, 9:] = -100
    results = []
    for ours in (False, True):
        model = patched_model(tiny_model_dir, ours)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() * 0.5).backward()
        results.append((out, {name: p.grad for name, p in model.named_parameters()}))
    (theirs, their_grads), (mine, my_grads) = results
    for field in ("log_probs", "entropy", "mean_logits"):
        assert getattr(mine, field).dtype == torch.float32  # the softmax and its statistics stay fp32
        torch.testing.assert_close(getattr(mine, field), getattr(theirs, field), rtol=1e-3, atol=1e-3)
    assert torch.equal(mine.is_top1, theirs.is_top1)
    torch.testing.assert_close(mine.loss, theirs.loss, rtol=1e-4, atol=1e-4)
    for name, grad in their_grads.items():
        assert my_grads[name].dtype == torch.float32, name  # fp32 master weights get fp32 gradients
        # bf16 products rounded in other places: a few hundredths of the largest entry (bf16 against fp32 is ~10x more)
        torch.testing.assert_close(my_grads[name], grad, rtol=0, atol=0.05 * float(grad.abs().max()), msg=name)
    assert my_grads["model.embed_tokens.weight"].abs().sum() > 0


def test_a_second_backward_through_the_head_gives_the_same_gradients(tiny_model_dir: Path) -> None:
    """The kept softmax is consumed by the first backward; with retain_graph a second one recomputes it."""
    torch.manual_seed(0)
    input_ids = torch.randint(0, 1000, (2, 10))
    labels = input_ids.clone()
    labels[:, :4] = -100
    model = patched_model(tiny_model_dir, ours=True)
    loss = model(input_ids=input_ids, labels=labels, fused_lm_head=True).log_probs.sum()
    loss.backward(retain_graph=True)
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    loss.backward()
    for name, p in model.named_parameters():
        # the recomputed softmax is exp(logits - log_z), the kept one exp(logits - max) / sum: rounding apart
        torch.testing.assert_close(p.grad, first[name], rtol=1e-4, atol=1e-5 * float(first[name].abs().max()), msg=name)


def test_without_fused_flag_the_model_is_unchanged(tiny_model_dir: Path) -> None:
    plain, _ = load_model(tiny_model_dir)
    model = patched_model(tiny_model_dir, ours=True)
    input_ids = torch.randint(0, 1000, (2, 8))
    torch.testing.assert_close(model(input_ids=input_ids).logits, plain(input_ids=input_ids).logits)
    assert model.generate(input_ids=input_ids, max_new_tokens=3, do_sample=False).shape == (2, 11)


@pytest.mark.parametrize("variant", ["reference every step", "reference precomputed", "lora"])
def test_training_gives_the_same_losses_as_trls_head(
    tiny_model_dir: Path,
    tmp_path: Path,
    default_params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
) -> None:
    # lora: PEFT's forward passes its own arguments (None where unset) down to the head
    lora = {"lora": {"enabled": True, "rank": 4, "alpha": 8}} if variant == "lora" else {}
    precompute_ref = variant != "reference every step"
    params = train_params(default_params, precompute_ref_log_probs=precompute_ref, **lora)  # fp32
    packed = _count_packed_batches(monkeypatch)
    losses = {}
    for name, cpu_kernels in (("trl", "none"), ("ours", "auto")):  # none: TRL's head, PEFT's and transformers' layers
        folder = tmp_path / name
        train_dpo(tiny_model_dir, make_pairs(8), params, folder / "model", folder / "curves", folder / "scratch",
                  cpu_kernels=cpu_kernels)  # fmt: skip
        losses[name] = _logged(folder / "curves", "loss")
    assert len(losses["ours"]) == 2
    assert losses["ours"] == pytest.approx(losses["trl"], rel=1e-4)
    # ours read each pair's prompt once, in every forward pass: the reference's, precomputed in one batch of 8
    # pairs or run at each step, and the policy's at each of the 2 steps
    assert packed == ([8, 4, 4] if precompute_ref else [4, 4, 4, 4])


def dpo_batch(pairs: list[tuple[list[int], list[int], list[int]]]) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, labels) laid out as TRL's DPO collator does: chosen rows, then rejected rows."""
    rows = [(p, c) for p, c, _ in pairs] + [(p, r) for p, _, r in pairs]
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.tensor([p + a + [0] * (width - len(p) - len(a)) for p, a in rows])
    attention_mask = torch.tensor([[1] * (len(p) + len(a)) + [0] * (width - len(p) - len(a)) for p, a in rows])
    answer = torch.tensor([[0] * len(p) + [1] * len(a) + [0] * (width - len(p) - len(a)) for p, a in rows])
    return input_ids, attention_mask, input_ids.masked_fill(answer == 0, -100)


# prompts of different lengths, answers longer and shorter than their pair's other answer, a one-token answer
PAIRS = [
    ([5, 6, 7, 8], [20, 21, 22], [30, 31]),
    ([9, 10], [23, 24, 25, 26, 27], [32]),
    ([11, 12, 13, 14, 15, 16], [28], [33, 34, 35, 36]),
]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_pairs_in_one_row_give_the_same_numbers_as_two_rows(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, attention: str
) -> None:
    (rows, row_grads), (shared, shared_grads) = _two_rows_then_one(tiny_model_dir, monkeypatch, attention=attention)
    labels = dpo_batch(PAIRS)[2]
    for field in ("log_probs", "entropy", "mean_logits"):
        torch.testing.assert_close(getattr(shared, field), getattr(rows, field), rtol=1e-4, atol=1e-4)
    assert torch.equal(shared.is_top1, rows.is_top1)
    assert torch.equal(shared.label_mask, rows.label_mask)
    assert (shared.log_probs != 0).sum() == (labels[:, 1:] != -100).sum()
    for name, grad in row_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()), msg=name)


def test_under_bf16_autocast_pairs_in_one_row_give_the_numbers_of_two_rows(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (rows, row_grads), (shared, shared_grads) = _two_rows_then_one(tiny_model_dir, monkeypatch, bf16=True)
    # the same tokens attended in another layout: bf16 attention sums in another order
    torch.testing.assert_close(shared.log_probs, rows.log_probs, rtol=2e-2, atol=2e-2)
    assert torch.equal(shared.label_mask, rows.label_mask)
    for name, grad in row_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, rtol=0, atol=0.05 * float(grad.abs().max()), msg=name)


def test_a_pair_reads_its_prompt_once_and_its_answers_apart() -> None:
    packed = pack_pairs(*dpo_batch([([5, 6, 7], [20, 21], [30])]))
    assert packed is not None
    assert packed.input_ids.tolist() == [[5, 6, 7, 20, 21, 30]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 3]]  # the rejected answer starts where the prompt ends
    assert packed.allowed[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0, 1],  # the rejected token sees the prompt and itself, not the chosen answer
    ]
    # labels 20, 21 are predicted from positions 2, 3; label 30 from the prompt's last position, 2
    assert packed.source_row.tolist() == [0, 0, 0]
    assert packed.source_position.tolist() == [2, 3, 2]


@pytest.mark.parametrize(
    "case",
    ["odd rows", "different prompts", "answer cut away", "gap in an answer", "left padding"],
)
def test_batches_not_laid_out_as_pairs_are_left_as_they_are(case: str) -> None:
    input_ids, attention_mask, labels = dpo_batch(PAIRS)
    if case == "odd rows":
        input_ids, attention_mask, labels = input_ids[:5], attention_mask[:5], labels[:5]
    elif case == "different prompts":
        input_ids[4, 0] = 99  # the second pair's rejected row (keep_end truncation cuts prompts differently)
    elif case == "answer cut away":
        labels[1] = -100
    elif case == "gap in an answer":
        labels[0, 5] = -100
    else:
        input_ids, attention_mask, labels = input_ids.roll(1, 1), attention_mask.roll(1, 1), labels.roll(1, 1)
    assert pack_pairs(input_ids, attention_mask, labels) is None


def test_a_sliding_window_model_keeps_two_rows_per_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import MistralConfig, MistralForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    config = MistralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=2)  # fmt: skip
    model = MistralForCausalLM(config)
    add_answer_lm_head(model, outputs=OUTPUTS, fallback=add_fused_lm_head)
    packed = _count_packed_batches(monkeypatch)
    input_ids, attention_mask, labels = dpo_batch(PAIRS)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
    plain = model(input_ids=input_ids, attention_mask=attention_mask).logits.log_softmax(-1)[:, :-1]
    expected = plain.gather(-1, labels[:, 1:].clamp(min=0)[..., None]).squeeze(-1) * (labels[:, 1:] != -100)
    torch.testing.assert_close(out.log_probs, expected, rtol=1e-5, atol=1e-5)
    assert packed == []  # the window lives in the model's own mask, which a packed row would replace


def test_an_attention_that_takes_no_4d_mask_keeps_two_rows_per_pair(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # Registered attention codes, like flash and flex, get no 4D mask from the model: a packed row's would be lost.
    AttentionInterface.register("own_attention", sdpa_attention_forward)
    packed = _count_packed_batches(monkeypatch)
    input_ids, attention_mask, labels = dpo_batch(PAIRS)
    log_probs = []
    for ours in (False, True):
        model = patched_model(tiny_model_dir, ours)
        model.set_attn_implementation("own_attention")
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        log_probs.append(out.log_probs)
    assert packed == []
    torch.testing.assert_close(log_probs[1], log_probs[0], rtol=1e-4, atol=1e-4)


def _two_rows_then_one(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, *, attention: str | None = None, bf16: bool = False
) -> list[tuple[Any, dict[str, torch.Tensor]]]:
    """The head's outputs and every parameter's gradient for PAIRS, each pair as two rows, then as one shared row."""
    input_ids, attention_mask, labels = dpo_batch(PAIRS)
    packed = _count_packed_batches(monkeypatch)
    results = []
    for share in (False, True):
        model = patched_model(model_dir, ours=True, share_prompts=share)
        if attention is not None:
            model.set_attn_implementation(attention)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        (out.log_probs * torch.arange(1, labels.size(1))).sum().backward()  # a different weight per position
        results.append((out, {name: p.grad.clone() for name, p in model.named_parameters()}))
    assert packed == [3]  # one row per pair, only when sharing
    return results


def _count_packed_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the head's packing: the number of pairs of each batch it packed."""
    packed: list[int] = []
    original = answer_head.pack_pairs

    def counting(*args: Any) -> Any:
        result = original(*args)
        if result is not None:
            packed.append(result.input_ids.size(0))
        return result

    monkeypatch.setattr(answer_head, "pack_pairs", counting)
    return packed


def _logged(curves: Path, name: str) -> list[float]:
    lines = (curves / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(line.split("\t")[-1]) for line in lines]
