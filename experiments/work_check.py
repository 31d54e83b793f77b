"""Checking the *work*, not only the answer: two measurements behind LOG.md (2026-11-29, evening).

``slips CHECKPOINT ...``: greedy completions of the 200 synthetic test problems (seed 11), and
how many of their arithmetic statements are false (:func:`lib.problems.arithmetic_slips`):

    .venv/bin/python -m experiments.work_check slips /tmp/runs/a/tiny/03_mid_train/model

``dpo --run DIR --out DIR``: rollout DPO from the run's SFT model on the run's own on-policy
pairs (``05_rollout_dpo/pairs.parquet``), keeping only pairs whose *chosen* answer has no false
arithmetic statement (a correct answer reached through a false step is a lucky guess); same
params (``params/tiny.yaml`` ``dpo``) except ``--epochs``/``--lr``. Evaluate the saved model with
``python -m lib.evaluation --checkpoint OUT/model --sets synthetic --n-samples 8 --n-runs 8``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lib import params, problems, sampling
from lib import model as modellib
from experiments.dpo_variants import train_and_save


def slips(checkpoints: list[str]) -> None:
    test = problems.generate(200, seed=11, split="test")
    for path in checkpoints:
        model, tok = modellib.load(path, device="cpu")
        out = sampling.sample(model, tok, [p.problem for p in test], n=1, temperature=0.0, max_new_tokens=256,
                              batch_size=64, seed=1, progress=False)
        counts = [problems.arithmetic_slips(o[0].text) for o in out]
        n_statements, n_false = sum(c[0] for c in counts), sum(c[1] for c in counts)
        all_true = sum(c[1] == 0 for c in counts) / len(counts)
        print(f"{path}: {n_statements} statements, {n_false / max(n_statements, 1):.1%} false; "
              f"{all_true:.1%} of traces all-true")


def clean_dpo(run: Path, out: Path, epochs: float, lr: float) -> None:
    import pandas as pd

    P = params.load(Path(__file__).resolve().parents[1] / "params" / "tiny.yaml")
    pairs = pd.read_parquet(run / "05_rollout_dpo" / "pairs.parquet")
    clean = pairs[pairs.chosen.map(lambda t: problems.arithmetic_slips(t)[1] == 0)].reset_index(drop=True)
    print(f"{len(clean)} of {len(pairs)} pairs have a chosen answer with all-true arithmetic "
          f"({clean.problem_id.nunique()} problems)")
    section = P.dpo.model_copy(update={"max_steps": -1, "epochs": epochs, "lr": lr})
    train_and_save(run, clean, section, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("slips", help="false arithmetic statements in greedy test completions")
    s.add_argument("checkpoints", nargs="+")
    d = sub.add_parser("dpo", help="rollout DPO on the pairs whose chosen answer has all-true arithmetic")
    d.add_argument("--run", type=Path, required=True, help="a run folder with 04_sft and 05_rollout_dpo, e.g. /tmp/runs/a/tiny")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--epochs", type=float, default=3.0)
    d.add_argument("--lr", type=float, default=1e-5)
    a = ap.parse_args()
    if a.cmd == "slips":
        slips(a.checkpoints)
    else:
        clean_dpo(a.run, a.out, a.epochs, a.lr)


if __name__ == "__main__":
    main()
