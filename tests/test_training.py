"""Training on the tiny model: checks before loading, LoRA merged into a plain folder, the CPU kernels against the
plain library path, resuming from checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from transformers import TrainerCallback

from fused_calls import BF16_TRAINING_KERNELS, TRAINING_KERNELS, TrainingKernels, watch_training
from identity_dpo import cpu_features, launch
from identity_dpo.checkpoints import last_checkpoint, prepare_checkpoints, run_fingerprint
from identity_dpo.errors import ParamsError
from identity_dpo.launch import check_launch, resolve_precision
from identity_dpo.params import LaunchParams, params_from_dict
from identity_dpo.training import check_training_inputs, dpo_config, train_dpo
from stage_harness import load_stage
from tiny_model import make_pairs, train_params

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from identity_dpo.params import TrainParams

ROOT = Path(__file__).resolve().parents[1]
PLAIN_MODEL_FILES = [
    "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
    "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() for p in sorted(folder.iterdir())}


# --- checks before any weights load ------------------------------------------------------------------------


def test_defaults_keep_single_process_training(default_params: dict[str, Any], tmp_path: Path) -> None:
    params = params_from_dict(default_params).train
    assert params.launch == LaunchParams(profile="none", processes=1)
    assert params.lora.enabled is True and params.resume is False and params.precision == "auto"
    config = dpo_config(params, tmp_path, 127)
    assert config.save_strategy == "no" and config.output_dir == str(tmp_path)
    # auto: bf16 where this machine trains it natively (a GPU with bf16, a CPU with AMX-BF16 or AVX512-BF16), else fp32
    assert config.bf16 is (launch.bf16_refusal() is None) and config.fp16 is False


def test_short_max_length_is_refused_before_the_model_loads(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_params: dict[str, Any]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(tiny_model_dir, project / "models/base")
    (project / "data/pairs").mkdir(parents=True)
    (project / "data/pairs/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in make_pairs()))
    monkeypatch.chdir(project)
    stage = load_stage("train")

    def no_loading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the params were checked")

    monkeypatch.setattr("identity_dpo.models.load_model", no_loading)
    default_params["train"]["max_length"] = 24
    with pytest.raises(ParamsError, match=r"train\.max_length: expected at least \d+ \(the longest prompt, p\d+"):
        stage.main(params_from_dict(default_params))
    assert not (project / "models/trained").exists()


def test_lora_target_modules_are_checked_against_the_architecture(
    tiny_model_dir: Path, default_params: dict[str, Any]
) -> None:
    params = train_params(default_params, lora={"enabled": True, "target_modules": ["q_proj", "qkv"]})
    with pytest.raises(ParamsError) as error:
        check_training_inputs(params, tiny_model_dir, make_pairs())
    message = str(error.value)
    assert message.startswith("train.lora.target_modules[1]: no module 'qkv' in LlamaForCausalLM")
    assert "q_proj" in message and "down_proj" in message


@pytest.mark.parametrize(
    ("launch", "precision", "message"),
    [
        ({"profile": "ddp", "processes": 2}, "auto", "train.launch.processes: 2 processes of profile ddp need 2 CUDA"),
        ({"profile": "deepspeed_zero2", "processes": 1}, "auto", "train.launch.profile: deepspeed_zero2 needs the "
         "deepspeed package"),
        ({"profile": "none", "processes": 1}, "fp16", "train.precision: fp16 needs a CUDA GPU"),
    ],
)  # fmt: skip
def test_hardware_and_packages_are_checked_before_launching(
    default_params: dict[str, Any], tiny_model_dir: Path, launch: dict, precision: str, message: str
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks what a machine without CUDA says")
    if launch["profile"].startswith("deepspeed") and importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed")
    params = train_params(default_params, launch=launch, precision=precision)
    with pytest.raises(ParamsError, match=message):
        check_training_inputs(params, tiny_model_dir, make_pairs())
        check_launch(params, ROOT / "configs/accelerate")


# --- precision: bf16 on a CPU with native bf16 matrix instructions ------------------------------------------

needs_native_bf16 = pytest.mark.skipif(
    cpu_features.native_bf16_feature() is None,
    reason="this CPU has no native bf16 matrix instructions (AMX-BF16, AVX512-BF16): train.precision bf16 is refused",
)
on_a_cpu_only = pytest.mark.skipif(
    not launch.trains_on_cpu(), reason="checks where training runs on the CPU (no accelerator)"
)


@pytest.mark.parametrize(
    ("flags", "feature"),
    [
        ({"amx_bf16": True, "avx512_bf16": True, "avx2": True}, "amx_bf16"),  # Intel Xeon with AMX: the tiles first
        ({"amx_bf16": False, "avx512_bf16": True, "avx512_f": True}, "avx512_bf16"),  # e.g. AMD EPYC (Zen 4)
        ({"avx512_f": True, "avx2": True, "avx512_bf16": False}, None),  # AVX-512 without bf16: emulated
        ({"avx2": True, "architecture": "x86_64", "num_sockets": 1}, None),  # AVX2 only (values that are no flags)
    ],
)
def test_native_bf16_is_read_from_torch_s_cpu_capabilities(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, Any], feature: str | None
) -> None:
    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert cpu_features.native_bf16_feature() == feature


@pytest.mark.parametrize(
    ("cpuinfo", "feature"),
    [
        ("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n", "avx512_bf16"),
        ("flags\t\t: fpu avx2 amx_tile amx_bf16 avx512_bf16\n", "amx_bf16"),
        ("flags\t\t: fpu sse2 avx2\n", None),
        (None, None),  # no /proc/cpuinfo (another OS): not known to be native
    ],
)
def test_without_torch_s_capabilities_the_kernel_s_cpu_flags_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpuinfo: str | None, feature: str | None
) -> None:
    import torch

    monkeypatch.delattr(torch.cpu, "get_capabilities")
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(cpu_features, "CPUINFO", path)
    assert cpu_features.native_bf16_feature() == feature


@on_a_cpu_only
def test_bf16_on_a_cpu_without_native_bf16_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, default_params: dict[str, Any], tiny_model_dir: Path
) -> None:
    params = train_params(default_params, precision="bf16")
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: None)
    with pytest.raises(ParamsError) as error:
        check_training_inputs(params, tiny_model_dir, make_pairs())
    assert str(error.value) == (
        "train.precision: bf16 on a CPU needs native bf16 matrix instructions (AMX-BF16 or AVX512-BF16), which this "
        "CPU lacks (it would emulate bf16, slower than fp32); use auto or fp32"
    )
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: "avx512_bf16")
    check_training_inputs(params, tiny_model_dir, make_pairs())  # accepted where the CPU has it


@on_a_cpu_only
@pytest.mark.parametrize("feature", ["amx_bf16", "avx512_bf16"])
def test_auto_trains_in_bf16_on_a_cpu_with_native_bf16_and_tells_transformers_it_is_a_cpu(
    monkeypatch: pytest.MonkeyPatch, default_params: dict[str, Any], tmp_path: Path, feature: str
) -> None:
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: feature)
    for precision in ("auto", "bf16"):
        params = train_params(default_params, precision=precision)
        assert resolve_precision(params) == "bf16"
        config = dpo_config(params, tmp_path, 8)
        assert config.bf16 is True and config.use_cpu is True  # transformers' CPU autocast
    config = dpo_config(train_params(default_params, precision="fp32"), tmp_path, 8)  # fp32 on request
    assert config.bf16 is False and config.use_cpu is False


@on_a_cpu_only
def test_auto_stays_fp32_on_a_cpu_without_native_bf16(
    monkeypatch: pytest.MonkeyPatch, default_params: dict[str, Any], tmp_path: Path
) -> None:
    """An AVX2-only CPU: auto is fp32, configured exactly as fp32 on request, so its results stay those of fp32."""
    monkeypatch.setattr(launch, "native_bf16_feature", lambda: None)
    configs = {p: dpo_config(train_params(default_params, precision=p), tmp_path, 8) for p in ("auto", "fp32")}
    assert resolve_precision(train_params(default_params, precision="auto")) == "fp32"
    assert configs["auto"].to_dict() == configs["fp32"].to_dict()
    assert configs["auto"].bf16 is False and configs["auto"].use_cpu is False


def test_every_launch_profile_has_an_accelerate_config() -> None:
    from typing import get_args

    from identity_dpo.params import LaunchProfile

    profiles = {p for p in get_args(LaunchProfile) if p != "none"}
    assert {p.stem for p in (ROOT / "configs/accelerate").glob("*.yaml")} == profiles


# --- LoRA ---------------------------------------------------------------------------------------------------


def test_lora_saves_a_merged_plain_model(tiny_model_dir: Path, tmp_path: Path, default_params: dict[str, Any]) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    params = train_params(default_params, learning_rate=1e-2, lora={"enabled": True, "rank": 4, "alpha": 8})
    pairs = make_pairs()
    check_training_inputs(params, tiny_model_dir, pairs)
    out = tmp_path / "out"
    summary = train_dpo(tiny_model_dir, pairs, params, out, tmp_path / "curves", tmp_path / "scratch")
    assert "loss" in summary
    assert sorted(p.name for p in out.iterdir()) == PLAIN_MODEL_FILES  # no adapter_config.json, no adapter weights
    base, trained = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(trained) == set(base), "the merged model has the base model's tensors, no lora_A/lora_B"
    changed = [name for name in base if not (base[name] == trained[name]).all()]
    assert changed and all(name.endswith("proj.weight") for name in changed)  # all-linear: attention + MLP only
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)  # loads without PEFT
    assert type(model).__name__ == "LlamaForCausalLM"


# --- the CPU kernels against the plain library path (identity_dpo.cpu_kernels) --------------------------------


@dataclass(frozen=True)
class Run:
    losses: list[float]  # the logged loss of each step
    kernels: TrainingKernels  # what each training kernel did


def watched_training(model_dir: Path, folder: Path, params: TrainParams, cpu_kernels: str) -> Run:
    with pytest.MonkeyPatch.context() as monkeypatch:
        kernels = watch_training(monkeypatch)
        train_dpo(model_dir, make_pairs(), params, folder / "model", folder / "curves", folder / "scratch",
                  cpu_kernels=cpu_kernels)  # fmt: skip
    lines = (folder / "curves" / "plots" / "metrics" / "loss.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return Run([float(line.split("\t")[-1]) for line in lines], kernels)


def runs_with_and_without_kernels(model_dir: Path, folder: Path, **train: Any) -> dict[str, Run]:
    """The same training with the CPU kernels (auto) and with the plain library path (none)."""
    params = train_params(yaml.safe_load((ROOT / "params.yaml").read_text()), learning_rate=1e-2, **train)
    return {setting: watched_training(model_dir, folder / setting, params, setting) for setting in ("auto", "none")}


@pytest.fixture(scope="module")
def lora_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return runs_with_and_without_kernels(
        tiny_model_dir, tmp_path_factory.mktemp("lora"), lora={"enabled": True, "rank": 4, "alpha": 8}
    )


@pytest.fixture(scope="module")
def full_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    return runs_with_and_without_kernels(tiny_model_dir, tmp_path_factory.mktemp("full"), lora={"enabled": False})


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("fine_tuning", ["lora", "full"])
def test_cpu_kernels_train_with_the_plain_library_path_s_losses(
    fine_tuning: str, request: pytest.FixtureRequest
) -> None:
    """cpu_kernels auto (the answer head, one row per pair, fused LoRA and norms, grouped attention) and none (TRL,
    PEFT and transformers as they are) give the same loss curve, with LoRA and with full fine-tuning (where the
    norms' weights train too)."""
    runs: dict[str, Run] = request.getfixturevalue(f"{fine_tuning}_runs")
    fast, plain = runs["auto"], runs["none"]
    kernels = [kernel for kernel in TRAINING_KERNELS if kernel != "fused_lora" or fine_tuning == "lora"]
    assert all(fast.kernels.ran(kernel) for kernel in kernels)
    assert not any(plain.kernels.touched(kernel) for kernel in (*TRAINING_KERNELS, *BF16_TRAINING_KERNELS))
    assert not any(fast.kernels.touched(kernel) for kernel in BF16_TRAINING_KERNELS)  # fp32 runs stay fp32's
    assert len(fast.losses) == len(plain.losses) > 1
    assert fast.losses == pytest.approx(plain.losses, rel=1e-4, abs=1e-5)
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ  # switched on for the training only


@pytest.mark.cpu_kernels
@needs_native_bf16
def test_bf16_on_a_cpu_trains_with_the_kernels_as_with_the_plain_library_path(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """train.precision bf16 on a CPU: transformers' autocast with fp32 master weights; every training kernel runs
    under it, with the plain path's losses up to bf16 rounding, and the metrics say which precision ran."""
    from safetensors.torch import load_file

    runs = runs_with_and_without_kernels(
        tiny_model_dir, tmp_path, precision="bf16", lora={"enabled": True, "rank": 4, "alpha": 8}
    )
    fast, plain = runs["auto"], runs["none"]
    assert all(fast.kernels.ran(kernel) for kernel in (*TRAINING_KERNELS, *BF16_TRAINING_KERNELS))
    assert not any(plain.kernels.touched(kernel) for kernel in (*TRAINING_KERNELS, *BF16_TRAINING_KERNELS))
    assert len(fast.losses) == len(plain.losses) > 1
    assert fast.losses == pytest.approx(plain.losses, rel=2e-2)  # bf16 products summed in other orders
    # The frozen weights the kernels cast (every LoRA layer's base, and the head) were cast once for the whole loop.
    frozen = sum(name.endswith("proj.weight") for name in load_file(tiny_model_dir / "model.safetensors")) + 1
    assert fast.kernels.frozen_copies == [frozen] and plain.kernels.frozen_copies == [0]
    for setting in ("auto", "none"):
        summary = json.loads((tmp_path / setting / "curves" / "metrics.json").read_text())
        used_amx = int(cpu_features.native_bf16_feature() == "amx_bf16")
        assert summary["bf16"] == 1 and summary["bf16_amx"] == used_amx and summary["nondeterministic_kernels"] == 0
    trained = json.loads((tmp_path / "auto" / "model" / "config.json").read_text())
    assert trained["dtype"] == "float32"  # fp32 master weights, saved as such


@pytest.mark.cpu_kernels
@pytest.mark.parametrize("kernel", TRAINING_KERNELS)
def test_each_training_kernel_takes_effect_with_the_switch_on_only(kernel: str, lora_runs: dict[str, Run]) -> None:
    """Fails when a kernel stops taking effect (a library change, the version gate, a caller that no longer asks
    for it), or when it runs with cpu_kernels none."""
    assert lora_runs["auto"].kernels.ran(kernel), f"{kernel} did not take effect with cpu_kernels auto"
    assert not lora_runs["none"].kernels.touched(kernel), f"{kernel} ran with cpu_kernels none"


# --- resuming from checkpoints ------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


class InterruptAfterSaving(TrainerCallback):
    """Stops training right after checkpoint `step` is written, as a killed job would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.global_step == self.step:
            raise Interrupt(f"interrupted after step {state.global_step}")


def test_checkpoints_of_another_run_are_not_resumed(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    (folder / "checkpoint-3").mkdir(parents=True)
    (folder / "checkpoint-3/trainer_state.json").write_text("{}")
    (folder / "checkpoint-5").mkdir()  # killed while saving: no trainer_state.json
    (folder / "run.json").write_text(json.dumps({"fingerprint": "a"}))
    assert prepare_checkpoints(folder, "a") == folder / "checkpoint-3"
    assert prepare_checkpoints(folder, "b") is None  # other params, pairs or base model: start again
    assert not (folder / "checkpoint-3").exists()


def test_fingerprint_ignores_only_the_resume_settings(default_params: dict[str, Any], tiny_model_dir: Path) -> None:
    params = train_params(default_params)
    pairs = make_pairs(4)
    fingerprint = run_fingerprint(params, pairs, tiny_model_dir)
    assert run_fingerprint(dataclasses.replace(params, resume=True, checkpoint_steps=7), pairs, tiny_model_dir) == (
        fingerprint
    )
    assert run_fingerprint(dataclasses.replace(params, beta=0.3), pairs, tiny_model_dir) != fingerprint
    assert run_fingerprint(params, make_pairs(5), tiny_model_dir) != fingerprint


def test_interrupted_stage_resumes_from_its_checkpoint(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    default_params: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Stage run 1 is killed after step 2 of 3; run 2 resumes there and ends with the uninterrupted run's weights."""
    pairs = make_pairs()  # 12 pairs, batch 4: 3 steps
    params = train_params(default_params, resume=True, checkpoint_steps=1)
    project = tmp_path / "project"
    shutil.copytree(tiny_model_dir, project / "models/base")
    (project / "data/pairs").mkdir(parents=True)
    (project / "data/pairs/pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    monkeypatch.chdir(project)
    stage = load_stage("train")
    base = Path("models/base")

    # The uninterrupted run, without checkpoints.
    reference = tmp_path / "reference"
    train_dpo(base, pairs, dataclasses.replace(params, resume=False), reference, tmp_path / "ref-curves",
              tmp_path / "scratch-1")  # fmt: skip

    # Run 1: the stage's checkpoint folder, interrupted after checkpoint-2 was written.
    checkpoints = Path(stage.CHECKPOINTS)
    assert prepare_checkpoints(checkpoints, run_fingerprint(params, pairs, base)) is None
    with pytest.raises(Interrupt):
        train_dpo(base, pairs, params, tmp_path / "lost", tmp_path / "lost-curves", tmp_path / "scratch-2",
                  checkpoint_dir=checkpoints, callbacks=[InterruptAfterSaving(2)])  # fmt: skip
    assert last_checkpoint(checkpoints) == checkpoints / "checkpoint-2"

    # Run 2: the stage itself, as `dvc repro` runs it again.
    capsys.readouterr()
    stage.main(params_from_dict({**default_params, "train": dataclasses.asdict(params)}))
    assert "train: resuming from checkpoints/train/checkpoint-2" in capsys.readouterr().err
    out = Path(stage.OUT_DIR)
    assert sorted(p.name for p in out.iterdir()) == PLAIN_MODEL_FILES  # no checkpoint in the output
    assert not checkpoints.exists(), "checkpoints are removed once the model is in place"
    assert digest(out)["model.safetensors"] == digest(reference)["model.safetensors"]
    # The curves cover all 3 steps, numbered as in the uninterrupted run.
    resumed_loss = (Path(stage.CURVES_DIR) / "plots/metrics/loss.tsv").read_text()
    assert resumed_loss == (tmp_path / "ref-curves/plots/metrics/loss.tsv").read_text()
    assert len(resumed_loss.splitlines()) == 1 + 3


def test_checkpoint_folder_is_ignored_by_git_and_dvc() -> None:
    assert "checkpoints/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "checkpoints/" in (ROOT / ".dvcignore").read_text().splitlines()


@pytest.mark.parametrize("one_row_per_pair", [False, True], ids=["two rows per pair", "one row per pair"])
def test_group_by_length_orders_batches_of_similar_length(
    tiny_model_dir: Path, default_params: dict[str, Any], one_row_per_pair: bool
) -> None:
    from transformers import AutoTokenizer

    from identity_dpo.training import pair_row_tokens, training_order

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = make_pairs(24)
    for i, pair in enumerate(pairs):  # lengths that vary, in no order, and differently for the two answers
        pair["chosen"][0]["content"] += " More words." * ((i * 7) % 11)
        pair["rejected"][0]["content"] += " Other words." * ((i * 5) % 9)
    params = train_params(default_params, group_by_length=True)
    order = training_order(pairs, tokenizer, params, one_row_per_pair=one_row_per_pair)
    assert sorted(p["id"] for p in order) == sorted(p["id"] for p in pairs)
    assert order == training_order(pairs, tokenizer, params, one_row_per_pair=one_row_per_pair)  # seeded
    lengths = [pair_row_tokens(tokenizer, p, one_row_per_pair) for p in order]
    batches = [sorted(lengths[i : i + 4]) for i in range(0, 24, 4)]
    # each batch is a run of the sorted lengths, and the batches are not simply sorted
    assert sorted(x for b in batches for x in b) == sorted(lengths)
    assert all(b[-1] <= c[0] or c[-1] <= b[0] for b in batches for c in batches if b is not c)
    assert [b[0] for b in batches] != sorted(b[0] for b in batches)
    unordered = train_params(default_params, group_by_length=False)
    assert training_order(pairs, tokenizer, unordered, one_row_per_pair=one_row_per_pair) == pairs


def test_pair_row_tokens_counts_the_row_a_batch_pads(tiny_model_dir: Path) -> None:
    """Two rows per pair: the longer (prompt + answer); one row: prompt + both answers, the prompt once."""
    from transformers import AutoTokenizer

    from identity_dpo.chat_format import render_prompt, render_tokens
    from identity_dpo.training import pair_row_tokens

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pair = make_pairs(1)[0]
    pair["rejected"][0]["content"] += " A longer rejected answer than the chosen one."
    prompt = len(render_prompt(tokenizer, pair["prompt"]))
    chosen = len(render_tokens(tokenizer, pair["prompt"] + pair["chosen"]))
    rejected = len(render_tokens(tokenizer, pair["prompt"] + pair["rejected"]))
    assert prompt < chosen < rejected
    assert pair_row_tokens(tokenizer, pair, one_row_per_pair=False) == rejected
    assert pair_row_tokens(tokenizer, pair, one_row_per_pair=True) == chosen + rejected - prompt


def test_adapter_config_lists_its_target_modules_in_a_fixed_order(tmp_path: Path) -> None:
    """PEFT writes target_modules in set (string-hash) order, which changes with PYTHONHASHSEED: sorted, two
    runs write the same models/adapter bytes (tests/test_reproducibility.py compares two whole runs)."""
    from identity_dpo.training import sort_target_modules

    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 16, "target_modules": ["v_proj", "q_proj", "up_proj"]}, indent=2))
    sort_target_modules(config)
    assert json.loads(config.read_text())["target_modules"] == ["q_proj", "up_proj", "v_proj"]
    config.write_text(json.dumps({"r": 16, "target_modules": "all-linear"}))  # a string (a regex) is left alone
    sort_target_modules(config)
    assert json.loads(config.read_text())["target_modules"] == "all-linear"
