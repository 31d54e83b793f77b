"""Rollout DPO with the teacher's correct rollout as the chosen answer and the SFT model's own wrong
sample as the rejected one, measured on a dev split (issue 21's DPO lever, session 13).

The stage's on-policy pairs need a problem where the SFT model was both right and wrong; the
problems it never solves give no pair, and they are where it lacks competence. Here the chosen
answer can come from the teacher (its correct rollouts of the same problem, in ``dpo_source``),
so those problems give pairs too. Variants (``--variant``):

- ``on_policy``: the stage's pairs (verified chosen), the baseline;
- ``mixed``: chosen = a teacher-correct rollout, rejected = an on-policy wrong sample, every problem
  with a wrong sample;
- ``on_policy+unsolved``: the stage's pairs, plus mixed pairs for the problems the model never solved.

Trains with ``params/tiny.yaml``'s ``dpo`` section (NLL weight, lr, epochs) and scores SFT and the
result on ``experiments.rl_stream``'s dev problems with the same sampling seeds, paired per problem.

    .venv/bin/python -m experiments.dpo_mixed --run outputs/tiny --variant mixed
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from experiments.dpo_dev import add_dev_arguments, score_against_sft
from experiments.dpo_variants import train_and_save
from lib import dpo, evaluation, params, sampling
from lib import model as modellib

VARIANTS = ("on_policy", "mixed", "on_policy+unsolved")


def rollouts(run: Path, P, cache: Path) -> pd.DataFrame:
    """The stage's on-policy samples: the same problems, count, temperature and seed as 05."""
    if cache.exists():
        return pd.read_parquet(cache)
    source = pd.read_parquet(run / "02_tag_data" / "dpo_source.parquet")
    model, tok = modellib.load(run / "04_sft" / "model", device="cpu")
    sampler = sampling.HFSampler(model, tok, temperature=P.dpo.on_policy_temperature, top_p=1.0,
                                 max_new_tokens=P.dpo.max_length, batch_size=64)
    with evaluation.make_verifier(P.verify) as verifier:
        ro = dpo.on_policy_rollouts(sampler, source, verifier, n=P.dpo.on_policy_samples, seed=P.run.seed,
                                    max_problems=P.dpo.on_policy_problems)
    ro.to_parquet(cache)
    return ro


def variant_pairs(variant: str, ro: pd.DataFrame, teacher: pd.DataFrame, P) -> pd.DataFrame:
    seed, k, lm = P.run.seed, P.dpo.pairs_per_problem, P.dpo.length_match
    on, _ = dpo.build_pairs({"on_policy": ro}, k, lm, seed=seed)
    on, _ = dpo.drop_lucky_chosen(on)
    if variant == "on_policy":
        return on
    wrong = ro[ro.correct.eq(False)]
    if variant == "on_policy+unsolved":
        solved = set(ro.loc[ro.correct.eq(True), "problem_id"])
        wrong = wrong[~wrong.problem_id.isin(solved)]
    good = teacher[teacher.correct.eq(True) & teacher.problem_id.isin(set(wrong.problem_id))]
    cols = ["problem_id", "problem", "answer", "text", "correct", "length", "tag_difficulty", "tag_domain"]
    mixed, _ = dpo.build_pairs({"teacher_chosen": pd.concat([good[cols], wrong[cols]], ignore_index=True)}, k, lm,
                               seed=seed)
    mixed, _ = dpo.drop_lucky_chosen(mixed)
    return mixed if variant == "mixed" else pd.concat([on, mixed], ignore_index=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--variant", choices=VARIANTS, required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp/dpo_mixed"))
    add_dev_arguments(ap)
    a = ap.parse_args(argv)
    P = params.load("params/tiny.yaml")
    seed = P.run.seed
    torch.manual_seed(seed)
    a.out.mkdir(parents=True, exist_ok=True)
    ro = rollouts(a.run, P, a.out / "on_policy_rollouts.parquet")
    teacher = pd.read_parquet(a.run / "02_tag_data" / "dpo_source.parquet")
    pairs = variant_pairs(a.variant, ro, teacher, P)
    out = a.out / a.variant.replace("+", "_")
    t0 = time.perf_counter()
    train_and_save(a.run, pairs, P.dpo.model_copy(update={"max_steps": -1}), out, nll=P.dpo.nll_weight)
    train_s = time.perf_counter() - t0
    result = {"variant": a.variant, "pairs": len(pairs), "train_s": round(train_s, 1),
              "sources": pairs["source"].value_counts().to_dict(),
              **score_against_sft(a.run, out / "model", P, a.out, a.dev, a.dev_samples)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
