"""Rollout-DPO variants from one SFT model, behind LOG.md (2026-12-02).

``pairs``: on-policy pairs from a run's SFT model, sampled at a chosen temperature (the stage
samples at ``dpo.on_policy_temperature``, 1.0 in tiny):

    .venv/bin/python -m experiments.dpo_variants pairs --run /tmp/runs/sftB/tiny --temperature 0.6 \\
        --problems 1000 --out /tmp/pairs_t06.parquet

``train``: DPO from that SFT model on a pairs file (or the stage's own ``05_rollout_dpo/pairs.parquet``)
with the stage's config (``params/tiny.yaml`` ``dpo``) except ``--lr``, ``--steps``, ``--beta``, and
``--nll`` (> 0 adds TRL's ``sft`` loss on the chosen answer with that weight, as iterative RPO):

    .venv/bin/python -m experiments.dpo_variants train --run /tmp/runs/sftB/tiny \\
        --pairs /tmp/pairs_t06.parquet --lr 5e-5 --nll 1.0 --out /tmp/dpoexp/t06rpo

Evaluate the saved model with ``python -m lib.evaluation --checkpoint OUT/model --sets synthetic
--n-samples 8 --n-runs 8``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib import dpo, evaluation, params, sampling
from lib import model as modellib

TINY = Path(__file__).resolve().parents[1] / "params" / "tiny.yaml"


def make_pairs(run: Path, temperature: float, n_problems: int, out: Path) -> None:
    import pandas as pd
    P = params.load(TINY)
    source = pd.read_parquet(run / "02_tag_data" / "dpo_source.parquet")
    model, tok = modellib.load(run / "04_sft" / "model", device="cpu")
    sampler = sampling.HFSampler(model, tok, temperature=temperature, top_p=1.0, max_new_tokens=P.dpo.max_length,
                                 batch_size=64)
    with evaluation.make_verifier(P.verify) as verifier:
        rollouts = dpo.on_policy_rollouts(sampler, source, verifier, n=P.dpo.on_policy_samples, seed=P.run.seed,
                                          max_problems=n_problems)
    pairs, _ = dpo.build_pairs({"on_policy": rollouts}, P.dpo.pairs_per_problem, P.dpo.length_match, seed=P.run.seed)
    print(f"{len(rollouts)} samples, {rollouts.correct.eq(True).mean():.1%} correct -> {len(pairs)} pairs")
    pairs.to_parquet(out)


def train_and_save(run: Path, pairs, section, out: Path, nll: float = 0.0, train_seed: int | None = None) -> None:
    """DPO from the run's SFT model on ``pairs`` with the params ``dpo`` ``section``; saves ``out/model``.
    ``train_seed``: the trainer's seed (data order) when not the run's; the held-out split keeps the run's."""
    import torch
    P = params.load(TINY)
    train_pairs, held = dpo.split_heldout(pairs, section.heldout_share, seed=P.run.seed)
    sft = run / "04_sft" / "model"
    model, tok = modellib.load(sft, device="cpu")
    ref, _ = modellib.load(sft, device="cpu")
    model.train()
    cfg = dpo.dpo_config(section, out / "trainer", device=torch.device("cpu"), dtype=torch.float32,
                         seed=P.run.seed if train_seed is None else train_seed)
    if nll > 0:
        cfg.loss_type, cfg.loss_weights = ["sigmoid", "sft"], [1.0, nll]
    stats = dpo.fit_dpo(model, ref, tok, train_pairs, held, cfg)
    print({k: v for k, v in stats.items() if k.startswith("heldout")})
    modellib.save(model, tok, out / "model")


def train(run: Path, pairs_path: Path, out: Path, lr: float, steps: int, beta: float, nll: float) -> None:
    import pandas as pd
    section = params.load(TINY).dpo.model_copy(update={"lr": lr, "max_steps": steps, "beta": beta})
    train_and_save(run, pd.read_parquet(pairs_path), section, out, nll=nll)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pairs")
    p.add_argument("--run", type=Path, required=True, help="a run folder with 02_tag_data and 04_sft")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--problems", type=int, default=1000)
    p.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--run", type=Path, required=True)
    t.add_argument("--pairs", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--lr", type=float, default=5e-5)
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--beta", type=float, default=0.1)
    t.add_argument("--nll", type=float, default=0.0)
    a = ap.parse_args()
    if a.cmd == "pairs":
        make_pairs(a.run, a.temperature, a.problems, a.out)
    else:
        train(a.run, a.pairs, a.out, a.lr, a.steps, a.beta, a.nll)


if __name__ == "__main__":
    main()
