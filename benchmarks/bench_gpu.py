"""GPU rows: training MFU and vLLM generation tokens/s of a random-init Qwen2.5-0.5B-config model in bf16.

    .venv/bin/python benchmarks/bench_gpu.py [--batch 8] [--seq 1024] [--steps 10] [--prompts 256]
                                            [--new-tokens 256] [--peak-tflops auto]

Without CUDA it prints why and exits 0 (nothing is measured on CPU). With CUDA:

- ``train_mfu``: a bare bf16 training loop (AdamW, ``model(input_ids, labels).loss.backward()``)
  on random tokens, ``--batch`` x ``--seq``; achieved FLOP/s = tokens/s x (6 N + 12 L h s) (N
  non-embedding parameters plus the tied LM head, the attention term of Chinchilla's accounting)
  divided by the GPU's dense bf16 peak (a table by device name, or ``--peak-tflops``).
- ``hf_generate_tokens_per_s`` (baseline) and ``vllm_tokens_per_s``: the same ``--prompts`` random
  prompts of 64 tokens, ``--new-tokens`` each with ``ignore_eos`` / ``min_new_tokens`` so both
  generate exactly the same number of tokens; transformers ``generate`` in batches of ``--prompts``
  vs vLLM's offline ``LLM.generate``. vLLM is an optional extra (``pip install -e .[vllm]``); without
  it that row is skipped with a message.

The model: Qwen2.5-0.5B's published configuration (hidden 896, 24 layers, 14 heads / 2 KV heads,
intermediate 4864, vocab 151,936, tied embeddings), built from the config (no download), random init:
speed does not depend on the weights. Prints ``name: value (ratio vs baseline)``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time


import torch  # noqa: E402

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  bos_token_id=151643, eos_token_id=151645)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(name: str, override: str) -> float | None:
    if override != "auto":
        return float(override)
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v * (0.76 if key == "H100" and "PCIe" in name else 1.0)  # H100 PCIe: 756 TFLOPs
    return None


def build(dtype):
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(**QWEN25_05B)
    return AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa").cuda(), cfg


def train_mfu(args) -> None:
    model, cfg = build(torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    n_params = sum(p.numel() for p in model.parameters())  # tied embedding counted once = the LM head matmul
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq), device="cuda")
    times = []
    for i in range(args.steps + 2):  # 2 warm-up steps
        torch.cuda.synchronize()
        t = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    tps = args.batch * args.seq / sec
    # embeddings are a lookup (no FLOPs) but the tied LM head is a matmul: N includes it once
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * args.seq
    achieved = tps * flops_per_token / 1e12
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    mfu = f"{achieved / peak:.1%} MFU of {peak:.0f} TFLOP/s bf16 peak" if peak else "peak unknown: pass --peak-tflops"
    print(f"train_tokens_per_s: {tps:,.0f} tok/s ({args.batch}x{args.seq}, median of {args.steps} steps, "
          f"{n_params / 1e6:.0f}M params, {name})")
    print(f"train_mfu: {achieved:.0f} TFLOP/s achieved ({mfu})")
    del model, opt
    torch.cuda.empty_cache()


def generation(args) -> None:
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 150000, (args.prompts, 64), generator=g).tolist()
    model, cfg = build(torch.bfloat16)
    model.eval()
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=True, temperature=1.0,
              top_p=1.0, top_k=0, pad_token_id=0)
    ids = torch.tensor(prompts, device="cuda")
    with torch.inference_mode():
        model.generate(input_ids=ids[:8], attention_mask=torch.ones_like(ids[:8]), **{**kw, "max_new_tokens": 8,
                                                                                     "min_new_tokens": 8})
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        torch.cuda.synchronize()
    hf = (out.shape[1] - ids.shape[1]) * out.shape[0] / (time.perf_counter() - t)
    print(f"hf_generate_tokens_per_s: {hf:,.0f} tok/s (1.00x; baseline, batch {args.prompts}, "
          f"{args.new_tokens} new tokens each)")
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vllm_tokens_per_s: skipped (vllm is not installed: pip install -e .[vllm])")
        return
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        del model
        torch.cuda.empty_cache()
        llm = LLM(model=d, skip_tokenizer_init=True, dtype="bfloat16", gpu_memory_utilization=0.5, seed=0)
        sp = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, ignore_eos=True,
                            temperature=1.0, top_p=1.0, detokenize=False)
        llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:8]], sp, use_tqdm=False)
        t = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp, use_tqdm=False)
        sec = time.perf_counter() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    v = n / sec
    print(f"vllm_tokens_per_s: {v:,.0f} tok/s ({v / hf:.2f}x vs hf generate)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--peak-tflops", default="auto")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu: skipped (torch sees no CUDA device; this benchmark measures GPU training MFU and vLLM "
              "generation only). Nothing measured.")
        return 0
    import transformers
    transformers.logging.set_verbosity_error()
    train_mfu(args)
    generation(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
