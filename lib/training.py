"""Training wrappers around TRL, with settings that are right for the device.

On CPU, TRL's defaults (``bf16=True``, ``gradient_checkpointing=True``, i.e. activation
checkpointing) make training about 3x slower on CPUs without AMX/avx512_bf16 (docs/stack_notes.md).
Activation checkpointing is a params key of each training section (``activation_checkpointing``):
off by default (it only saves memory, which a CPU run does not lack), on for the real-scale
16K-32K sequences. bf16 autocast follows params ``model.dtype`` (:func:`lib.model.train_dtype`): on for CUDA,
off on CPU unless asked for. Every stage that fine-tunes on text (base pretraining, mid-training,
SFT; DPO and GRPO build on the same kwargs) goes through :func:`sft_config` or :func:`trainer_kwargs`,
so these choices live in one place.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import time
from pathlib import Path

import torch
import datasets
from datasets import Dataset
from transformers import TrainerCallback
from trl import SFTConfig

from lib import progress
from lib.packing import packed_trainer
from lib.sft_trainer import RecipeSFTTrainer
from lib.params import Train


class BatchSizeError(ValueError):
    """A global batch that the processes and the per-device batch cannot make exactly."""


def world_size() -> int:
    """Processes training together: ``WORLD_SIZE`` as ``accelerate launch``/torchrun set it, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def grad_accum_steps(cfg: Train, processes: int | None = None) -> int:
    """Micro-batches per optimizer step: ``cfg.grad_accum``, or derived from ``cfg.global_batch_size``
    (global = batch_size x grad_accum x processes) when that is set."""
    processes = processes or world_size()
    if cfg.global_batch_size is None:
        return cfg.grad_accum
    per_step = cfg.batch_size * processes
    if cfg.global_batch_size % per_step:
        raise BatchSizeError(
            f"global_batch_size={cfg.global_batch_size} is not a multiple of batch_size={cfg.batch_size} x "
            f"{processes} process(es) = {per_step}; change batch_size or global_batch_size (or the processes)")
    steps = cfg.global_batch_size // per_step
    if cfg.grad_accum not in (1, steps):
        raise BatchSizeError(f"grad_accum={cfg.grad_accum} contradicts global_batch_size={cfg.global_batch_size} "
                             f"(batch_size {cfg.batch_size} x {processes} process(es) needs {steps}); leave grad_accum "
                             "at 1 when global_batch_size is set")
    return steps


def trainer_kwargs(cfg: Train, out_dir: str | Path, *, device: torch.device, dtype: torch.dtype, seed: int) -> dict:
    """Arguments every TRL trainer config of the recipe shares (SFT, DPO), tuned for the device."""
    on_cuda = device.type == "cuda"
    return dict(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=grad_accum_steps(cfg),
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps (transformers 5)
        max_length=cfg.max_length,
        bf16=dtype == torch.bfloat16,  # autocast (lib.model.train_dtype: CPU only when params ask)
        activation_checkpointing=cfg.activation_checkpointing,  # params; TRL's default (True) costs CPU runs ~3x
        torch_compile=cfg.compile,
        gradient_checkpointing=None,  # TRL defaults this deprecated alias to True; None defers to the line above
        use_cpu=not on_cuda,
        # several CPU processes started by a launcher (tests, laptops) talk over gloo; naming a
        # backend in a single process would make accelerate look for a process group
        ddp_backend="gloo" if not on_cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        seed=seed,
        data_seed=seed,
        logging_steps=1 if 0 < cfg.max_steps <= 50 else 5,  # short runs still get a loss curve
        # checkpoints (optimizer and RNG state included) let a killed run resume where it stopped
        save_strategy="steps" if cfg.checkpoint_every else "no",
        save_steps=cfg.checkpoint_every or 500,
        save_total_limit=2,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )


def match_compile_state(args) -> None:
    """Make the next trainer compile (or not) as ``args.torch_compile`` says.

    accelerate keeps one ``AcceleratorState`` per process, and its torch.compile setting is the one
    the process's first trainer asked for: a later trainer asking otherwise would silently train as
    the first did (a notebook that trains twice, a test). When the wish differs, the state is reset;
    the process group (``PartialState``) is kept. Call it before constructing a Trainer."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DynamoBackend

    state = AcceleratorState._shared_state
    if not state:
        return
    plugin = state.get("dynamo_plugin")
    compiling = plugin is not None and plugin.backend != DynamoBackend.NO
    if compiling != bool(getattr(args, "torch_compile", False)):
        AcceleratorState._reset_state()


def sft_config(cfg: Train, out_dir: str | Path, *, device: torch.device, dtype: torch.dtype, seed: int,
               **overrides) -> SFTConfig:
    """An SFTConfig from a params training section, tuned for the device."""
    kwargs = trainer_kwargs(cfg, out_dir, device=device, dtype=dtype, seed=seed)
    kwargs.update(packing=False)
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


# Test hook: "step:N" SIGKILLs the training process when it ends optimizer step N (kill-resume tests).
KILL_ENV = "LIB_TRAIN_TEST_KILL"
# errno values that mean "this output cannot be written" rather than a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class CheckpointWriteError(OSError):
    """Training stopped because a checkpoint (or other output) could not be written."""


def _complete(ckpt: Path) -> bool:
    """A checkpoint folder the Trainer finished writing: ``trainer_state.json`` is its last file."""
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def last_checkpoint(output_dir: str | Path, remove_incomplete: bool = True) -> str | None:
    """The newest complete ``checkpoint-N`` folder a previous (interrupted) run left, if any.

    A checkpoint whose writing was cut short (killed mid-save, full disk) lacks its
    ``trainer_state.json`` (the Trainer writes it last): it is removed, with a message, and the
    one before it is used, so a resume never loads half a checkpoint."""
    import shutil

    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted((int(m.group(1)), d) for d in out.iterdir()
                   if d.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", d.name)))
    for _, d in reversed(found):
        if _complete(d):
            return str(d)
        if remove_incomplete:
            print(f"{d}: incomplete checkpoint (no trainer_state.json; its save was interrupted), removed")
            shutil.rmtree(d, ignore_errors=True)
    return None


class _KillAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_hook_callbacks() -> list:
    """The :data:`KILL_ENV` hook as trainer callbacks (none when the variable is unset)."""
    spec = os.environ.get(KILL_ENV, "")
    return [_KillAt(int(spec.split(":")[1]))] if spec.startswith("step:") else []


def train_guarded(trainer, ckpt: str | None):
    """``trainer.train(resume_from_checkpoint=ckpt)``; a write that fails for lack of space or
    permission becomes :class:`CheckpointWriteError` naming the path and the checkpoint a rerun
    resumes from (earlier checkpoints are untouched: the Trainer rotates them only after a save)."""
    for cb in kill_hook_callbacks():
        trainer.add_callback(cb)
    try:
        return trainer.train(resume_from_checkpoint=ckpt)
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        out = trainer.args.output_dir
        where = e.filename or out
        raise CheckpointWriteError(e.errno, f"training stopped: could not write {where} ({e.strerror or e}); "
                                   f"free space or fix permissions under {out} and rerun: it resumes from "
                                   f"{last_checkpoint(out, remove_incomplete=False) or 'the start (no complete checkpoint yet)'}") from e


def run_trainer(trainer, resume: bool = True) -> dict:
    """Train, resuming from the newest checkpoint in ``output_dir`` when there is one; statistics.

    Returns the loss/learning-rate curve, real (non-pad) tokens seen in total, tokens/s of this
    run (tokens seen before a resume are not counted in the rate) and the step resumed from.
    """
    ckpt = last_checkpoint(trainer.args.output_dir) if resume else None
    tokens_before = 0
    if ckpt:
        state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
        tokens_before = int(state.get("num_input_tokens_seen", 0))
        print(f"resuming from {ckpt} (step {state.get('global_step')})")
    trainer.add_callback(progress.callback())
    t0 = time.time()
    result = train_guarded(trainer, ckpt)
    wall = time.time() - t0
    curve = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")}
             for h in trainer.state.log_history if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "steps": trainer.state.global_step,
        "resumed_from_step": int(Path(ckpt).name.split("-")[-1]) if ckpt else None,
        "train_loss": float(result.training_loss),
        "final_loss": curve[-1]["loss"] if curve else float(result.training_loss),
        "tokens_seen": tokens,
        "tokens_per_s": (tokens - tokens_before) / wall if wall > 0 else None,
        "train_seconds": wall,
        "curve": curve,
    }


def fit_sft(model, tokenizer, rows: list[dict], cfg: SFTConfig, resume: bool = True, callbacks=None) -> dict:
    """Train on prompt-completion rows, padded (loss on the completion only); see :func:`run_trainer`.

    No packing: each example ends with its own EOS in the loss, so the model learns where to
    stop (the paper, stage 2).
    """
    if not rows:
        raise ValueError("no training rows: the stage's data subset is empty; stage 02_tag_data's metrics.json "
                         "(subset_stats -> filters) shows which filter removed every row")
    datasets.disable_progress_bars()  # the trainer's own progress bar is the one worth watching
    match_compile_state(cfg)
    trainer = RecipeSFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=callbacks)
    return run_trainer(trainer, resume)


def fit_packed(model, tokenizer, rows: list[dict], cfg: SFTConfig, resume: bool = True, callbacks=None, *,
               mask=None, keep_eos: bool = True) -> dict:
    """Train on prompt-completion rows, packed (:func:`lib.packing.packed_trainer`); the statistics
    of :func:`fit_sft`, plus ``packing`` (:class:`lib.packing.PackStats`, truncated examples counted).

    ``tokens_seen`` counts real (non-pad) tokens. Packing is deterministic, so a resumed run
    sees the same rows.
    """
    match_compile_state(cfg)
    trainer, stats = packed_trainer(model, tokenizer, rows, cfg, callbacks, mask=mask, keep_eos=keep_eos)
    return {**run_trainer(trainer, resume), "packing": stats.as_dict()}


def fit(model, tokenizer, rows: list[dict], cfg: SFTConfig, packing: bool = False, resume: bool = True,
        keep_eos: bool = True) -> dict:
    """Padded (:func:`fit_sft`) or packed (:func:`fit_packed`) training, same statistics.

    ``keep_eos=False`` (packed only) drops each example's closing EOS: the ``mid_train.keep_eos`` ablation.
    """
    if packing:
        return fit_packed(model, tokenizer, rows, cfg, keep_eos=keep_eos)
    if not keep_eos:
        raise ValueError("keep_eos=False is an ablation of packed training; padded training always keeps the EOS")
    return fit_sft(model, tokenizer, rows, cfg, resume=resume)
