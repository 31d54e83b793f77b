"""Training throughput of the recipe's trainer path vs a bare PyTorch loop and TRL's CPU defaults.

    .venv/bin/python benchmarks/bench_training.py [--examples 160] [--rounds 3] [--trl-steps 6] [--threads 1]

Real (non-pad) training tokens per second of:

- ``ours_packed``: mid-training as the recipe runs it, ``lib.training.fit(..., packing=True)``
  (-> ``lib.training.fit_packed``: BFD rows of ``mid_train.max_length``, 4D block mask), with
  params/tiny.yaml's ``mid_train`` section (``batch_size`` rows per step).
- ``ours_sft``: SFT as the recipe runs it, ``lib.training.fit(..., packing=False)`` (-> ``fit_sft``:
  TRL's SFTTrainer, padded, no activation checkpointing), tiny.yaml's ``sft`` section.
- Precision: ``ours_*`` and ``bare_*`` use ``lib.model.train_dtype(--dtype, cpu)`` (default
  ``auto`` = the recipe's CPU default, fp32). ``ours_sft_bf16`` / ``ours_packed_bf16`` train with
  ``model.dtype: bfloat16`` (bf16 autocast): ``ours_sft_bf16 / ours_sft`` is what bf16 is worth on
  this CPU (fast only with avx512_bf16/AMX; printed at the top). ``--dtype bfloat16`` runs the
  ``ours_*`` and ``bare_*`` arms in bf16 for a like-for-like trainer-overhead ratio.
- ``bare_padded``: the baseline. A bare PyTorch loop (AdamW, ``model(**batch).loss.backward()``,
  no scheduler/clipping/logging) over the very padded batches ``ours_sft``'s trainer builds
  (TRL's collator and the Trainer's seeded sampler, collated before the clock starts): pad to the
  longest of ``sft.batch_size`` examples, loss on the completion, labels exactly TRL's.
- ``bare_packed``: the same bare loop over the packed rows ``ours_packed`` trains on (same
  ``lib.packing`` collator, pre-collated): ``ours_packed / bare_packed`` is the trainer's own
  overhead on the packed path, ``ours_packed / bare_padded`` what packing plus the trainer gives.
- ``trl_default``: TRL's ``SFTTrainer`` with ``SFTConfig``'s defaults. Pure defaults do not run on
  a CPU-only machine (``bf16=True`` raises "Your setup doesn't support bf16/gpu. You need to assign
  use_cpu"), so the closest that runs: defaults plus ``use_cpu=True`` -- bf16 autocast, activation
  checkpointing on, no packing, batch 8, max_length 1024. It is slow, so it runs ``--trl-steps``
  steps instead of the whole epoch (on the first examples of its own shuffle).
- ``trl_default_bs32``: the same defaults but ``per_device_train_batch_size=sft.batch_size`` and
  ``seed=0``, i.e. the very padded batches of ``ours_sft`` for one epoch: what is left against
  ``ours_sft`` is bf16 autocast + activation checkpointing (+ scheduler/logging defaults); the
  gap between the two ``trl_default`` arms is how much less a batch of 8 pads than a batch of 32.

Every arm trains one epoch over the same examples (synthetic problems with chain-of-thought answers
of 1 to 4 passes, ~60 to ~440 tokens, TRL-tokenized), from the same randomly initialised model
(tiny.yaml's architecture, ``lib.model.build_scratch``). Timed: the train loop only (for the
trainers ``trainer.train()``, as ``lib.training.run_trainer`` reports; tokenization and trainer
construction are reported separately as ``setup``). Arms run in ``--rounds`` rounds, order
reversed every round, so load from other processes on the shared machine hits all; ratios are
the median over rounds of same-round ratios. Wall time swings several-fold when other jobs share the
cores, so tokens per process CPU-second (setup included) are printed too. Checkpoint saving is off in every arm
(``checkpoint_every=0``). Prints ``name: value (ratio vs baseline)``.
"""
from __future__ import annotations

import argparse
import copy
import random
import statistics
import tempfile
import time


import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from lib import packing, training  # noqa: E402
from lib.model import cpu_has_fast_bf16, train_dtype  # noqa: E402
from _workload import quiet, tiny_workload  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

ARMS = ["bare_padded", "bare_packed", "ours_sft", "ours_packed", "ours_sft_bf16", "ours_packed_bf16", "trl_default",
        "trl_default_bs32"]


def trainer_batches(base, tok, rows, cfg) -> list[dict]:
    """The padded batches ``fit_sft``'s trainer trains on: TRL's collator and the Trainer's seeded sampler."""
    trainer = SFTTrainer(model=copy.deepcopy(base), args=cfg, train_dataset=Dataset.from_list(rows),
                         processing_class=tok)
    keep = ("input_ids", "attention_mask", "labels")
    return [{k: b[k] for k in keep if k in b} for b in trainer.get_train_dataloader()]


def bare_loop(model, batches: list[dict], lr: float, pad_id: int, dtype: torch.dtype) -> tuple[int, float]:
    """The baseline: forward (under bf16 autocast when ``dtype`` is bf16, as the Trainer does), backward,
    AdamW step over ready batches. Returns (real tokens, seconds)."""
    model.train()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    t0 = time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    real = 0
    for batch in batches:
        real += int((batch["input_ids"] != pad_id).sum())
        with autocast:
            loss = model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return real, time.perf_counter() - t0


class CountingSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, counting the real (non-pad) tokens of the batches it trains on (instrumentation only)."""

    real = 0

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.real += int((inputs["input_ids"] != self.processing_class.pad_token_id).sum())
        return super().training_step(model, inputs, num_items_in_batch)


def run_arm(arm: str, base, tok, rows, padded_batches, packed_batches, P, args) -> dict:
    """One run of one arm on a fresh copy of the model: real tokens, train seconds, setup, CPU seconds."""
    c0 = time.process_time()
    out = _run_arm(arm, base, tok, rows, padded_batches, packed_batches, P, args)
    out["cpu"] = time.process_time() - c0  # setup included (~0.1 s); less sensitive to other jobs than wall time
    return out


def _run_arm(arm: str, base, tok, rows, padded_batches, packed_batches, P, args) -> dict:
    model = copy.deepcopy(base)
    pad = tok.pad_token_id
    cpu = torch.device("cpu")
    dtype = torch.bfloat16 if arm.endswith("_bf16") else train_dtype(args.dtype, cpu)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        if arm == "bare_padded":
            real, sec = bare_loop(model, padded_batches, P.sft.lr, pad, dtype)
            return {"real": real, "seconds": sec, "setup": 0.0}
        if arm == "bare_packed":
            real, sec = bare_loop(model, packed_batches, P.mid_train.lr, pad, dtype)
            return {"real": real, "seconds": sec, "setup": 0.0}
        if arm.startswith("ours_"):
            section = P.mid_train if arm.startswith("ours_packed") else P.sft
            section = section.model_copy(update={"epochs": 1, "max_steps": -1, "checkpoint_every": 0})
            cfg = training.sft_config(section, out, device=cpu, dtype=dtype, seed=0, disable_tqdm=True)
            stats = training.fit(model, tok, rows, cfg, packing=arm.startswith("ours_packed"), resume=False)
            total = time.perf_counter() - t0
            return {"real": stats["tokens_seen"], "seconds": stats["train_seconds"],
                    "setup": total - stats["train_seconds"], "steps": stats["steps"]}
        # trl_default: SFTConfig's defaults plus the one change that lets them run on CPU
        extra = (dict(per_device_train_batch_size=P.sft.batch_size, seed=0) if arm == "trl_default_bs32"
                 else dict(max_steps=args.trl_steps))
        cfg = SFTConfig(output_dir=out, use_cpu=True, report_to="none", num_train_epochs=1, disable_tqdm=True,
                        **extra)
        trainer = CountingSFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                                     processing_class=tok)
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        trainer.train()
        sec = time.perf_counter() - t1
        return {"real": trainer.real, "seconds": sec, "setup": setup, "steps": trainer.state.global_step,
                "cfg": cfg}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3, help="runs of every arm, order reversed each round")
    ap.add_argument("--trl-steps", type=int, default=6, help="steps of the (slow) trl_default arm")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier ratios on a shared machine)")
    ap.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                    help="precision of the ours_* and bare_* arms (params model.dtype)")
    args = ap.parse_args()
    if "bare_padded" not in args.arms:
        ap.error("the bare_padded baseline must be among --arms")
    quiet(args.threads)
    import warnings
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()

    P, rows, tok, base, examples = tiny_workload(args.examples)
    packed_rows, stats = packing.pack(examples, P.mid_train.max_length)
    lengths = sorted(len(e["input_ids"]) for e in examples)
    sft_cfg_dir = tempfile.mkdtemp()
    sft_section = P.sft.model_copy(update={"epochs": 1, "max_steps": -1, "checkpoint_every": 0})
    padded_batches = trainer_batches(base, tok, rows, training.sft_config(
        sft_section, sft_cfg_dir, device=torch.device("cpu"), dtype=torch.float32, seed=0))
    assert sum(int((b["input_ids"] != tok.pad_token_id).sum()) for b in padded_batches) == sum(lengths)
    collator = packing.collator_for(base, tok)
    order = list(range(len(packed_rows)))
    random.Random(0).shuffle(order)
    bs = P.mid_train.batch_size
    packed_batches = [collator([{"input_ids": packed_rows[j].input_ids, "labels": packed_rows[j].labels,
                                 "seq_lengths": packed_rows[j].seq_lengths} for j in order[i:i + bs]])
                      for i in range(0, len(order), bs)]
    pad_share = 1 - sum(lengths) / sum(b["input_ids"].numel() for b in padded_batches)
    print(f"precision of ours_* and bare_*: {train_dtype(args.dtype, torch.device('cpu'))} (CPU native bf16: "
          f"{cpu_has_fast_bf16()}); ours_*_bf16: torch.bfloat16")
    print(f"model: {sum(p.numel() for p in base.parameters()):,} params ({P.model.num_layers} layers, hidden "
          f"{P.model.hidden_size}, {base.config._attn_implementation}), {torch.get_num_threads()} threads")
    print(f"data: {len(examples)} examples, {sum(lengths):,} tokens, min/median/max {lengths[0]}/"
          f"{lengths[len(lengths) // 2]}/{lengths[-1]}; packed: {stats.n_rows} rows of {P.mid_train.max_length} "
          f"(fill {stats.fill:.1%}); padded batches of {P.sft.batch_size} ({pad_share:.0%} pad), packed batches of "
          f"{P.mid_train.batch_size} rows; trl_default: {args.trl_steps} steps")

    res = {a: [] for a in args.arms}
    order = list(args.arms)
    for r in range(args.rounds):
        for arm in order:
            out = run_arm(arm, base, tok, rows, padded_batches, packed_batches, P, args)
            res[arm].append(out)
            print(f"round {r + 1} {arm}: {out['real']:,} real tokens in {out['seconds']:.1f} s = "
                  f"{out['real'] / out['seconds']:,.0f} tok/s (setup {out['setup']:.1f} s, CPU {out['cpu']:.1f} s)", flush=True)
        order.reverse()

    tps = {a: [o["real"] / o["seconds"] for o in res[a]] for a in args.arms}

    def ratio(a: str, b: str) -> float:  # median over rounds of same-round ratios
        return statistics.median(x / y for x, y in zip(tps[a], tps[b]))

    def med(a: str) -> float:
        return statistics.median(tps[a])

    if "trl_default" in res:
        c = res["trl_default"][0]["cfg"]
        print(f"trl_default_settings: bf16={c.bf16}, activation_checkpointing={c.activation_checkpointing}, "
              f"packing={c.packing}, per_device_train_batch_size={c.per_device_train_batch_size}, "
              f"max_length={c.max_length} (pure SFTConfig defaults raise on CPU without use_cpu=True)")
    for a in args.arms:
        parts = [f"{med(a):,.0f} tok/s ({ratio(a, 'bare_padded'):.2f}x vs bare_padded baseline"]
        if a.startswith("ours_packed") and "bare_packed" in tps:
            parts.append(f"{ratio(a, 'bare_packed'):.2f}x vs bare_packed")
        if a.endswith("_bf16") and a[:-5] in tps:
            parts.append(f"{ratio(a, a[:-5]):.2f}x vs {a[:-5]}")
        for t in ("trl_default", "trl_default_bs32"):
            if a.startswith("ours") and t in tps:
                parts.append(f"{ratio(a, t):.2f}x vs {t}")
        spread = f"; {len(tps[a])} runs, range {min(tps[a]):,.0f}-{max(tps[a]):,.0f}"
        print(f"{a}_real_tokens_per_s: " + ", ".join(parts) + spread + ")")
    cpu = {a: [o["real"] / o["cpu"] for o in res[a]] for a in args.arms}
    for a in args.arms:
        c = statistics.median(cpu[a])
        ratios = statistics.median(x / y for x, y in zip(cpu[a], cpu["bare_padded"]))
        print(f"{a}_real_tokens_per_cpu_s: {c:,.0f} tok per CPU-s ({ratios:.2f}x vs bare_padded baseline)")
    for a in args.arms:
        s = statistics.median(o["setup"] for o in res[a])
        if s:
            print(f"{a}_setup_seconds: {s:.1f} s (tokenize + build trainer, not in tok/s)")
    print(f"total_seconds: {time.perf_counter() - t_start:.0f}")


if __name__ == "__main__":
    main()
