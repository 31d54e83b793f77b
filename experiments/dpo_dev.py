"""Rollout-DPO variants from one SFT model, measured on a dev split (issue 21's DPO lever).

Trains DPO from a run's SFT model on its stage's on-policy pairs (``05_rollout_dpo/pairs.parquet``),
or on a pairs file, with ``params/tiny.yaml``'s ``dpo`` config except the options given, and scores
the SFT model and the result on the dev problems of ``experiments.rl_stream`` (generator problems of
the training split with a seed of their own, none in the run's training data; the test split is
never read): pass@1 and verified pass@1, the same sampling seeds, paired per problem.

``--verified-chosen`` keeps only the pairs whose chosen answer writes no false arithmetic
statement; ``--nll W`` adds TRL's ``sft`` loss on the chosen answer with weight W (iterative RPO).

    .venv/bin/python -m experiments.dpo_dev --run outputs/tiny --name v1 --verified-chosen --nll 1 --lr 5e-5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from experiments.dpo_variants import train_and_save
from experiments.rl_stream import dev_eval, dev_items
from lib import evaluation, metrics, params, problems
from lib import model as modellib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder with 02_tag_data, 04_sft, 05_rollout_dpo")
    ap.add_argument("--name", default="variant")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dpo_dev"))
    ap.add_argument("--pairs", type=Path, default=None)
    ap.add_argument("--verified-chosen", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--nll", type=float, default=0.0)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="the trainer's seed (data order); the dev problems and sampling seeds stay the run's")
    add_dev_arguments(ap)
    a = ap.parse_args(argv)
    P = params.load("params/tiny.yaml")
    seed = P.run.seed
    torch.manual_seed(seed)
    out = a.out / a.name
    out.mkdir(parents=True, exist_ok=True)
    pairs = pd.read_parquet(a.pairs or a.run / "05_rollout_dpo" / "pairs.parquet")
    n_all = len(pairs)
    if a.verified_chosen:
        pairs = pairs[[problems.arithmetic_slips(t)[1] == 0 for t in pairs["chosen"]]].reset_index(drop=True)
    section = P.dpo.model_copy(update={"lr": a.lr, "epochs": a.epochs, "beta": a.beta, "max_steps": -1})
    t0 = time.perf_counter()
    train_and_save(a.run, pairs, section, out, nll=a.nll, train_seed=a.train_seed)
    train_s = time.perf_counter() - t0
    result = {"name": a.name, "pairs": len(pairs), "pairs_before_filter": n_all, "verified_chosen": a.verified_chosen,
              "lr": a.lr, "epochs": a.epochs, "beta": a.beta, "nll": a.nll, "train_seed": a.train_seed,
              "train_s": round(train_s, 1), **score_against_sft(a.run, out / "model", P, a.out, a.dev, a.dev_samples)}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def add_dev_arguments(ap: argparse.ArgumentParser) -> None:
    """The dev split's size options, read by :func:`score_against_sft`."""
    ap.add_argument("--dev", type=int, default=400, help="dev problems")
    ap.add_argument("--dev-samples", type=int, default=4, help="samples per dev problem")


def score_against_sft(run: Path, model_dir: Path, P, cache_dir: Path, n_dev: int, n_samples: int) -> dict:
    """The run's SFT model and ``model_dir`` on ``n_dev`` dev problems x ``n_samples`` (the same sampling
    seeds), pass@1 and verified pass@1 before/after and their paired differences. The SFT side is cached
    in ``cache_dir`` by size: use one cache folder per run."""
    seed = P.run.seed
    seen = set(pd.read_parquet(run / "02_tag_data" / "tagged.parquet")["problem"])
    dev = dev_items(n_dev, seed + 7919, seen, P)
    with evaluation.make_verifier(P.verify) as verifier:
        cache = cache_dir / f"sft_dev_{n_dev}_{n_samples}.parquet"
        if cache.exists():
            before = evaluation.summarize(pd.read_parquet(cache), verifier, n_runs=n_samples, seed=seed)
        else:
            sft, tok = modellib.load(run / "04_sft" / "model", device=torch.device("cpu"))
            before_records, before = dev_eval(sft, tok, dev, verifier, n_samples, seed)
            before_records.to_parquet(cache)
        model, tok = modellib.load(model_dir, device=torch.device("cpu"))
        _, after = dev_eval(model, tok, dev, verifier, n_samples, seed)
    d = metrics.paired_difference(after["pass1_per_problem"], before["pass1_per_problem"], seed=seed)
    dv = metrics.paired_difference(after["verified_pass1_per_problem"], before["verified_pass1_per_problem"], seed=seed)
    return {"dev_before": {"pass1": before["pass1"]["mean"], "verified": before["verified_pass1"]["mean"]},
            "dev_after": {"pass1": after["pass1"]["mean"], "verified": after["verified_pass1"]["mean"]},
            "paired_pass1": d.to_dict(), "paired_verified": dv.to_dict()}


if __name__ == "__main__":
    raise SystemExit(main())
