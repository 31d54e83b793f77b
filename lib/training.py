"""Training wrappers around TRL, with settings that are right for the device.

On CPU, TRL's defaults (``bf16=True``, ``gradient_checkpointing=True``, i.e. activation checkpointing) make training about
3x slower on CPUs without AMX/avx512_bf16 (STACK_NOTES.md): both are turned off there; on CUDA
bf16 is on. Every stage that fine-tunes on text (base pretraining now; mid-training and SFT
build on the same config) goes through :func:`sft_config` so these choices live in one place.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import datasets
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from lib.params import Train


def sft_config(cfg: Train, out_dir: str | Path, *, device: torch.device, dtype: torch.dtype, seed: int,
               **overrides) -> SFTConfig:
    """An SFTConfig from a params training section, tuned for the device."""
    on_cuda = device.type == "cuda"
    kwargs = dict(
        output_dir=str(out_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of total steps (transformers 5)
        max_length=cfg.max_length,
        bf16=on_cuda and dtype == torch.bfloat16,
        activation_checkpointing=False,
        gradient_checkpointing=None,  # TRL defaults this deprecated alias to True; None defers to the line above
        use_cpu=not on_cuda,
        packing=False,
        seed=seed,
        data_seed=seed,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def fit_sft(model, tokenizer, rows: list[dict], cfg: SFTConfig) -> dict:
    """Train on prompt-completion rows (loss on the completion only); return the run's statistics.

    Returns the loss/learning-rate curve, real (non-pad) tokens seen and tokens/s.
    """
    if not rows:
        raise ValueError("no training rows: the stage's data subset is empty")
    datasets.disable_progress_bars()  # the trainer's own progress bar is the one worth watching
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    t0 = time.time()
    result = trainer.train()
    wall = time.time() - t0
    curve = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")}
             for h in trainer.state.log_history if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    return {
        "steps": trainer.state.global_step,
        "train_loss": float(result.training_loss),
        "final_loss": curve[-1]["loss"] if curve else float(result.training_loss),
        "tokens_seen": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else None,
        "train_seconds": wall,
        "curve": curve,
    }
