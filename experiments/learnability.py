"""Is the synthetic task learnable by a tiny model, and does chain of thought win?

Trains the same tiny Llama twice from scratch on `lib.problems` -- once on direct
answers (``\\boxed{32}``), once on compact chain of thought (``<think>`` step lines
``</think>\\boxed{32}``) -- with the SAME number of training tokens (prompt +
completion, padding excluded; the CoT arm therefore sees fewer problems), then
scores greedy decoding on held-out problems per level and per domain.

    .venv/bin/python -m experiments.learnability --tokens 2000000 --seed 0   # ~5.5 min on 2 quiet cores

The design is proven when CoT beats direct clearly on the multi-step levels (>= 2)
and every level gets partial accuracy with CoT (see MINIATURE_NOTES.md, LOG.md).

Tokens: digits one by one, words and LaTeX commands whole, every other symbol
alone; spaces are dropped (what a BPE with split digits roughly gives, with a
vocabulary of ~160). Answers are compared exactly, spaces removed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from fractions import Fraction
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lib.problems import DOMAINS, LEVELS, cot_solution, direct_solution, generate

_TOKEN = re.compile(r"</?think>|\\[A-Za-z]+|[A-Za-z]+|\d|\n|[^\sA-Za-z\d]")
PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"


class Vocab:
    """Regex tokenizer over a closed vocabulary built from the training texts."""

    def __init__(self, texts):
        words = sorted({t for s in texts for t in _TOKEN.findall(s)} | set("0123456789"))
        self.itos = [PAD, BOS, EOS, SEP, UNK] + words
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def encode(self, s: str) -> list[int]:
        return [self.stoi.get(t, self.stoi[UNK]) for t in _TOKEN.findall(s)]

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in ids if i >= 5)

    def __len__(self):
        return len(self.itos)


def boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (braces matched), or None."""
    i = text.rfind("\\boxed{")
    if i < 0:
        return None
    depth, j = 0, i + len("\\boxed")
    for k in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[j + 1:k]
    return None


def encode_example(vocab: Vocab, p, fmt) -> tuple[list[int], int]:
    """``<bos> question <sep> completion <eos>`` and the index where the completion starts."""
    prompt = [vocab.stoi[BOS]] + vocab.encode(p.problem) + [vocab.stoi[SEP]]
    completion = vocab.encode(fmt(p)) + [vocab.stoi[EOS]]
    return prompt + completion, len(prompt)


def make_model(vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=512, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).float()


def train(arm: str, examples, vocab, tokens: int, seed: int, lr: float, batch: int) -> LlamaForCausalLM:
    model = make_model(len(vocab), seed)
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    g = torch.Generator().manual_seed(seed)
    avg_len = sum(len(ids) for ids, _ in examples) / len(examples)
    total_steps = math.ceil(tokens / (avg_len * batch))
    warmup = max(1, total_steps // 20)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, s - warmup) / max(1, total_steps - warmup))))))
    print(f"[{arm}] {n_params / 1e6:.2f}M non-embedding params, {len(examples)} problems in pool, "
          f"{avg_len:.1f} tokens/problem, ~{total_steps} steps for {tokens:,} tokens", flush=True)
    model.train()
    seen, step, epoch, t0, order, pos = 0, 0, 0, time.time(), torch.randperm(len(examples), generator=g), 0
    n_problems = 0
    while seen < tokens:
        if pos + batch > len(order):
            order, pos, epoch = torch.randperm(len(examples), generator=g), 0, epoch + 1
        idx = order[pos:pos + batch].tolist()
        pos += batch
        width = max(len(examples[i][0]) for i in idx)
        ids = torch.zeros(len(idx), width, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        mask = torch.zeros(len(idx), width, dtype=torch.long)
        for r, i in enumerate(idx):
            seq, start = examples[i]
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
            labels[r, start:len(seq)] = torch.tensor(seq[start:])  # loss on the completion only
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        seen += int(mask.sum())
        n_problems += len(idx)
        step += 1
        if step % 50 == 0 or seen >= tokens:
            el = time.time() - t0
            eta = el / seen * (tokens - seen)
            print(f"[{arm}] step {step:05d}/{total_steps:05d} ({100 * seen / tokens:5.1f}%) | loss {loss.item():.3f} "
                  f"| tok/s {seen / el:,.0f} | epoch {epoch} | eta {eta / 60:.1f}m", flush=True)
    el = time.time() - t0
    model.stats = dict(steps=step, problems=n_problems, tokens=seen, seconds=el, tok_s=seen / el)
    return model


_LINE = re.compile(r"^(-?\d+(?:/\d+)?)([-+*/]|mod)\(?(-?\d+(?:/\d+)?)\)?=(-?\d+(?:/\d+)?)$")
_GCD = re.compile(r"^gcd\((\d+),(\d+)\)=(\d+)$")


def line_ok(line: str) -> bool | None:
    """Is a generated step line (spaces removed) arithmetically right? None if it is in no known form."""
    if m := _LINE.match(line):
        a, op, b, c = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
        if b == 0 and op in ("/", "mod"):
            return False
        if op == "mod":
            return a.denominator == 1 and b.denominator == 1 and a % b == c
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op] == c
    if m := _GCD.match(line):
        return math.gcd(int(m[1]), int(m[2])) == int(m[3])
    return None


@torch.no_grad()
def evaluate(model, vocab, problems, fmt, max_new: int, batch: int = 128, texts: list | None = None) -> list[bool]:
    """Greedy decoding (left-padded batches); exact match of the boxed answer, spaces removed."""
    model.eval()
    correct = []
    for b in range(0, len(problems), batch):
        chunk = problems[b:b + batch]
        prompts = [[vocab.stoi[BOS]] + vocab.encode(p.problem) + [vocab.stoi[SEP]] for p in chunk]
        width = max(map(len, prompts))
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, pr in enumerate(prompts):
            ids[r, width - len(pr):] = torch.tensor(pr)
            mask[r, width - len(pr):] = 1
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=0, eos_token_id=2)
        for p, row in zip(chunk, out[:, width:].tolist()):
            row = row[:row.index(2)] if 2 in row else row
            text = vocab.decode(row)
            if texts is not None:
                texts.append(text)
            correct.append(boxed(text) == p.answer.replace(" ", ""))
    return correct


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2_000_000, help="training tokens per arm (prompt + completion)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS))
    ap.add_argument("--arms", nargs="+", default=["direct", "cot"], choices=["direct", "cot"])
    ap.add_argument("--pool", type=int, default=600, help="training problems per domain x level cell")
    ap.add_argument("--eval-per-cell", type=int, default=30, help="held-out problems per domain x level cell")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--dump", type=Path, default=None, help="write every generation here (JSON Lines)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)

    cells = len(args.domains) * len(args.levels)
    t0 = time.time()
    pool = generate(args.pool * cells, args.seed, args.domains, args.levels, split="train")
    test = generate(args.eval_per_cell * cells, args.seed + 1, args.domains, args.levels, split="test")
    vocab = Vocab([p.problem for p in pool] + [cot_solution(p) for p in pool])
    print(f"generated {len(pool)} train / {len(test)} test problems in {time.time() - t0:.1f}s; vocab {len(vocab)}")

    fmts = {"direct": direct_solution, "cot": cot_solution}
    results, stats, lengths = {}, {}, {}
    for arm in args.arms:
        ex = [encode_example(vocab, p, fmts[arm]) for p in pool]
        lengths[arm] = (sum(len(s) for s, _ in ex) / len(ex),
                        sum(len(p.problem) + len(fmts[arm](p)) for p in pool) / len(pool))
        model = train(arm, ex, vocab, args.tokens, args.seed, args.lr, args.batch)
        stats[arm] = model.stats
        max_new = max(len(vocab.encode(fmts[arm](p))) for p in test) + 8
        t1 = time.time()
        texts: list[str] = []
        results[arm] = evaluate(model, vocab, test, fmts[arm], max_new, texts=texts)
        if args.dump:
            with open(args.dump, "a") as f:
                for p, t, ok in zip(test, texts, results[arm]):
                    f.write(json.dumps({"arm": arm, "id": p.id, "problem": p.problem, "gold": p.answer,
                                        "output": t, "correct": ok}) + "\n")
        print(f"[{arm}] eval {len(test)} problems in {time.time() - t1:.1f}s: "
              f"{100 * sum(results[arm]) / len(test):.1f}%", flush=True)
        if arm == "cot":  # which lines go wrong: arithmetic of a line vs the trace as a whole
            for d in args.domains:
                for lv in args.levels:
                    lines = [ln for p, t in zip(test, texts) if p.domain == d and p.level == lv
                             for ln in t.split("</think>")[0].replace("<think>", "").split("\n") if ln]
                    oks = [line_ok(ln) for ln in lines]
                    print(f"[cot] lines {d:>20} L{lv}: {sum(o is True for o in oks)}/{len(oks)} right, "
                          f"{sum(o is None for o in oks)} unparsed")
            for p, t, ok in list(zip(test, texts, results[arm]))[:8]:
                print(f"[cot] {'OK ' if ok else 'BAD'} {p.id} gold {p.answer}: {t!r}")

    def table(key, keys, name):
        rows = [f"| {name} | n | " + " | ".join(args.arms) + " |", "|---|---|" + "---|" * len(args.arms)]
        for k in keys:
            idx = [i for i, p in enumerate(test) if getattr(p, key) == k]
            accs = [100 * sum(results[a][i] for i in idx) / len(idx) for a in args.arms]
            rows.append(f"| {k} | {len(idx)} | " + " | ".join(f"{x:.0f}%" for x in accs) + " |")
        allacc = [100 * sum(results[a]) / len(test) for a in args.arms]
        rows.append(f"| all | {len(test)} | " + " | ".join(f"{x:.0f}%" for x in allacc) + " |")
        return "\n".join(rows)

    cell_rows = ["| domain | " + " | ".join(f"L{lv}" for lv in args.levels) + " |",
                 "|---|" + "---|" * len(args.levels)]
    for d in args.domains:
        cells_txt = []
        for lv in args.levels:
            idx = [i for i, p in enumerate(test) if p.domain == d and p.level == lv]
            cells_txt.append(" / ".join(f"{100 * sum(results[a][i] for i in idx) / len(idx):.0f}" for a in args.arms))
        cell_rows.append(f"| {d} | " + " | ".join(cells_txt) + " |")
    lines = [
        f"tokens/arm {args.tokens:,}, seed {args.seed}, pool {len(pool)}, test {len(test)} (greedy, exact match)",
        "",
        "| arm | tokens/problem (chars) | steps | problems seen | train s | tok/s |",
        "|---|---|---|---|---|---|",
        *[f"| {a} | {lengths[a][0]:.1f} ({lengths[a][1]:.0f}) | {stats[a]['steps']} | {stats[a]['problems']:,} | "
          f"{stats[a]['seconds']:.0f} | {stats[a]['tok_s']:,.0f} |" for a in args.arms],
        "", table("level", args.levels, "level"), "", table("domain", args.domains, "domain"),
        "", f"per cell ({' / '.join(args.arms)}, %):", "", *cell_rows,
    ]
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        args.out.write_text(report + "\n")
    print(f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
