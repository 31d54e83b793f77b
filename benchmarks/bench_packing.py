"""Mid-training throughput per real (non-pad) token: padding vs TRL's packings vs lib.packing.

    .venv/bin/python benchmarks/bench_packing.py [--examples 1200] [--batch 32] [--max-length 512]
                                                [--rounds 8] [--bfd-rounds 2] [--mask-repeats 5] [--threads 2]

Same model (the tiny default's architecture, random init, identical weights for every method),
same TRL-tokenized examples (synthetic problems with chain-of-thought answers of 1 to 4 passes,
~60 to ~440 tokens), same TRL SFTTrainer loss and optimizer. Every step carries about the same
number of real tokens: the padded baseline takes ``--batch`` examples, the packed methods as many
rows of ``--max-length`` tokens as hold that many. Methods:

- ``padded``: TRL's ``packing=False`` (pad to the longest example of a random batch): the baseline.
- ``trl_bfd``: TRL's default ``packing=True`` (BFD + padding-free: the batch becomes ONE row of
  rows x max_length tokens, attention quadratic in that length without flash-attention). So slow
  on CPU that it runs only in the first ``--bfd-rounds`` rounds.
- ``trl_wrapped``: ``packing_strategy="wrapped"``: dense rows, but examples attend to each other.
- ``ours_4d``: lib.packing (BFD rows, 4D block-diagonal mask, position_ids per example).
- ``ours_posids``: lib.packing without the mask; transformers derives the blocks from position_ids.

The CPU is shared, so methods are interleaved step by step: a round is one optimizer step of
every method (order rotated each round), timed from fetching the batch (collation included) to
the end of the optimizer step, through the trainer's own ``training_step``. Round 0 is a warm-up.
Reported: median real tokens/s per method with the median over rounds of the per-round ratio to
the baseline (robust to load from other processes), and the median process CPU time per 1,000
real tokens (wall time swings ~10x when other jobs share the two cores; CPU time less so).
Also: padding share and forward FLOPs per real token of each batching, and the cost of the 4D
mask against plain causal attention on the same packed batch. Prints ``name: value (ratio ...)``.
On a machine busy with other jobs, ``--threads 1`` gives much steadier ratios than 2 threads.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time


import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import SFTTrainer  # noqa: E402

from lib import packing  # noqa: E402
from _workload import quiet, tiny_workload  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from lib.training import sft_config  # noqa: E402

METHODS = ["padded", "trl_bfd", "trl_wrapped", "ours_4d", "ours_posids"]
NOTES = {"padded": " [baseline]", "trl_wrapped": " [examples attend to each other]"}


class Runner:
    """One method: its trainer, optimizer and an endless iterator over its batches."""

    def __init__(self, method, base, tok, examples, packed_rows, batch_rows, args, train_cfg, out_dir):
        self.method, self.pad = method, tok.pad_token_id
        model = copy.deepcopy(base)
        common = dict(learning_rate=1e-3, warmup_steps=0.0, max_length=args.max_length, disable_tqdm=True)
        cpu, f32 = torch.device("cpu"), torch.float32
        if method.startswith("ours"):
            cfg = sft_config(train_cfg, out_dir, device=cpu, dtype=f32, seed=0, per_device_train_batch_size=batch_rows,
                             remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, **common)
            collator = packing.collator_for(model, tok)
            collator.mask = "4d" if method == "ours_4d" else "none"
            self.trainer = packing.PackedSFTTrainer(model=model, args=cfg, processing_class=tok,
                                                    train_dataset=packing.rows_dataset(packed_rows),
                                                    data_collator=collator)
        else:
            extra = {"padded": dict(per_device_train_batch_size=args.batch),
                     "trl_bfd": dict(per_device_train_batch_size=batch_rows, packing=True),
                     "trl_wrapped": dict(per_device_train_batch_size=batch_rows, packing=True,
                                         packing_strategy="wrapped")}[method]
            cfg = sft_config(train_cfg, out_dir, device=cpu, dtype=f32, seed=0, **common, **extra)
            self.trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(examples),
                                      processing_class=tok)
        self.optimizer = self.trainer.create_optimizer()
        self.trainer.current_gradient_accumulation_steps = 1  # set by the train loop, which we step by hand
        self.loader = self.trainer.get_train_dataloader()
        self.it = iter(self.loader)
        self.cpu_s_per_token: list[float] = []  # process CPU seconds per real token, per step

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> float:
        """One optimizer step as the Trainer does it; returns real tokens/s."""
        t0, c0 = time.perf_counter(), time.process_time()
        batch = self.next_batch()
        real = int((batch["input_ids"] != self.pad).sum())
        self.trainer.training_step(self.trainer.model, batch)
        torch.nn.utils.clip_grad_norm_(self.trainer.model.parameters(), self.trainer.args.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        self.cpu_s_per_token.append((time.process_time() - c0) / real)
        return real / dt


def geometry(dataloader, pad_token_id: int) -> list[tuple[int, int, int]]:
    """(rows, length, real tokens) of every batch of one pass over a dataloader."""
    return [(*b["input_ids"].shape, int((b["input_ids"] != pad_token_id).sum())) for b in dataloader]


def describe(name: str, geo, m) -> str:
    """Padding share and forward FLOPs per real token (dense layers + L x L attention) of batches ``geo``.

    Every position costs the projections, MLP and LM head (TRL scores all positions on CPU);
    attention with an explicit mask computes the full L x L scores of every row.
    """
    hd = m.hidden_size // m.num_heads
    dense = 2 * m.num_layers * (2 * m.hidden_size ** 2 + 2 * m.hidden_size * m.num_kv_heads * hd
                                + 3 * m.hidden_size * m.intermediate_size) + 2 * m.hidden_size * m.vocab_size
    attn_per_l2 = 2 * 2 * m.num_layers * m.hidden_size  # QK^T and AV, all heads
    real = sum(r for _, _, r in geo)
    total = sum(b * L for b, L, _ in geo)
    attn = sum(b * L * L for b, L, _ in geo) * attn_per_l2
    flops = total * dense + attn
    return (f"{name}_batches: {1 - real / total:.1%} of batch tokens are pad, {real // len(geo):,} real tokens/batch, "
            f"{flops / real / 1e6:.2f} MFLOP forward per real token ({attn / flops:.0%} in L x L attention)")


def mask_overhead(runner, repeats: int) -> tuple[float, float]:
    """Forward+backward seconds of one packed batch with its 4D block mask vs plain causal (no mask).

    Plain causal is wrong for packed rows (examples leak); it only prices the mask.
    """
    batch = runner.next_batch()
    model = runner.trainer.model
    plain = {k: v for k, v in batch.items() if k != "attention_mask"}
    plain.pop("position_ids")
    times = {"mask": [], "plain": []}
    for i in range(repeats):
        for name, kw in (("mask", batch), ("plain", plain)) if i % 2 else (("plain", plain), ("mask", batch)):
            t = time.perf_counter()
            model(**kw, use_cache=False).logits.sum().backward()
            times[name].append(time.perf_counter() - t)
            model.zero_grad(set_to_none=True)
    return statistics.median(times["mask"]), statistics.median(times["plain"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=32, help="examples per padded batch")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=8, help="timed rounds (one step of every method each)")
    ap.add_argument("--bfd-rounds", type=int, default=2, help="trl_bfd is slow: it runs in the first rounds only")
    ap.add_argument("--mask-repeats", type=int, default=5, help="timings of the 4D mask vs plain causal (0: skip)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    args = ap.parse_args()
    if "padded" not in args.methods:
        ap.error("the padded baseline must be among --methods")
    quiet(args.threads)
    t_start = time.perf_counter()

    P, rows, tok, base, examples = tiny_workload(args.examples)
    lengths = sorted(len(e["input_ids"]) for e in examples)
    packed_rows, stats = packing.pack(examples, args.max_length)
    mean_len = sum(lengths) / len(lengths)
    batch_rows = max(1, round(args.batch * mean_len / (args.max_length * stats.fill)))
    print(f"model: {sum(p.numel() for p in base.parameters()):,} params ({P.model.num_layers} layers, hidden "
          f"{P.model.hidden_size}, {base.config._attn_implementation}), {torch.get_num_threads()} threads")
    print(f"data: {len(examples)} examples, tokens min/median/max {lengths[0]}/{lengths[len(lengths) // 2]}/"
          f"{lengths[-1]}, mean {mean_len:.0f}; packed into {stats.n_rows} rows of {args.max_length} "
          f"(fill {stats.fill:.1%}, truncated {stats.n_truncated})")
    print(f"batch: {args.batch} examples padded vs {batch_rows} rows packed (~{args.batch * mean_len:,.0f} real "
          f"tokens/step); 1 warm-up + {args.rounds} timed rounds ({args.bfd_rounds} for trl_bfd)")

    with tempfile.TemporaryDirectory() as out:
        runners = {m: Runner(m, base, tok, examples, packed_rows, batch_rows, args, P.base_pretrain, out)
                   for m in args.methods}
        shapes = [describe("padded", geometry(runners["padded"].trainer.get_train_dataloader(), tok.pad_token_id),
                           P.model)]
        if "ours_4d" in runners:
            shapes.append(describe("ours", geometry(runners["ours_4d"].trainer.get_train_dataloader(),
                                                    tok.pad_token_id), P.model))
        print(f"setup_seconds: {time.perf_counter() - t_start:.0f}", flush=True)

        tps = {m: [] for m in args.methods}
        ratios = {m: [] for m in args.methods}
        for r in range(args.rounds + 1):
            k = r % len(args.methods)
            this = {}
            for m in args.methods[k:] + args.methods[:k]:
                if m == "trl_bfd" and r > args.bfd_rounds:
                    continue
                this[m] = runners[m].step()
            if r == 0:
                for m in this:
                    runners[m].cpu_s_per_token.clear()
                continue  # warm-up
            for m, v in this.items():
                tps[m].append(v)
                ratios[m].append(v / this["padded"])
            print(f"round {r}: " + ", ".join(f"{m} {v:,.0f}" for m, v in this.items()), flush=True)

        if "ours_4d" in runners and args.mask_repeats:
            with_mask, plain = mask_overhead(runners["ours_4d"], args.mask_repeats)

    print("\n".join(shapes))
    for m in args.methods:
        med = statistics.median(tps[m])
        print(f"{m}_real_tokens_per_s: {med:,.0f} tok/s ({statistics.median(ratios[m]):.2f}x vs baseline; "
              f"median of {len(tps[m])} interleaved steps, range {min(tps[m]):,.0f}-{max(tps[m]):,.0f})"
              f"{NOTES.get(m, '')}")
    base_cpu = statistics.median(runners["padded"].cpu_s_per_token)
    for m in args.methods:  # CPU time is less sensitive than wall time to other processes on the machine
        c = statistics.median(runners[m].cpu_s_per_token)
        print(f"{m}_cpu_ms_per_1k_real_tokens: {1e6 * c:,.0f} ms ({base_cpu / c:.2f}x less CPU than baseline)")
    if "ours_4d" in runners and args.mask_repeats:
        print(f"block_mask_overhead: {with_mask:.2f} s vs {plain:.2f} s forward+backward of one packed batch with "
              f"the 4D mask vs plain causal ({with_mask / plain:.2f}x; median of {args.mask_repeats})")
    print(f"total_seconds: {time.perf_counter() - t_start:.0f}")


if __name__ == "__main__":
    main()
