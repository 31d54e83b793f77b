"""RL on a fresh stream of problems, measured on a dev split: does GRPO lift the tiny model then?

Issue 21's third lever. The stage's RL prompts come from the tagged pool, problems the model
already saw (with the teacher's solution) in mid-training. Here every RL prompt is a new problem
from the generator, used once, drawn from the domain x level cells where the starting model's
pass rate on a **dev split** is between ``--low`` and ``--high`` (the edge of its competence);
all-equal groups are left out of the update (trick 2, as in the stage). The dev split is
generator problems of the training split with a seed of their own, none of them in the run's
training data and none in the stream; the test split is never read.

Before and after: pass@1 and verified pass@1 (``lib.evaluation``: the answer right and every
arithmetic statement true) on the dev problems, the same sampling seeds both times, compared
per problem with a paired bootstrap interval.

    .venv/bin/python -m experiments.rl_stream --run outputs/tiny --name v1 --reward verified \\
        --set rl.lr=1e-4 --steps 20

``--pool`` trains on the stage's own prompt selection instead (the tagged pool, probed and
filtered as 06_rl does), for the same budget, as the comparison arm.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import pandas as pd
import torch

from lib import curriculum, evaluation, metrics, params, problems, rl, sampling
from lib import model as modellib


class PartialCreditReward(rl.VerifiableReward):
    """Per-statement partial credit: +1 for a right answer whose every arithmetic statement is true;
    a right answer with false statements gets ``1 - false/statements`` (0 when all are false); a wrong
    or undecided answer gets ``-1 + 0.5 * true/statements`` (-1 without statements). So completions
    that reach the same verdict are still ranked by how much of their arithmetic holds."""

    def __call__(self, prompts=None, completions=None, answer=None, **kwargs) -> list[float]:
        # the answer-only verdicts (and the counts): +1 right, the wrong/undecided values (< 0) otherwise
        verdicts = super().__call__(prompts=prompts, completions=completions, answer=answer, **kwargs)
        out = []
        for v, c in zip(verdicts, completions):
            n, bad = problems.arithmetic_slips(self.text_of(c))
            if v > 0:
                out.append(1.0 if bad == 0 else 1.0 - bad / n)
            else:
                out.append(-1.0 + (0.5 * (n - bad) / n if n else 0.0))
        return out


def dev_items(n: int, seed: int, exclude: set[str], P) -> list[dict]:
    return curriculum.dev_problems(n, seed, exclude, domains=P.problems.domains, levels=P.problems.levels)


def stream(cells: list[tuple[str, int]], n: int, seed: int, exclude: set[str]) -> pd.DataFrame:
    """``n`` distinct fresh problems spread evenly over ``cells``, none in ``exclude``. The stage's
    ``lib.curriculum.fresh_stream`` splits the count and the exclusions more exactly; this first
    version is kept so that LOG.md's numbers of 2026-12-03 reproduce."""
    per = -(-n // len(cells))
    rows = []
    for i, (d, lv) in enumerate(cells):
        got = [p for p in problems.generate(3 * per, seed=seed + 101 * i, split="train", domains=[d], levels=[lv])
               if p.problem not in exclude][:per]
        rows += [{"problem": p.problem, "answer": p.answer, "domain": d, "level": lv} for p in got]
    random.Random(seed).shuffle(rows)
    return pd.DataFrame(rows[:n])


def dev_eval(model, tok, items, verifier, n_samples: int, seed: int) -> tuple[pd.DataFrame, dict]:
    sampler = sampling.HFSampler(model, tok, temperature=0.6, top_p=0.95, max_new_tokens=256, batch_size=64)
    es = evaluation.EvalSet(name="dev", items=items, source="generator, train split, dev seed")
    records = evaluation.evaluate(sampler, es, verifier, n_samples=n_samples, seed=seed)
    return records, evaluation.summarize(records, verifier, n_runs=n_samples, seed=seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder with 02_tag_data and 05_rollout_dpo")
    ap.add_argument("--name", default="variant")
    ap.add_argument("--out", type=Path, default=Path("/tmp/rl_stream"))
    ap.add_argument("--reward", choices=["answer", "verified", "partial"], default="answer",
                    help="partial: PartialCreditReward below (an experiment, not a params choice)")
    ap.add_argument("--pool", action="store_true", help="the stage's probed, filtered pool instead of a fresh stream")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--low", type=float, default=0.2)
    ap.add_argument("--high", type=float, default=0.8)
    ap.add_argument("--dev", type=int, default=400, help="dev problems")
    ap.add_argument("--dev-samples", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], metavar="rl.KEY=VALUE")
    ap.add_argument("--refill", type=int, default=0, metavar="ROUNDS",
                    help="replace all-equal groups by mixed groups of new stream problems, up to ROUNDS extra "
                         "generation rounds per step (DAPO's dynamic sampling; lib.rl.run_grpo refill_prompts)")
    ap.add_argument("--train-seed", type=int, default=None,
                    help="GRPO's seed (its sampling and order); the dev problems, the stream and the dev sampling "
                         "seeds stay the run's")
    a = ap.parse_args(argv)
    P = params.load("params/tiny.yaml", a.set)
    R, seed = P.rl, P.run.seed
    torch.manual_seed(seed)
    out = a.out / a.name
    out.mkdir(parents=True, exist_ok=True)
    start_dir = a.run / "05_rollout_dpo" / "model"
    seen = set(pd.read_parquet(a.run / "02_tag_data" / "tagged.parquet")["problem"])
    dev = dev_items(a.dev, seed + 7919, seen, P)
    t0 = time.perf_counter()
    with evaluation.make_verifier(P.verify) as verifier:
        model, tok = modellib.load(start_dir, device=torch.device("cpu"))
        cache = a.out / f"dev_before_{a.dev}_{a.dev_samples}.parquet"
        if cache.exists():
            before_records = pd.read_parquet(cache)
            before = evaluation.summarize(before_records, verifier, n_runs=a.dev_samples, seed=seed)
        else:
            before_records, before = dev_eval(model, tok, dev, verifier, a.dev_samples, seed)
            before_records.to_parquet(cache)
        cell_rate = before_records.groupby(["domain", "level"])["correct"].apply(lambda s: s.eq(True).mean())
        cells = [c for c, r in cell_rate.items() if a.low <= r <= a.high]
        n_prompts = a.steps * R.batch_size // R.num_generations
        if a.pool:
            from experiments.rl_variants import probed_pool, select
            probed = probed_pool(a.run, P.subsets.rl_n_problems, P, model, tok, verifier,
                                 a.out / f"probe_{P.subsets.rl_n_problems}.parquet")
            prompts, selection = select(probed, R, seed)
        else:
            prompts = stream(cells, n_prompts, seed + 31337, seen | {d["problem"] for d in dev})
            selection = {"cells": [f"{d} L{lv}" for d, lv in cells], "distinct_prompts": int(prompts.problem.nunique())}
        refill = None
        if a.refill:
            if a.pool:
                raise SystemExit("--refill draws from the stream's cells; it does not combine with --pool")
            refill = stream(cells, a.steps * R.batch_size // R.num_generations * a.refill, seed + 271828,
                            seen | {d["problem"] for d in dev} | set(prompts["problem"]))
            selection["refill_prompts"] = len(refill)
        t1 = time.perf_counter()
        if a.reward == "partial":
            rl.VerifiableReward = PartialCreditReward  # run_grpo builds its reward from this name
        reward = "answer" if a.reward == "partial" else a.reward
        trainer, summary = rl.run_grpo(model, tok, prompts, R.model_copy(update={"max_steps": a.steps, "reward": reward}),
                                       out / "training", verifier=verifier, device=torch.device("cpu"),
                                       dtype=torch.float32, seed=seed if a.train_seed is None else a.train_seed,
                                       tricks=True, resume=False, refill_prompts=refill, refill_rounds=max(a.refill, 1))
        train_s = time.perf_counter() - t1
        _, after = dev_eval(trainer.model, tok, dev, verifier, a.dev_samples, seed)
    d = metrics.paired_difference(after["pass1_per_problem"], before["pass1_per_problem"], seed=seed)
    dv = metrics.paired_difference(after["verified_pass1_per_problem"], before["verified_pass1_per_problem"], seed=seed)
    curve = rl.step_curve(summary)
    groups = summary["groups"]
    result = {"name": a.name, "set": a.set, "train_seed": a.train_seed, "reward": a.reward, "source": "pool" if a.pool else "stream",
              "steps": a.steps, "selection": selection, "train_s": round(train_s, 1),
              "total_s": round(time.perf_counter() - t0, 1),
              "cell_pass_rate": {f"{dd} L{lv}": round(float(r), 3) for (dd, lv), r in cell_rate.items()},
              "dev_before": {"pass1": before["pass1"]["mean"], "verified": before["verified_pass1"]["mean"],
                             "lucky": before["lucky_share"]},
              "dev_after": {"pass1": after["pass1"]["mean"], "verified": after["verified_pass1"]["mean"],
                            "lucky": after["lucky_share"]},
              "paired_pass1": d.to_dict(), "paired_verified": dv.to_dict(),
              "filtered_group_share": sum(g["filtered_groups"] for g in groups) / max(sum(g["groups"] for g in groups), 1),
              "refilled_groups": sum(g.get("refilled_groups", 0) for g in groups),
              "reward_counts": summary["reward_counts"], "reward_by_step": curve["reward"].round(3).tolist()}
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: v for k, v in result.items() if k not in ("cell_pass_rate",)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
