"""Rollout generation speed: the shared sampler vs. plain transformers baselines, same run.

    .venv/bin/python benchmarks/bench_sampling.py [--prompts 64] [--new-tokens 64] [--threads 2]

Prints ``name: value (ratio vs baseline)`` lines. Baseline = one-by-one ``generate`` (what a
user writes first); also the bare batched ``generate`` on the same prompts (no length sorting,
no bookkeeping). The model is the tiny default's architecture, randomly initialised: speed
does not depend on the weights. Generated tokens are counted (EOS may end some early).
"""
from __future__ import annotations

import argparse
import time

import torch

from lib import chat, problems, sampling
from lib.model import build_scratch
from lib.params import load
from lib.paths import PARAMS_DIR
from lib.tokenizer import train_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    P = load(PARAMS_DIR / "tiny.yaml")
    ps = problems.generate(max(args.prompts, 400), seed=0)
    tok = train_tokenizer([chat.user_content(p.problem) + problems.cot_solution(p) for p in ps], P.model.vocab_size)
    torch.manual_seed(0)
    model = build_scratch(P.model, tok).eval()
    texts = [p.problem for p in ps[:args.prompts]]
    kw = dict(do_sample=True, temperature=0.6, top_p=0.95, top_k=0, max_new_tokens=args.new_tokens,
              pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} params, {args.prompts} prompts, "
          f"{args.new_tokens} new tokens, {torch.get_num_threads()} threads")

    # baseline: one prompt at a time (after a warm-up call, so start-up costs are not counted)
    with torch.inference_mode():
        ids = tok(chat.prompt_text(tok, texts[0]), return_tensors="pt", add_special_tokens=False)
        model.generate(**ids, **kw)
    t, n_tok = time.perf_counter(), 0
    with torch.inference_mode():
        for text in texts[:16]:  # 16 are enough to time it; scaled per token
            ids = tok(chat.prompt_text(tok, text), return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, **kw)
            n_tok += out.shape[1] - ids["input_ids"].shape[1]
    base = n_tok / (time.perf_counter() - t)
    print(f"one_by_one_generate_tokens_per_s: {base:,.0f} tok/s (1.00x vs baseline)")

    tok.padding_side = "left"
    for bs in args.batch_sizes:
        t, n_tok = time.perf_counter(), 0
        with torch.inference_mode():
            for i in range(0, len(texts), bs):
                enc = tok([chat.prompt_text(tok, x) for x in texts[i:i + bs]], return_tensors="pt", padding=True,
                          add_special_tokens=False)
                out = model.generate(**enc, **kw)[:, enc["input_ids"].shape[1]:]
                n_tok += int((out != tok.pad_token_id).sum())
        bare = n_tok / (time.perf_counter() - t)
        print(f"bare_batched_generate_bs{bs}_tokens_per_s: {bare:,.0f} tok/s ({bare / base:.2f}x vs baseline)")
        t = time.perf_counter()
        outs = sampling.sample(model, tok, texts, n=1, temperature=0.6, top_p=0.95, max_new_tokens=args.new_tokens,
                               batch_size=bs, progress=False)
        n_tok = sum(c.n_tokens for cs in outs for c in cs)
        ours = n_tok / (time.perf_counter() - t)
        print(f"shared_sampler_bs{bs}_tokens_per_s: {ours:,.0f} tok/s ({ours / base:.2f}x vs baseline, "
              f"{ours / bare:.2f}x vs bare batched)")


if __name__ == "__main__":
    main()
