"""Rollout generation speed: the shared sampler vs. plain transformers baselines, same run.

    .venv/bin/python benchmarks/bench_sampling.py [--prompts 64] [--new-tokens 64] [--threads 2]
    .venv/bin/python benchmarks/bench_sampling.py --model outputs/tiny/04_sft/model --stage-shapes

Prints ``name: value (ratio vs baseline)`` lines. Baseline = one-by-one ``generate`` (what a
user writes first); also the bare batched ``generate`` on the same prompts (no length sorting,
no bookkeeping). The model is the tiny default's architecture, randomly initialised: speed
does not depend on the weights. Generated tokens are counted (EOS may end some early).

``--stage-shapes`` measures what 07_eval runs instead: a trained ``--model`` (its answers end
where a trained model's do), held-out problems, tiny's ``eval`` section (temperature, top-p,
``max_new_tokens``, ``batch_size``, ``n_samples`` a problem) and its threads; the shared sampler
against a **bare batched KV-cache loop** on the same prompts in the same batches (one prefill,
then one forward per token with the cache, temperature and top-p by hand, stop when every row
has ended): generated tokens (through EOS) per second, rounds in alternating order.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lib import chat, problems, sampling
from lib.model import build_scratch
from lib.params import load
from lib.paths import PARAMS_DIR
from lib.tokenizer import train_tokenizer


def bare_kv_loop(model, prompt_ids: list[list[int]], *, eos: int, pad: int, temperature: float, top_p: float,
                 max_new_tokens: int, batch_size: int, seed: int = 0) -> int:
    """Generated tokens (through each row's EOS) of a hand-written batched KV-cache sampling loop."""
    from transformers import DynamicCache

    n_tok = 0
    for b, start in enumerate(range(0, len(prompt_ids), batch_size)):
        chunk = prompt_ids[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, p in enumerate(chunk):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        torch.manual_seed(seed * 1_000_003 + b)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                       use_cache=True).logits[:, -1]
        done = torch.zeros(len(chunk), dtype=torch.bool)
        last = pos[:, -1]
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits.float() / temperature, -1)
            sp, si = probs.sort(-1, descending=True)
            sp[(sp.cumsum(-1) - sp) > top_p] = 0
            nxt = si.gather(-1, torch.multinomial(sp, 1))[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            n_tok += int((~done).sum())
            done |= nxt == eos
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((len(chunk), 1), dtype=torch.long)], -1)
            last = last + 1
            logits = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=last[:, None],
                           past_key_values=cache, use_cache=True).logits[:, -1]
    return n_tok


def stage_shapes(args) -> None:
    from lib import model as modellib

    P = load(PARAMS_DIR / "tiny.yaml")
    threads = P.run.threads or 2
    torch.set_num_threads(threads)
    model, tok = modellib.load(args.model, device=torch.device("cpu"))
    model.eval()
    E = P.eval
    n = E.n_samples
    texts = [p.problem for p in problems.generate(args.prompts, seed=12345)]
    encoded = [tok(chat.prompt_text(tok, t), add_special_tokens=False)["input_ids"] for t in texts]
    # the sampler's own order (sorted by length), so both arms see the same batches
    jobs = sorted([e for e in encoded for _ in range(n)], key=len)
    print(f"{args.model}: {len(texts)} problems x {n} samples, batch {E.batch_size}, T={E.temperature}, "
          f"top-p {E.top_p}, max_new_tokens {E.max_new_tokens}, {threads} threads")
    with torch.inference_mode():  # warm-up: first calls pay one-off kernel and allocator costs
        bare_kv_loop(model, jobs[:E.batch_size], eos=tok.eos_token_id, pad=tok.pad_token_id,
                     temperature=E.temperature, top_p=E.top_p, max_new_tokens=16, batch_size=E.batch_size)
        sampling.generate_ids(model, jobs[:E.batch_size], eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                              temperature=E.temperature, top_p=E.top_p, max_new_tokens=16, batch_size=E.batch_size)
    rates = {"bare_kv_loop": [], "shared_sampler": []}
    order = list(rates)
    for r in range(args.rounds):
        for arm in order:
            t = time.perf_counter()
            with torch.inference_mode():
                if arm == "bare_kv_loop":
                    n_tok = bare_kv_loop(model, jobs, eos=tok.eos_token_id, pad=tok.pad_token_id,
                                         temperature=E.temperature, top_p=E.top_p,
                                         max_new_tokens=E.max_new_tokens, batch_size=E.batch_size, seed=r)
                else:
                    outs = sampling.generate_ids(model, jobs, eos_token_id=tok.eos_token_id,
                                                 pad_token_id=tok.pad_token_id, temperature=E.temperature,
                                                 top_p=E.top_p, max_new_tokens=E.max_new_tokens,
                                                 batch_size=E.batch_size, seed=r)
                    n_tok = sum(len(ids) for ids, _ in outs)
            sec = time.perf_counter() - t
            rates[arm].append(n_tok / sec)
            print(f"round {r + 1} {arm}: {n_tok:,} tokens in {sec:.1f} s = {n_tok / sec:,.0f} tok/s", flush=True)
        order.reverse()
    ratio = statistics.median(a / b for a, b in zip(rates["shared_sampler"], rates["bare_kv_loop"]))
    print(f"bare_kv_loop_tokens_per_s: {statistics.median(rates['bare_kv_loop']):,.0f} tok/s (1.00x)")
    print(f"shared_sampler_tokens_per_s: {statistics.median(rates['shared_sampler']):,.0f} tok/s "
          f"({ratio:.2f}x bare KV-cache loop)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a trained checkpoint folder (with --stage-shapes)")
    ap.add_argument("--stage-shapes", action="store_true", help="07_eval's shapes: see the docstring")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    args = ap.parse_args()
    if args.stage_shapes:
        if not args.model:
            ap.error("--stage-shapes needs --model (a trained checkpoint, e.g. outputs/tiny/04_sft/model)")
        return stage_shapes(args)
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
