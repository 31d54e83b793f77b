"""RL variants on tiny, outside the notebook: does any GRPO setting lift held-out accuracy?

Starts from the rollout-DPO model of an existing run (stages 00-05 done), draws a larger RL
candidate pool from that run's tagged data (``subsets.rl_pool``, the same seeded order as 02),
probes it once (cached next to the results), selects prompts with the recipe's tricks and runs
``lib.rl.run_grpo`` with the params of ``params/tiny.yaml`` plus ``--set rl.KEY=VALUE``
overrides. Held-out: the synthetic test set, pass@1 from ``--eval-samples`` samples at T=0.6
(before and after) and greedy accuracy after. ``--reward work`` gives +1 only when the answer
verifies *and* every arithmetic statement of the completion is true
(:func:`lib.problems.arithmetic_slips`); the recipe's reward is ``answer``.

    .venv/bin/python -m experiments.rl_variants --run /tmp/runs/a/tiny --name A --candidates 2000 \\
        --set rl.batch_size=256

``--lucky T`` instead samples 8 completions of 200 selected prompts at temperature T and prints
how many verified answers come with a false arithmetic step (LOG.md, 2026-11-29).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from lib import evaluation, params, problems, rl, sampling, subsets
from lib import model as modellib


class WorkCheckedReward(rl.VerifiableReward):
    """The recipe's reward, except that a verified answer with a false (or no) arithmetic step
    scores as wrong; those are counted as ``lucky``."""

    def __call__(self, prompts=None, completions=None, answer=None, **kwargs) -> list[float]:
        out = []
        for r, c in zip(super().__call__(prompts, completions, answer, **kwargs), completions):
            n, bad = problems.arithmetic_slips(self.text_of(c))
            if r > 0 and (bad or not n):
                self.counts["lucky"] += 1
                r = self.values[False]
            out.append(r)
        return out


def probed_pool(run: Path, n: int, P, model, tokenizer, verifier, cache: Path) -> pd.DataFrame:
    if cache.exists():
        return pd.read_parquet(cache)
    clean = pd.read_parquet(run / "02_tag_data" / "tagged.parquet")
    sft = pd.read_parquet(run / "02_tag_data" / "sft.parquet")
    pool, _ = subsets.rl_pool(clean, exclude_ids=set(sft.problem_id), n=n, seed=P.run.seed)
    sampler = sampling.HFSampler(model, tokenizer, temperature=P.rl.probe_temperature, top_p=1.0,
                                 max_new_tokens=P.rl.max_length, batch_size=64)
    probed = rl.probe(sampler, pool, verifier, k=P.rl.probe_samples, seed=P.run.seed)
    probed.to_parquet(cache)
    return probed


def select(probed, R, seed):
    return rl.select_prompts(probed, prompt_optimization=R.prompt_optimization, max_length_cv=R.max_length_cv,
                             rebalance=R.rebalance, max_pass_rate=R.max_pass_rate, drop_unsolved=R.drop_unsolved,
                             hard_below=R.hard_below, oversample_hard=R.oversample_hard, seed=seed)


def lucky(selected: pd.DataFrame, model, tokenizer, verifier, temperature: float, seed: int) -> dict:
    rows = selected.drop_duplicates("problem").sample(min(200, selected.problem.nunique()), random_state=seed)
    sampler = sampling.HFSampler(model, tokenizer, temperature=temperature, top_p=1.0, max_new_tokens=256,
                                 batch_size=64)
    comps = sampler.sample(rows.problem.tolist(), n=8, seed=seed + 1)
    pairs = [(a, c.text) for a, cs in zip(rows.answer, comps) for c in cs]
    checks = verifier.check_many(pairs)
    slips = [problems.arithmetic_slips(t) for _, t in pairs]
    correct = [ch.equal is True for ch in checks]
    clean = [n > 0 and bad == 0 for n, bad in slips]
    n_ok = sum(correct)
    return {"temperature": temperature, "samples": len(pairs), "pass_rate": n_ok / len(pairs),
            "correct_with_true_steps": sum(c and k for c, k in zip(correct, clean)) / max(n_ok, 1),
            "wrong_with_true_steps": sum((not c) and k for c, k in zip(correct, clean)) / max(len(pairs) - n_ok, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder with 02_tag_data and 05_rollout_dpo")
    ap.add_argument("--name", default="variant")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rl_variants"))
    ap.add_argument("--candidates", type=int, default=2000)
    ap.add_argument("--reward", choices=["answer", "work"], default="answer")
    ap.add_argument("--plain", action="store_true", help="plain GRPO (no tricks, every probed prompt)")
    ap.add_argument("--eval-samples", type=int, default=4)
    ap.add_argument("--lucky", type=float, default=None, metavar="T")
    ap.add_argument("--set", action="append", default=[], metavar="rl.KEY=VALUE")
    a = ap.parse_args(argv)
    P = params.load("params/tiny.yaml", a.set)
    R, seed = P.rl, P.run.seed
    torch.manual_seed(seed)
    device = torch.device("cpu")
    out = a.out / a.name
    out.mkdir(parents=True, exist_ok=True)
    start_dir = a.run / "05_rollout_dpo" / "model"
    with evaluation.make_verifier(P.verify) as verifier:
        model, tok = modellib.load(start_dir, device=device)
        cache = a.out / f"probe_{a.candidates}_{R.probe_samples}_{R.probe_temperature}.parquet"
        probed = probed_pool(a.run, a.candidates, P, model, tok, verifier, cache)
        prompts, selection = select(probed, R, seed)
        if a.lucky is not None:
            print(json.dumps(lucky(prompts, model, tok, verifier, a.lucky, seed)))
            return 0
        if a.plain:
            prompts = probed.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        tracked = evaluation.synthetic_test_set(P.problems.n_test, seed, P.problems.domains, P.problems.levels)
        track = rl.HeldoutTracker(tok, tracked, verifier, every=R.eval_every, n_samples=a.eval_samples,
                                  temperature=0.6, top_p=0.95, max_new_tokens=R.max_length, batch_size=64, seed=seed)
        original = rl.VerifiableReward
        if a.reward == "work":
            rl.VerifiableReward = WorkCheckedReward  # run_grpo builds its reward from this name
        try:
            start = time.perf_counter()
            trainer, summary = rl.run_grpo(model, tok, prompts, R, out / "training", verifier=verifier, device=device,
                                           dtype=torch.float32, seed=seed, tricks=not a.plain, tracker=track,
                                           resume=False)
        finally:
            rl.VerifiableReward = original
        items = problems.generate(P.problems.n_test, seed=seed, split="test", domains=P.problems.domains,
                                  levels=P.problems.levels)
        _, after = evaluation.quick_accuracy(trainer.model, tok, items, verifier, max_new_tokens=R.max_length,
                                             batch_size=64, seed=seed)
    curve = rl.step_curve(summary)
    result = {"name": a.name, "set": a.set, "reward": a.reward, "selection": selection,
              "train_s": round(time.perf_counter() - start, 1), "greedy_after": after["accuracy"],
              "track": pd.DataFrame(track.history).round(4).to_dict("records"),
              "reward_counts": summary["reward_counts"], "reward_by_step": curve["reward"].round(3).tolist()}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
