"""Where one RL (GRPO) step's time goes: generation vs reward checking vs the rest, through lib.rl.

    .venv/bin/python benchmarks/bench_rl.py [--steps 3] [--params tiny] [--threads 1] [--trl-generate]

A tiny GRPO run with ``lib.rl.run_grpo`` on a scratch model (the params file's architecture,
random init; speed does not depend on the weights) and its ``rl`` section (tiny: 16 prompts x 4
completions per step, completions up to 256 tokens, beta 0 so no reference model is scored; the
real-scale params keep 0.001: ``--beta 0.001`` prices the reference forward),
``--steps`` steps, no held-out tracker, checkpoints off. Reported from ``summary["timings"]``,
per step: ``generate_s`` (completions), ``reward_s`` (the verifiable reward: math-verify),
``step_s`` (the whole ``training_step``: generation + reward + reference/policy log-probs +
loss, backward) and the rest (``step_s - generate_s - reward_s``), each with its share of the step.

Plain GRPO (``tricks=False``): an untrained model never answers, so every group is all -1 and the
tricks would drop every completion from the loss (no forward/backward at all), which would price
a step that never happens in real training. Plain GRPO trains on every completion (advantage 0,
same compute as a real step).

Baseline for generation, same run, opt-in (``--trl-generate``; slow: on 2026-11-22 it had not finished
its 3 steps after 4.5 minutes on the loaded 2-core machine, against 42 s for the whole run above,
and was stopped): the same GRPO run with TRL's
own generation path (``GRPOTrainer._generate_single_turn``: one left-padded ``generate`` call over
the whole generation batch) in place of the shared sampler (``lib.sampling.generate_ids``: prompts
sorted by length, batches of 64). Prints ``name: value (ratio vs baseline)``.

``--bare``: the update against its bare limit, on the very batches the trainer trained on. The
trainer's update is the step minus generation and checking (reference and policy log-probs, loss,
backward, optimizer step, TRL's bookkeeping); the bare GRPO step on each captured batch is one
policy forward, one reference forward without gradients when beta > 0, the per-token loss
(``-exp(logp - logp.detach()) * advantage + beta * KL``, each sequence's mean, then the batch mean),
backward and an AdamW step. ``--model DIR`` starts from a trained checkpoint (and its tokenizer)
instead of a scratch model, so completions have the stage's lengths. Two trainer arms run on the
same prompts and seeds: ``capture_entropy`` (TRL's fused head computing each token's entropy for its
``entropy`` metric, as before 2026-12-03) and ``capture`` (the default: log-probabilities only, bit
for bit the same weights); each is printed against the bare step on the captured batches:

    .venv/bin/python benchmarks/bench_rl.py --model outputs/tiny/05_rollout_dpo/model --bare --steps 4 --threads 2 --rounds 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


import pandas as pd  # noqa: E402
import torch  # noqa: E402
from trl import GRPOTrainer  # noqa: E402

from lib import chat, problems, rl  # noqa: E402
from lib.model import build_scratch  # noqa: E402
from lib.params import load  # noqa: E402
from lib.paths import PARAMS_DIR  # noqa: E402
from lib.tokenizer import train_tokenizer  # noqa: E402
from lib.verify import Verifier  # noqa: E402


class TRLGenerateTrainer(rl.RecipeGRPOTrainer):
    """The recipe's trainer with TRL's own generation path (the baseline), timed the same way."""

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        start = time.perf_counter()
        out = GRPOTrainer._generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                                has_tool_images)
        self.timings["generate_s"] += time.perf_counter() - start
        return out


class CapturingTrainer(rl.RecipeGRPOTrainer):
    """The recipe's trainer, keeping a copy of every batch its loss is computed on (for ``--bare``)."""

    captured: list[dict] = []
    token_entropy = False  # True: TRL's head computing each token's entropy for its metric (the old path)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, token_entropy=type(self).token_entropy, **kwargs)

    def _compute_loss(self, model, inputs):
        CapturingTrainer.captured.append({k: v.detach().clone() for k, v in inputs.items()
                                          if isinstance(v, torch.Tensor)})
        return super()._compute_loss(model, inputs)


def bare_grpo_step(model, ref, batch: dict, opt, *, beta: float, temperature: float) -> None:
    """One bare GRPO update on a batch as TRL builds it (left-padded prompts, completions, masks,
    advantages): policy forward, reference forward, per-token loss, backward, AdamW step."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    n_prompt, comp = batch["prompt_ids"].size(1), batch["completion_ids"]
    cm = batch["completion_mask"].float()

    def logps(m):
        logits = m(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, n_prompt - 1:-1] / temperature
        return logits.log_softmax(-1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)

    lp = logps(model)
    per_token = -torch.exp(lp - lp.detach()) * batch["advantages"].unsqueeze(1)
    if beta > 0:
        with torch.no_grad():
            ref_lp = logps(ref)
        per_token = per_token + beta * (torch.exp(ref_lp - lp) - (ref_lp - lp) - 1)
    loss = ((per_token * cm).sum(1) / cm.sum(1).clamp(min=1)).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def run_bare(base, batches: list[dict], section) -> float:
    """Seconds of bare GRPO updates over ``batches`` (a fresh copy of ``base``; the reference is ``base``)."""
    import copy

    model, ref = copy.deepcopy(base).train(), copy.deepcopy(base).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=section.lr)
    t0 = time.perf_counter()
    for b in batches:
        bare_grpo_step(model, ref, b, opt, beta=section.beta, temperature=section.temperature_start)
    return time.perf_counter() - t0


def run(arm: str, base, tok, prompts, section, verifier, seed: int) -> dict:
    import copy

    model = copy.deepcopy(base)
    saved = rl.RecipeGRPOTrainer
    if arm == "trl_generate":
        rl.RecipeGRPOTrainer = TRLGenerateTrainer  # run_grpo builds whatever this name holds
    elif arm in ("capture", "capture_entropy"):
        CapturingTrainer.captured = []
        CapturingTrainer.token_entropy = arm == "capture_entropy"
        rl.RecipeGRPOTrainer = CapturingTrainer
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            trainer, summary = rl.run_grpo(model, tok, prompts, section, out, verifier=verifier,
                                           device=torch.device("cpu"), dtype=torch.float32, seed=seed, tricks=False,
                                           resume=False)
            summary["wall_s"] = time.perf_counter() - t0
            lengths = [r.get("completions/mean_length") for r in summary["log"] if "completions/mean_length" in r]
            summary["mean_completion_tokens"] = sum(lengths) / len(lengths) if lengths else float("nan")
    finally:
        rl.RecipeGRPOTrainer = saved
    return summary


def breakdown(summary: dict, batch_size: int) -> tuple[float, float, float]:
    """Print the per-step split of a run's ``summary["timings"]``; returns (step s, generate s, tok/s)."""
    t = summary["timings"]
    n = max(int(t.get("steps", 0)), 1)
    step, gen, rew = t.get("step_s", 0) / n, t.get("generate_s", 0) / n, t.get("reward_s", 0) / n
    rest = step - gen - rew
    print(f"rl_step_seconds: {step:.2f} s per step (1.00x; mean of {n} steps)")
    print(f"rl_generate_seconds: {gen:.2f} s per step ({gen / step:.0%} of the step)")
    print(f"rl_reward_seconds: {rew:.3f} s per step ({rew / step:.1%} of the step)")
    print(f"rl_logprobs_loss_backward_seconds: {rest:.2f} s per step ({rest / step:.0%} of the step)")
    toks = summary["mean_completion_tokens"] * batch_size
    print(f"rl_generate_tokens_per_s: {toks / gen:,.0f} tok/s (shared sampler inside GRPO)", flush=True)
    return step, gen, toks / gen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--params", default="tiny", help="params/NAME.yaml: model architecture and rl section")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trl-generate", action="store_true", help="also run the (slow) TRL-generation baseline")
    ap.add_argument("--bare", action="store_true", help="the update against a bare GRPO step on the same batches")
    ap.add_argument("--rounds", type=int, default=1, help="--bare: rounds of the two trainer arms, alternating order")
    ap.add_argument("--model", type=Path, help="a trained checkpoint to start from (default: a scratch model)")
    ap.add_argument("--beta", type=float, default=None, help="KL coefficient (default: the params file's rl.beta)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import datasets
    import transformers
    import warnings
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()

    P = load(PARAMS_DIR / f"{args.params}.yaml")
    ps = problems.generate(400, seed=0, split="train")
    if args.model:
        from lib import model as modellib
        base, tok = modellib.load(args.model, device=torch.device("cpu"))
    else:
        tok = train_tokenizer([chat.user_content(p.problem) + "\n" + problems.cot_solution(p) for p in ps],
                              P.model.vocab_size)
        torch.manual_seed(0)
        base = build_scratch(P.model, tok)
    section = P.rl.model_copy(update={"max_steps": args.steps, "checkpoint_every": 0,
                                      **({} if args.beta is None else {"beta": args.beta})})
    n_prompts = section.batch_size // section.num_generations * args.steps
    prompts = pd.DataFrame({"problem": [p.problem for p in ps[:n_prompts]], "answer": [p.answer for p in ps[:n_prompts]]})
    print(f"model: {sum(p.numel() for p in base.parameters()):,} params "
          f"({args.model or f'{args.params}.yaml architecture, random init'}), "
          f"{torch.get_num_threads()} threads; rl: {section.batch_size} completions/step "
          f"({section.num_generations} per prompt), max {section.max_length} new tokens, beta {section.beta}, "
          f"loss {section.loss_type}, {args.steps} steps, plain GRPO")

    # --bare alternates the two trainer arms (--rounds times), so neither always runs first (cold)
    arms = (["capture_entropy", "capture", "capture", "capture_entropy"] * args.rounds)[:2 * args.rounds] \
        if args.bare else ["shared_sampler"]
    arms += ["trl_generate"] if args.trl_generate else []
    res, ratios = {}, {}
    with Verifier(workers=P.verify.workers) as verifier:
        verifier.check("1", "1")  # worker start-up and math-verify imports: not part of any step
        for arm in arms:
            res[arm] = run(arm, base, tok, prompts, section, verifier, P.run.seed)
            t = res[arm]["timings"]
            print(f"{arm}: {t.get('steps', 0)} steps, step_s {t.get('step_s', 0):.1f}, generate_s "
                  f"{t.get('generate_s', 0):.1f}, reward_s {t.get('reward_s', 0):.2f}, run_grpo wall "
                  f"{res[arm]['wall_s']:.1f} s, mean completion {res[arm]['mean_completion_tokens']:.0f} tokens",
                  flush=True)
            if arm in ("shared_sampler", "capture", "capture_entropy"):
                step, gen, tps = breakdown(res[arm], section.batch_size)
            if arm.startswith("capture"):
                batches = list(CapturingTrainer.captured)
                t = res[arm]["timings"]
                update = (t["step_s"] - t["generate_s"] - t.get("reward_s", 0)) / max(int(t["steps"]), 1)
                bare_s = run_bare(base, batches, section) / args.steps
                rows = sum(int(b["completion_ids"].size(0)) for b in batches) / args.steps
                width = sum(int(b["prompt_ids"].size(1) + b["completion_ids"].size(1)) for b in batches) / len(batches)
                print(f"bare_grpo_update_seconds: {bare_s:.2f} s per step [baseline] ({len(batches)} batches, "
                      f"{rows:.0f} sequences per step, mean width {width:.0f} tokens)")
                what = "with TRL's entropy metric" if arm == "capture_entropy" else "the default, no entropy pass"
                print(f"rl_update_vs_bare[{arm}]: {bare_s / update:.2f}x (stage update {update:.2f} s per step, "
                      f"{what})", flush=True)
                ratios.setdefault(arm, []).append(bare_s / update)
    for arm, r in ratios.items():
        print(f"rl_update_vs_bare_median[{arm}]: {sorted(r)[len(r) // 2]:.2f}x over {len(r)} rounds "
              f"({', '.join(f'{x:.2f}' for x in r)})")

    if "trl_generate" in res:
        b = res["trl_generate"]["timings"]
        nb = max(int(b.get("steps", 0)), 1)
        bgen, bstep = b.get("generate_s", 0) / nb, b.get("step_s", 0) / nb
        btoks = res["trl_generate"]["mean_completion_tokens"] * section.batch_size
        print(f"trl_generate_seconds: {bgen:.2f} s per step ({bgen / bstep:.0%} of its step; "
              f"{btoks / bgen:,.0f} tok/s) [baseline]")
        print(f"shared_sampler_generate_speedup: {tps / (btoks / bgen):.2f}x tok/s vs TRL's generate "
              f"(step {step:.2f} s vs {bstep:.2f} s: {bstep / step:.2f}x)")
    print(f"total_seconds: {time.perf_counter() - t_start:.0f}")


if __name__ == "__main__":
    main()
