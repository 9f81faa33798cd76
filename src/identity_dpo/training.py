"""DPO training with TRL, logged to DVCLive, saving final weights only (safetensors).

By default one process trains (the stage's own). `train.launch` runs the same training in several
processes under `accelerate launch` (DDP, FSDP or DeepSpeed: launch.py), where only rank 0 writes
outputs. `train.lora` trains LoRA adapters and saves them merged into a plain model folder.
`train.resume` saves checkpoints outside the DVC outputs and continues from the last one after an
interruption (checkpoints.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from identity_dpo.chat_format import render_prompt, render_tokens
from identity_dpo.checkpoints import last_checkpoint
from identity_dpo.cpu_features import native_bf16_feature
from identity_dpo.cpu_kernels import active
from identity_dpo.cpu_kernels.answer_head import answer_only_lm_head, shares_prompts
from identity_dpo.cpu_kernels.frozen_cast import casts_reused
from identity_dpo.cpu_kernels.fused_lora import use_fused_lora
from identity_dpo.cpu_kernels.fused_norm import use_fused_rms_norm
from identity_dpo.cpu_kernels.malloc import keep_freed_memory
from identity_dpo.cpu_kernels.sdpa_backward import attention_backward_in_fp32
from identity_dpo.cpu_kernels.sdpa_gqa import grouped_query_attention_in_sdpa
from identity_dpo.errors import ParamsError, TrainingError
from identity_dpo.launch import native_precision, resolve_precision, trains_on_cpu
from identity_dpo.params import CpuKernels, LoraParams, TrainParams
from identity_dpo.progress import log_line, progress_bar, write_line

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

# Logged every step and plotted by dvc.yaml; the rest of TRL's log goes to the same folder.
CURVES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")
# Wall-clock figures differ between identical runs; they go to the timing log, not the metrics.
_NOT_METRICS = ("runtime", "per_second", "total_flos", "num_tokens")


def dpo_config(params: TrainParams, scratch_dir: Path, num_pairs: int, checkpoint_dir: Path | None = None) -> Any:
    """TRL's DPOConfig from our params, with CPU-safe precision (TRL defaults to bf16 + checkpointing)."""
    from trl import DPOConfig

    precision = resolve_precision(params)
    pairs_per_step = params.batch_size * params.grad_accum * params.launch.processes
    steps_per_epoch = math.ceil(num_pairs / pairs_per_step)
    if checkpoint_dir is None:
        saving: dict[str, Any] = {"output_dir": str(scratch_dir), "save_strategy": "no"}
    else:  # full checkpoints (weights, optimizer, scheduler, RNG), the last two kept
        saving = {
            "output_dir": str(checkpoint_dir),
            "save_strategy": "steps",
            "save_steps": params.checkpoint_steps,
            "save_total_limit": 2,
        }
    return DPOConfig(
        **saving,
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
        # group_by_length: training_order has already put the pairs in their (seeded) order
        train_sampling_strategy="sequential" if params.group_by_length else "random",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # transformers refuses bf16 without a GPU unless told that training runs on the CPU (autocast there)
        use_cpu=precision == "bf16" and trains_on_cpu(),
        # transformers' own names: TRL's config still defaults the deprecated alias `gradient_checkpointing` to True,
        # which transformers uses (with a FutureWarning) only while activation_checkpointing is unset.
        activation_checkpointing=params.activation_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        ddp_find_unused_parameters=False,  # every parameter gets a gradient; True costs an extra graph walk
        logging_steps=params.logging_steps,
        report_to="none",
        disable_tqdm=True,  # transformers' PrinterCallback, which train_dpo swaps for TrainingProgress
        dataloader_num_workers=0,
        # Pinned memory only speeds up copies to an accelerator; without one torch warns and ignores it.
        dataloader_pin_memory=not trains_on_cpu(),
        trust_remote_code=False,
    )


def lora_config(params: LoraParams) -> Any:
    """PEFT's LoraConfig, or None for full fine-tuning."""
    if not params.enabled:
        return None
    from peft import LoraConfig

    targets = params.target_modules
    return LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        target_modules="all-linear" if targets == ["all-linear"] else list(targets),
        lora_dropout=0.0,  # TRL turns dropout off in the model anyway (disable_dropout)
        task_type="CAUSAL_LM",
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


def check_training_inputs(params: TrainParams, model_dir: Path, pairs: list[dict[str, Any]]) -> None:
    """The train params that depend on the data, the hardware or the architecture, checked before any weights load.

    Prompt lengths need only the tokenizer; LoRA target modules are looked up in the model's architecture
    built without weights (on the meta device).
    """
    check_prompt_lengths(_load_tokenizer(model_dir), pairs, params.max_length)
    _check_precision(params)
    if params.lora.enabled:
        _check_lora_targets(params.lora, model_dir)


def train_dpo(
    model_dir: Path,
    pairs: list[dict[str, Any]],
    params: TrainParams,
    out_dir: Path,
    curves_dir: Path,
    scratch_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    adapter_dir: Path | None = None,
    cpu_kernels: CpuKernels | None = None,
) -> dict[str, float]:
    """Train on `pairs`, write the final model to `out_dir` and the curves to `curves_dir`.

    With LoRA and `adapter_dir`, the trained adapter alone (PEFT's folder: adapter_config.json and
    adapter_model.safetensors) is saved there too, before it is merged into `out_dir`'s weights.

    Call check_training_inputs first. Under `accelerate launch` every process calls this; only the main one
    writes `out_dir` and `curves_dir`. With `checkpoint_dir`, checkpoints go there and training continues from
    the last complete one. Returns the final training summary (loss and rewards of the last logged step).
    `cpu_kernels` (None: the process's switch) picks the kernels of identity_dpo.cpu_kernels that train on a CPU;
    without them, TRL, PEFT and transformers train as they are.
    """
    from transformers import set_seed
    from trl import DPOTrainer

    from identity_dpo.models import load_model

    set_seed(params.seed)
    if active("malloc", "cpu", cpu_kernels):  # the host's allocator, whatever device trains
        keep_freed_memory()
    model, tokenizer = load_model(model_dir)
    args = dpo_config(params, scratch_dir, len(pairs), checkpoint_dir)
    start = weights_checksum(model) if args.world_size > 1 else None
    logger = DVCLiveCurves(curves_dir)
    on_cpu = args.device.type == "cpu"
    cpu_bf16 = native_bf16_feature() if on_cpu and args.bf16 else None  # the instructions bf16 runs on, if on a CPU
    if cpu_bf16 is not None and args.process_index == 0:
        print(f"train: bf16 mixed precision on the CPU ({cpu_bf16}), fp32 master weights", file=sys.stderr)

    def kernel(name: str) -> bool:
        return active(name, args.device, cpu_kernels)

    answer_head, share_prompts = kernel("answer_head"), kernel("shared_prompt")
    order = training_order(
        pairs, tokenizer, params, one_row_per_pair=answer_head and share_prompts and shares_prompts(model.config)
    )
    sdpa_gqa = grouped_query_attention_in_sdpa() if kernel("sdpa_gqa") else contextlib.nullcontext()
    # bf16 attention's backward in fp32 (cpu_kernels/sdpa_backward.py): only bf16 training has a bf16 backward
    bf16_attention = cpu_bf16 is not None and kernel("sdpa_backward")
    sdpa_backward = attention_backward_in_fp32() if bf16_attention else contextlib.nullcontext()
    head = answer_only_lm_head(share_prompts) if answer_head else contextlib.nullcontext()
    with _library_deprecations_filtered(), sdpa_gqa, sdpa_backward:  # the reference's forward in DPOTrainer() too
        with head:  # see cpu_kernels/answer_head.py
            trainer = DPOTrainer(
                model=model,
                ref_model=None,  # TRL reloads the reference from model_dir, a local folder, or precomputes it
                args=args,
                train_dataset=_dataset(order, args, scratch_dir),
                processing_class=tokenizer,
                callbacks=[logger, TrainingProgress(), *callbacks],
                peft_config=lora_config(params.lora),
            )
            trainer.remove_callback(PrinterCallback)  # its raw log dicts: TrainingProgress prints one line instead
        if kernel("fused_norm"):
            use_fused_rms_norm(trainer.model)
        if params.lora.enabled and kernel("fused_lora"):
            use_fused_lora(trainer.model)
        resume_from = last_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        if resume_from is not None and trainer.accelerator.is_main_process:
            print(f"train: resuming from {resume_from}", file=sys.stderr)
        with casts_reused():  # the kernels' frozen weights cast once, not at every step (cpu_kernels/frozen_cast.py)
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    # 1 when training ran on a GPU, whose kernels may differ from run to run (docs/reproducibility.md).
    logger.live.summary["nondeterministic_kernels"] = int(not on_cpu)
    # Numbers, so that `dvc metrics diff` compares runs: whether bf16 mixed precision trained (1) or not, and whether
    # it ran on a CPU's AMX tiles (1) rather than AVX512-BF16 or a GPU. Only what the run used: an fp32 run writes the
    # same metrics on every host. The feature's name is on the stage's output, a string being no metric.
    logger.live.summary["bf16"] = int(args.bf16)
    logger.live.summary["bf16_amx"] = int(cpu_bf16 == "amx_bf16")
    logger.close()
    if start is not None:
        print(rank_report(trainer, start), file=sys.stderr, flush=True)
    check_finite_weights(trainer.model)  # before anything is written: a NaN model never moves into place
    save_final_model(trainer, tokenizer, out_dir, merge_lora=params.lora.enabled, adapter_dir=adapter_dir)
    return logger.summary


@contextmanager
def _library_deprecations_filtered() -> Iterator[None]:
    """PEFT (PeftModel's constructor) and TRL (disable_gradient_checkpointing, around the reference's forward) read
    transformers' deprecated `is_gradient_checkpointing` property: nothing we pass changes that, so while they train,
    that one FutureWarning is filtered. Our own arguments use the new names (dpo_config)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def training_order(
    pairs: list[dict[str, Any]], tokenizer: Any, params: TrainParams, *, one_row_per_pair: bool = False
) -> list[dict[str, Any]]:
    """The pairs in the order they are trained in; unchanged unless `train.group_by_length`.

    A batch is padded to its longest row, and a third of the default prompts are multi-turn (2-3x longer),
    so random batches nearly always hold one, and most of a batch's tokens are padding.
    Grouped, each batch holds pairs of similar length (sorted, cut into batches), and the batches come in a
    random order drawn from `train.seed`, so training does not run from short to long. A last, smaller batch is
    shuffled in with the others, and the trainer reads the order `step` pairs at a time, so the batches after it
    straddle two length groups (more padding). Kept: with it last, the batches hold one kind of pair (identity or
    rehearsal) more often, and those models drifted more (docs/experiments.md, "Batch order"). The length is that of
    the row the pair becomes: one row per pair (`one_row_per_pair`, see cpu_kernels/shared_prompt.py) or two,
    the longer of which is padded to (docs/speed-history.md has the padding each way).
    """
    if not params.group_by_length:
        return pairs
    lengths = [pair_row_tokens(tokenizer, pair, one_row_per_pair) for pair in pairs]
    by_length = sorted(range(len(pairs)), key=lambda i: (lengths[i], i))
    step = params.batch_size * params.launch.processes  # the pairs one micro-step reads, all processes together
    batches = [by_length[i : i + step] for i in range(0, len(by_length), step)]
    random.Random(params.seed).shuffle(batches)
    return [pairs[i] for batch in batches for i in batch]


def pair_row_tokens(tokenizer: Any, pair: dict[str, Any], one_row_per_pair: bool) -> int:
    """Tokens of the row a batch pads for this pair: prompt + chosen + rejected answer when the prompt is shared
    (one row per pair), else the longer of its two rows (prompt + answer)."""
    rows = [len(render_tokens(tokenizer, pair["prompt"] + pair[side])) for side in ("chosen", "rejected")]
    if one_row_per_pair:
        return sum(rows) - len(render_prompt(tokenizer, pair["prompt"]))
    return max(rows)


def _dataset(pairs: list[dict[str, Any]], args: Any, scratch_dir: Path) -> Any:
    from datasets import Dataset, load_from_disk

    rows = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    if args.world_size == 1:
        return Dataset.from_list(rows)
    # Several processes: TRL caches the precomputed reference log-probs next to the data set's files and the other
    # ranks read rank 0's cache, so the data set lives in the scratch folder they share (in memory, each process
    # would look in a temporary folder of its own). Rank 0 writes it; the others wait, then read it.
    folder = scratch_dir / "pairs-dataset"
    with args.main_process_first(local=False, desc="writing the pairs data set"):
        if not folder.exists():
            Dataset.from_list(rows).save_to_disk(str(folder))
        return load_from_disk(str(folder))


def save_final_model(
    trainer: Any, tokenizer: Any, out_dir: Path, *, merge_lora: bool, adapter_dir: Path | None = None
) -> None:
    """The final weights as a plain safetensors folder, written by the main process only.

    Saved by hand: Trainer.save_model also pickles its arguments (training_args.bin) next to the weights.
    FSDP and ZeRO-3 shard the weights, so every process takes part in gathering them first; LoRA adapters
    are merged into the weights, so the folder loads without PEFT.
    """
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    state_dict = accelerator.get_state_dict(trainer.model) if sharded else None  # collective: every rank calls it
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(trainer.model)
        if merge_lora:
            if adapter_dir is not None:
                final.save_pretrained(adapter_dir, state_dict=state_dict, safe_serialization=True)
                (adapter_dir / "README.md").unlink(missing_ok=True)  # PEFT's blank card template
                sort_target_modules(adapter_dir / "adapter_config.json")
            final = final.merge_and_unload()
        final.save_pretrained(out_dir, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
    accelerator.wait_for_everyone()  # rank 0 moves the outputs into place only after every rank is done


def sort_target_modules(config_file: Path) -> None:
    """PEFT writes the resolved target_modules from a set, in string-hash order, which PYTHONHASHSEED changes from
    run to run: sorted, two runs write the same adapter_config.json (same bytes, same hash in dvc.lock)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")  # PEFT's own format


def weights_checksum(model: Any) -> str:
    """Sum of all weights: equal on every rank after DDP steps (each rank saw other pairs), different from the start."""
    try:
        return f"{sum(float(p.detach().double().sum()) for p in model.parameters()):.12e}"
    except (RuntimeError, TypeError):  # sharded parameters (DTensor) have no whole local value
        return "n/a (sharded)"


def rank_report(trainer: Any, start: str) -> str:
    """One line per process: its rank, the steps it took, and its weights' checksum before and after."""
    accelerator = trainer.accelerator
    return (
        f"train: rank {accelerator.process_index} of {accelerator.num_processes} "
        f"({accelerator.distributed_type.value}): {trainer.state.global_step} optimizer steps, weights checksum "
        f"{start} -> {weights_checksum(accelerator.unwrap_model(trainer.model))}"
    )


# --- checks that need the tokenizer, the architecture or the hardware ---------------------------------------


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)


def _check_precision(params: TrainParams) -> None:
    import torch

    native_precision(params.precision, "train.precision")  # refuses bf16 where it would be emulated
    if params.precision == "fp16" and not torch.cuda.is_available():
        raise ParamsError("train.precision: fp16 needs a CUDA GPU; use auto or fp32")


def _check_lora_targets(params: LoraParams, model_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if importlib.util.find_spec("peft") is None:
        raise ParamsError("train.lora.enabled: LoRA needs the peft package (pip install -r requirements.txt)")
    if params.target_modules == ["all-linear"]:
        return
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    with torch.device("meta"):  # the architecture only: no memory, no weights read
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    names = [name for name, _ in skeleton.named_modules()]
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)})
    for i, target in enumerate(params.target_modules):
        if not any(name == target or name.endswith(f".{target}") for name in names):
            raise ParamsError(
                f"train.lora.target_modules[{i}]: no module {target!r} in {type(skeleton).__name__}; "
                f"its linear layers are {', '.join(linear)} (or use [all-linear])"
            )


class TrainingProgress(ProgressCallback):
    """transformers' training bar (in optimizer steps, from the resumed step on), with one short line per log step
    (progress.log_line) instead of the log's dict."""

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            self.training_bar = progress_bar(state.max_steps, "Training", unit="step", initial=state.global_step)
        self.current_step = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        line = log_line(state.global_step, state.max_steps, logs or {}) if state.is_world_process_zero else None
        if line is not None:
            write_line(line)


class DVCLiveCurves(TrainerCallback):
    """Writes TRL's training log with DVCLive, without letting DVCLive touch dvc.yaml or git.

    DVCLive's own transformers integration keeps its default `dvcyaml="dvc.yaml"`, which rewrites
    the project's pipeline file during a run; here the stage's dvc.yaml entry declares the files.
    """

    def __init__(self, curves_dir: Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(curves_dir), dvcyaml=None, save_dvc_exp=False, report=None)
        self.summary: dict[str, float] = {}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Resumed from a checkpoint: its log history holds the steps before the interruption. Replaying them
        # makes the curves cover the whole run, numbered as if it had not been interrupted.
        for logs in state.log_history:
            self.on_log(args, state, control, logs={k: v for k, v in logs.items() if k != "step"})

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
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


def check_finite_weights(model: Any) -> None:
    """Refuse to save a model with NaN or infinite weights: it loads, answers garbage, and the stage would exit 0.

    Called before the weights are written, inside the stage's atomic outputs, so nothing moves into place.
    """
    import torch

    # Parameters, not state_dict(): under FSDP state_dict() is a collective; each rank checks its own shard.
    tensors = [(name, t.to_local() if hasattr(t, "to_local") else t) for name, t in model.named_parameters()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t.detach()).all())]
    if bad:
        raise TrainingError(
            f"training produced non-finite weights ({len(bad)} of {len(tensors)} tensors hold NaN or inf, e.g. "
            f"{bad[0]}); nothing was saved, the previous model stays in place. Lower train.learning_rate or "
            "train.beta, or check the pairs"
        )
