"""DPO training with TRL, logged to DVCLive, saving final weights only (safetensors)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from identity_dpo.errors import ParamsError
from identity_dpo.generation import render_prompt
from identity_dpo.params import TrainParams

# Logged every step and plotted by dvc.yaml; the rest of TRL's log goes to the same folder.
CURVES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
# Wall-clock figures differ between identical runs; they go to the timing log, not the metrics.
_NOT_METRICS = ("runtime", "per_second", "total_flos", "num_tokens")

# TRL's config still sets the renamed `gradient_checkpointing` field; the warning is not ours to fix.
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.* is deprecated", category=FutureWarning)


def dpo_config(params: TrainParams, scratch_dir: Path, num_pairs: int) -> Any:
    """TRL's DPOConfig from our params, with CPU-safe precision (TRL defaults to bf16 + checkpointing)."""
    import torch
    from trl import DPOConfig

    on_gpu = torch.cuda.is_available()
    steps_per_epoch = math.ceil(num_pairs / (params.batch_size * params.grad_accum))
    return DPOConfig(
        output_dir=str(scratch_dir),
        beta=params.beta,
        learning_rate=params.learning_rate,
        num_train_epochs=params.epochs,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        max_length=params.max_length,
        loss_type=list(params.loss_type),
        loss_weights=list(params.loss_weights),
        precompute_ref_log_probs=params.precompute_ref_log_probs,
        precompute_ref_batch_size=max(params.batch_size, 8),
        warmup_steps=round(params.warmup_ratio * steps_per_epoch * params.epochs),
        seed=params.seed,
        data_seed=params.seed,
        # Without native bf16 a CPU emulates it (measured 24x slower); checkpointing only trades time for memory.
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=False,
        logging_steps=params.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        trust_remote_code=False,
    )


# The new name sits in the first words of the answer: a pair must keep at least this many of them.
MIN_COMPLETION_TOKENS = 8


def check_prompt_lengths(tokenizer: Any, pairs: list[dict[str, Any]], max_length: int) -> None:
    """Refuse a max_length that would cut the answers away (TRL silently drops such pairs)."""
    longest_id, longest = max(
        ((p.get("id", f"pair {i}"), len(render_prompt(tokenizer, p["prompt"]))) for i, p in enumerate(pairs)),
        key=lambda item: item[1],
    )
    if longest + MIN_COMPLETION_TOKENS > max_length:
        raise ParamsError(
            f"train.max_length: expected at least {longest + MIN_COMPLETION_TOKENS} (the longest prompt, "
            f"{longest_id}, has {longest} tokens, plus {MIN_COMPLETION_TOKENS} answer tokens), got {max_length}"
        )


def train_dpo(
    model_dir: Path,
    pairs: list[dict[str, Any]],
    params: TrainParams,
    out_dir: Path,
    curves_dir: Path,
    scratch_dir: Path,
) -> dict[str, float]:
    """Train on `pairs`, write the final model to `out_dir` and the curves to `curves_dir`.

    Returns the final training summary (loss and reward statistics of the last logged step).
    """
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOTrainer

    from identity_dpo.models import load_model

    set_seed(params.seed)
    model, tokenizer = load_model(model_dir)
    check_prompt_lengths(tokenizer, pairs, params.max_length)
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    logger = DVCLiveCurves(curves_dir)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # TRL reloads the reference from model_dir, a local folder, or precomputes it
        args=dpo_config(params, scratch_dir, len(pairs)),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[logger],
    )
    trainer.train()
    logger.close()
    # Saved by hand: Trainer.save_model also pickles its arguments (training_args.bin) next to the weights.
    final = trainer.accelerator.unwrap_model(trainer.model)
    final.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return logger.summary


class DVCLiveCurves(TrainerCallback):
    """Writes TRL's training log with DVCLive, without letting DVCLive touch dvc.yaml or git.

    DVCLive's own transformers integration keeps its default `dvcyaml="dvc.yaml"`, which rewrites
    the project's pipeline file during a run; here the stage's dvc.yaml entry declares the files.
    """

    def __init__(self, curves_dir: Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(curves_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        self.summary: dict[str, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:  # noqa: ANN001, ANN003
        if not state.is_world_process_zero or not logs:
            return
        logged = False
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not any(part in key for part in _NOT_METRICS):
                self.live.log_metric(key, float(value))
                if key in CURVES:
                    self.summary[key] = float(value)
                logged = True
        if logged:
            self.live.next_step()

    def close(self) -> None:
        self.live.end()
