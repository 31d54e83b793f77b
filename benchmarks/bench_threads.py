"""Two cores: one process with 2 threads, or two processes with 1 thread each?

    .venv/bin/python benchmarks/bench_threads.py --run outputs/tiny [--steps 20] [--rounds 3]

For a finished run's models at tiny's shapes, this times the same work two ways, in the same run:
- **baseline**: one process, ``torch.set_num_threads(2)``, the whole batch;
- **pair**: two processes started together, each ``torch.set_num_threads(1)`` with half the batch
  (what running two arms, two models or two halves of a prompt list side by side would do).

Two workloads:
- ``train``: forward, backward and AdamW on 16 rows x 192 tokens of the mid-trained model
  (mid-training's row shape; the pair does 8 rows each);
- ``generate``: sampling 80 new tokens for 64 prompts of 60 tokens with the DPO model
  (a GRPO step's 64 completions; the pair does 64 each, so a pair's round is two batches).

It prints throughput per workload and the pair's ratio against the baseline, and whether the
generation's logits and one training step's gradients are **bitwise equal** at 1 and 2 threads
(same seeds): where they are, splitting the work over two 1-thread processes (with per-sample
seeds) gives the same samples or the same weights.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM
kind, folder, threads, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
if kind == "train":
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    x = torch.randint(0, m.config.vocab_size, (batch, 192))
    def step():
        m(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
    tokens = batch * 192
else:
    m.eval()
    x = torch.randint(0, m.config.vocab_size, (batch, 60))
    def step():
        with torch.no_grad():
            m.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=80, min_new_tokens=80,
                       do_sample=True, pad_token_id=0)
    tokens = batch * 80
step()
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()  # start together
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"seconds": time.perf_counter() - t, "tokens": tokens * steps}), flush=True)
'''

# the start of both equality scripts: the model at the given thread count, seed 1
AT_THREADS = r'''
import sys, torch
from transformers import AutoModelForCausalLM
folder, threads, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.set_num_threads(threads)
m = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
torch.manual_seed(1)
'''

GRADS = AT_THREADS + r'''
m.train()
x = torch.randint(0, m.config.vocab_size, (16, 192))
m(input_ids=x, labels=x).loss.backward()
torch.save([p.grad for p in m.parameters()], out)
'''

EQUAL = AT_THREADS + r'''
m.eval()
x = torch.randint(0, m.config.vocab_size, (64, 60))
torch.manual_seed(0)
with torch.no_grad():
    o = m.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=80, do_sample=True, pad_token_id=0,
                   output_scores=True, return_dict_in_generate=True)
torch.save({"seq": o.sequences, "scores": torch.stack(o.scores)}, out)
'''


def run_group(kind: str, folder: Path, threads: int, batch: int, steps: int, n_proc: int) -> float:
    """Tokens per second of n_proc workers started together (their summed tokens over the slowest's time)."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind, str(folder), str(threads), str(batch), str(steps)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(n_proc)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a {kind} worker died before it was ready (exit {p.wait()})")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    return sum(r["tokens"] for r in results) / max(r["seconds"] for r in results)


def at_1_and_2_threads(script: str, folder: Path, tmp: Path) -> list:
    """What ``script`` saves for ``folder`` when run in a fresh process at 1 and then at 2 threads."""
    import torch

    outs = []
    for threads in (1, 2):
        out = tmp / f"bench_threads_{threads}.pt"
        subprocess.run([sys.executable, "-c", script, str(folder), str(threads), str(out)], check=True,
                       stderr=subprocess.DEVNULL)
        outs.append(torch.load(out))
        out.unlink()
    return outs


def logits_equal(folder: Path, tmp: Path) -> tuple[bool, bool]:
    import torch

    a, b = at_1_and_2_threads(EQUAL, folder, tmp)
    finite = torch.isfinite(a["scores"])
    same_mask = torch.equal(finite, torch.isfinite(b["scores"]))
    return torch.equal(a["seq"], b["seq"]), same_mask and torch.equal(a["scores"][finite], b["scores"][finite])


def grads_equal(folder: Path, tmp: Path) -> tuple[bool, float]:
    import torch

    a, b = at_1_and_2_threads(GRADS, folder, tmp)
    equal = all(torch.equal(g1, g2) for g1, g2 in zip(a, b))
    return equal, max((g1 - g2).abs().max().item() for g1, g2 in zip(a, b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("outputs/tiny"), help="a finished tiny run folder")
    ap.add_argument("--steps", type=int, default=20, help="training steps per worker and round")
    ap.add_argument("--gen-batches", type=int, default=3, help="generation batches per worker and round")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    models = {"train": a.run / "03_mid_train" / "model", "generate": a.run / "05_rollout_dpo" / "model"}
    for kind, folder in models.items():
        if not (folder / "config.json").is_file():
            raise SystemExit(f"bench_threads: no model at {folder}; run `make tiny` first or pass --run")
    shapes = {"train": (16, 8, a.steps), "generate": (64, 64, a.gen_batches)}
    for kind, (batch_one, batch_pair, steps) in shapes.items():
        base, pair = [], []
        for r in range(a.rounds):  # alternate the order so drift hits both arms alike
            order = [("base", 2, batch_one, 1), ("pair", 1, batch_pair, 2)]
            for name, threads, batch, n_proc in (order if r % 2 == 0 else order[::-1]):
                tps = run_group(kind, models[kind], threads, batch, steps, n_proc)
                (base if name == "base" else pair).append(tps)
        b, p = statistics.median(base), statistics.median(pair)
        print(f"{kind}_one_process_2_threads_tok_s: {b:.0f} (baseline)")
        print(f"{kind}_two_processes_1_thread_tok_s: {p:.0f} ({p / b:.2f}x vs baseline; rounds "
              + ", ".join(f"{x / y:.2f}" for x, y in zip(pair, base)) + ")")
    seq_eq, logits_eq = logits_equal(models["generate"], Path("/tmp"))
    print(f"generate_1_vs_2_threads_sequences_equal: {seq_eq}")
    print(f"generate_1_vs_2_threads_logits_bitwise_equal: {logits_eq}")
    g_eq, g_diff = grads_equal(models["train"], Path("/tmp"))
    print(f"train_1_vs_2_threads_grads_bitwise_equal: {g_eq} (max abs difference {g_diff:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
