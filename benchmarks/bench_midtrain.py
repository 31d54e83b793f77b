"""Mid-training as the stage runs it, against a bare loop on the very same batches.

    .venv/bin/python benchmarks/bench_midtrain.py [--run outputs/tiny] [--params params/tiny.yaml] [--steps 60] [--rounds 3]

Reads a finished run's mid-training rows (``02_tag_data/midtrain.parquet``) and base model
(``00_base_model/model``), and the ``mid_train`` section and thread count of its params, so it measures the
stage's real shapes (packed rows of ``max_length``, ``batch_size`` rows per step, block-diagonal
mask, the run's threads), not a stand-in. Arms, each a fresh copy of the base model for
``--steps`` optimizer steps:

- ``bare``: the baseline. The first ``--steps`` batches the stage's trainer would train on (its
  collator and seeded sampler, collated before the clock starts), then a bare loop: forward,
  ``loss.backward()``, AdamW step, nothing else.
- ``stage``: ``lib.training.fit(..., packing=True)`` with the run's ``mid_train`` section and
  ``max_steps=--steps``, checkpoints off: the trainer the stage builds, configured as it is,
  timed as :func:`lib.training.run_trainer` times it (``trainer.train()``).
  Its loss is TRL's (the fused LM head) without TRL's per-step entropy and token accuracy, the
  recipe's default (``lib.sft_trainer``: bit for bit TRL's loss and gradients).
- ``stage_trl_head``: the default stage trainer with TRL's own tile function for the fused head
  (``lib.sft_trainer.single_tile_head`` off): the default until 2026-12-04; the same bits, slower on a CPU.
- ``stage_trl_metrics``: the same trainer running TRL's own ``compute_loss``, metrics included
  (``RecipeSFTTrainer.token_metrics = True``; the default until 2026-12-03).
- ``stage_model_loss``: the same trainer with the model's own loss (``RecipeSFTTrainer.trl_loss =
  False``): what switching the loss path is worth.
- ``stage_compiled``: the default stage trainer with ``mid_train.compile: true`` (torch.compile through
  the Trainer, inductor). Its rate includes the compilation, as a run pays it; the line after it
  gives the rate from step ``--warm`` on (steady state, recompilations on new shapes included).

Real (non-pad) tokens per second; arms run in ``--rounds`` rounds, order reversed each round;
ratios are medians of same-round ratios. Stop other jobs first: they share the cores.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib import chat, model as modellib, packing, params as params_mod, sft_trainer, training  # noqa: E402
from lib.sft_trainer import RecipeSFTTrainer  # noqa: E402
from _workload import quiet  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ARMS = ["bare", "stage", "stage_trl_head", "stage_trl_metrics", "stage_model_loss", "stage_compiled"]


def section_for(P, steps: int, **update):
    return P.mid_train.model_copy(update={"max_steps": steps, "checkpoint_every": 0, **update})


class Clock(TrainerCallback):
    """Wall time and real tokens seen at the end of every optimizer step."""

    def __init__(self):
        self.marks = []

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), int(state.num_input_tokens_seen)))


def stage_batches(base, tok, rows, P, steps: int) -> list[dict]:
    """The first ``steps`` batches the stage's packed trainer trains on (its collator, its sampler)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = training.sft_config(section_for(P, steps), out, device=torch.device("cpu"), dtype=torch.float32,
                                  seed=P.run.seed)
        trainer, _ = packing.packed_trainer(copy.deepcopy(base), tok, rows, cfg)
        batches = []
        for b in trainer.get_train_dataloader():
            batches.append({k: v for k, v in b.items() if k in ("input_ids", "labels", "position_ids", "attention_mask")})
            if len(batches) == steps:
                break
    return batches


def bare(model, batches, lr: float, pad_id: int) -> tuple[int, float]:
    model.train()
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    real = 0
    for batch in batches:
        real += int((batch["input_ids"] != pad_id).sum())
        model(**batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return real, time.perf_counter() - t0


def stage(model, tok, rows, P, steps: int, trl_loss: bool, token_metrics: bool = False,
          compile: bool = False, single_tile: bool = True) -> tuple[int, float, Clock]:
    old = RecipeSFTTrainer.trl_loss, RecipeSFTTrainer.token_metrics, sft_trainer.single_tile_head
    RecipeSFTTrainer.trl_loss, RecipeSFTTrainer.token_metrics = trl_loss, token_metrics
    if not single_tile:
        sft_trainer.single_tile_head = contextlib.nullcontext
    clock = Clock()
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg = training.sft_config(section_for(P, steps, compile=compile), out, device=torch.device("cpu"),
                                      dtype=torch.float32, seed=P.run.seed, disable_tqdm=True, logging_steps=10**6)
            # fit(packing=True) is fit_packed; called directly for its callbacks
            stats = training.fit_packed(model, tok, rows, cfg, resume=False, callbacks=[clock])
    finally:
        RecipeSFTTrainer.trl_loss, RecipeSFTTrainer.token_metrics, sft_trainer.single_tile_head = old
    assert stats["steps"] == steps, stats["steps"]
    return stats["tokens_seen"], stats["train_seconds"], clock


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", type=Path, default=Path("outputs/tiny"), help="a run folder with 00 and 02 finished")
    ap.add_argument("--params", type=Path, default=Path("params/tiny.yaml"), help="the params that run used")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    ap.add_argument("--warm", type=int, default=20, help="steady-state rates count from this step on")
    args = ap.parse_args()
    rows_file, model_dir = args.run / "02_tag_data" / "midtrain.parquet", args.run / "00_base_model" / "model"
    if not rows_file.is_file() or not model_dir.is_dir():
        sys.exit(f"error: {args.run} has no {rows_file.name} or base model; run "
                 f"`python -m lib.recipe params/tiny.yaml --only 00 01 02` first")
    P = params_mod.load(args.params)
    threads = P.run.threads or torch.get_num_threads()
    quiet(threads)
    import warnings
    warnings.filterwarnings("ignore")
    base, tok = modellib.load(model_dir, device=torch.device("cpu"))
    data = pd.read_parquet(rows_file)
    rows = [chat.conversation(r.problem, r.text) for r in data.itertuples()]
    batches = stage_batches(base, tok, rows, P, args.steps)
    fill = sum(int((b["input_ids"] != tok.pad_token_id).sum()) for b in batches) / sum(b["input_ids"].numel() for b in batches)
    print(f"{args.run}: {len(rows):,} mid-training rows; batches of {P.mid_train.batch_size} x {P.mid_train.max_length} "
          f"(fill {fill:.1%}), {base.config._attn_implementation} attention, {threads} threads, {args.steps} steps per arm")

    tps = {a: [] for a in args.arms}
    steady = {a: [] for a in args.arms if a != "bare"}
    order = list(args.arms)
    for r in range(args.rounds):
        for arm in order:
            model = copy.deepcopy(base)
            if arm == "bare":
                real, sec = bare(model, batches, P.mid_train.lr, tok.pad_token_id)
            else:
                real, sec, clock = stage(model, tok, rows, P, args.steps, trl_loss=arm != "stage_model_loss",
                                         token_metrics=arm == "stage_trl_metrics", compile=arm == "stage_compiled",
                                         single_tile=arm != "stage_trl_head")
                (t0, n0), (t1, n1) = clock.marks[min(args.warm, len(clock.marks) - 2)], clock.marks[-1]
                steady[arm].append((n1 - n0) / (t1 - t0))
            tps[arm].append(real / sec)
            print(f"round {r + 1} {arm}: {real:,} real tokens in {sec:.1f} s = {real / sec:,.0f} tok/s"
                  + (f" (from step {args.warm}: {steady[arm][-1]:,.0f})" if arm in steady else ""), flush=True)
        order.reverse()
    for a in args.arms:
        ratio = statistics.median(x / y for x, y in zip(tps[a], tps["bare"])) if "bare" in tps else float("nan")
        rounds = ", ".join(f"{x / y:.2f}" for x, y in zip(tps[a], tps["bare"])) if "bare" in tps else "-"
        print(f"{a}_real_tokens_per_s: {statistics.median(tps[a]):,.0f} ({ratio:.2f}x bare; range "
              f"{min(tps[a]):,.0f}-{max(tps[a]):,.0f}; per round {rounds})")
        if a in steady:
            sr = (statistics.median(x / y for x, y in zip(steady[a], tps["bare"])) if "bare" in tps else float("nan"))
            print(f"{a}_from_step_{args.warm}_real_tokens_per_s: {statistics.median(steady[a]):,.0f} ({sr:.2f}x bare)")


if __name__ == "__main__":
    main()
