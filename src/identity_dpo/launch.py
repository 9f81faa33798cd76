"""How training is started: in the stage's own process (`train.launch.profile: none`), or the stage script again
under `accelerate launch` in `train.launch.processes` processes (DDP, FSDP or DeepSpeed, one accelerate config
per profile in configs/accelerate/), and at which precision.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from identity_dpo.cpu_features import native_bf16_feature
from identity_dpo.errors import ParamsError, PipelineError
from identity_dpo.params import TrainParams

# Set in the environment of the processes `accelerate launch` starts; its value is the scratch folder they share.
WORKER_ENV = "IDENTITY_DPO_TRAIN_WORKER"
_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # our precision -> accelerate's flag


def resolve_precision(params: TrainParams) -> str:
    """fp32, bf16 or fp16; `auto` is bf16 where it trains natively (a CUDA GPU with bf16, or a CPU with AMX-BF16 or
    AVX512-BF16), else fp32."""
    # On a CPU with native bf16 the identity and general-ability results of three seeds stay within the fp32 runs'
    # spread (docs/general-ability.md) and training runs faster (BENCHMARKS.md). Elsewhere (AVX2-only CPUs, other
    # accelerators) bf16 would be emulated or refused, so auto keeps fp32 and its results unchanged there.
    return native_precision(params.precision, "train.precision")


def native_precision(precision: str, key: str, *, fallback: str = "fp32") -> str:
    """`precision` with `auto` resolved: bf16 where bf16_refusal() has nothing against it, else `fallback`. An explicit
    bf16 that would be emulated or refused here is a ParamsError (`key` names the param); the rest pass unchanged."""
    refusal = bf16_refusal()
    if precision == "bf16" and refusal is not None:
        raise ParamsError(f"{key}: {refusal}; use auto or fp32")
    if precision == "auto":
        return "bf16" if refusal is None else fallback
    return precision


def cuda_bf16() -> bool:
    """Whether training runs on a CUDA GPU that computes in bf16."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def trains_on_cpu() -> bool:
    """Whether transformers' Trainer puts training on the CPU: no accelerator (CUDA, XPU, MPS, ...) is present."""
    import torch

    return not torch.accelerator.is_available()


def bf16_refusal() -> str | None:
    """Why train.precision bf16 cannot train here (one line for the error), or None when it can: on a CUDA GPU with
    bf16, or, without an accelerator, on a CPU with native bf16 matrix instructions (cpu_features.py)."""
    if cuda_bf16():
        return None
    if not trains_on_cpu():
        return "bf16 needs a CUDA GPU with bf16 support, which this machine's accelerator is not"
    if native_bf16_feature() is None:
        return (
            "bf16 on a CPU needs native bf16 matrix instructions (AMX-BF16 or AVX512-BF16), which this CPU lacks "
            "(it would emulate bf16, slower than fp32)"
        )
    return None


def check_launch(params: TrainParams, configs_dir: Path) -> None:
    """A launch profile's config file, package and hardware exist (before anything is launched)."""
    profile, processes = params.launch.profile, params.launch.processes
    if profile == "none":
        return
    config = launch_config(params, configs_dir)
    if profile.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ParamsError(
            f"train.launch.profile: {profile} needs the deepspeed package, which is not installed "
            "(pip install deepspeed, on a machine with CUDA)"
        )
    if not config.get("use_cpu", False):
        import torch

        gpus = torch.cuda.device_count()
        if gpus < processes:
            raise ParamsError(
                f"train.launch.processes: {processes} processes of profile {profile} need {processes} CUDA GPUs, "
                f"found {gpus}" + ("; on a CPU use profile cpu_ddp" if gpus == 0 else "")
            )


def launch_config(params: TrainParams, configs_dir: Path) -> dict[str, Any]:
    path = configs_dir / f"{params.launch.profile}.yaml"
    if not path.is_file():
        raise ParamsError(f"train.launch.profile: {path} not found (one accelerate config file per profile)")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def launch_command(params: TrainParams, script: Path, configs_dir: Path) -> list[str]:
    """`accelerate launch` of `script` with the profile's config; processes and precision come from params."""
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(configs_dir / f"{params.launch.profile}.yaml"),
        "--num_processes", str(params.launch.processes),
        "--mixed_precision", _MIXED_PRECISION[resolve_precision(params)],
        str(script),
    ]  # fmt: skip


def run_launched(params: TrainParams, script: Path, configs_dir: Path, scratch_dir: Path) -> None:
    """Run `script` in `train.launch.processes` processes; they find WORKER_ENV set to the shared scratch folder."""
    env = {**os.environ, WORKER_ENV: str(scratch_dir)}
    if launch_config(params, configs_dir).get("use_cpu", False):
        env["ACCELERATE_USE_CPU"] = "true"  # accelerate's torchrun path does not pass use_cpu on by itself
    result = subprocess.run(launch_command(params, script, configs_dir), env=env, check=False)
    if result.returncode != 0:
        raise PipelineError(
            f"training in {params.launch.processes} processes ({params.launch.profile}) failed with exit code "
            f"{result.returncode}; the processes' own messages are above"
        )
