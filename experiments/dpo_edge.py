"""On-policy DPO pairs from the competence-edge cells only (issue 21's next DPO lever).

The stage samples the SFT model on 600 problems of the tagged pool, wherever they fall; a problem
it always solves or always misses gives no pair. Here the problems are fresh generator problems
from the domain x level cells where the SFT model's dev pass rate is within ``[--low, --high]``
(as RL's stream chooses its cells, from the same dev records: ``experiments.rl_stream``), sampled
``dpo.on_policy_samples`` times at ``dpo.on_policy_temperature`` and paired as the stage pairs
them (``lib.dpo.build_pairs``). The pairs file goes to ``--out``; train and score it with
``experiments.dpo_dev --pairs``:

    .venv/bin/python -m experiments.dpo_edge --run outputs/tiny --problems 600 --out /tmp/dpo_edge/pairs.parquet
    .venv/bin/python -m experiments.dpo_dev --run outputs/tiny --name edge --pairs /tmp/dpo_edge/pairs.parquet \\
        --verified-chosen --nll 1 --lr 5e-5 --epochs 2

The dev records of the SFT model are cached where ``experiments.dpo_dev`` looks for them
(``/tmp/dpo_dev/sft_dev_400_4.parquet``), so the second command reuses them. Fresh problems
exclude the run's training problems and the dev problems; the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from experiments.rl_stream import dev_eval, dev_items, stream
from lib import dpo, evaluation, params, sampling
from lib import model as modellib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run folder with 02_tag_data and 04_sft")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dpo_edge/pairs.parquet"))
    ap.add_argument("--problems", type=int, default=600, help="fresh edge problems to sample (the stage: 600)")
    ap.add_argument("--low", type=float, default=0.2)
    ap.add_argument("--high", type=float, default=0.8)
    ap.add_argument("--dev", type=int, default=400)
    ap.add_argument("--dev-samples", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/dpo_dev"))
    a = ap.parse_args(argv)
    P = params.load("params/tiny.yaml")
    seed = P.run.seed
    torch.manual_seed(seed)
    seen = set(pd.read_parquet(a.run / "02_tag_data" / "tagged.parquet")["problem"])
    dev = dev_items(a.dev, seed + 7919, seen, P)
    model, tok = modellib.load(a.run / "04_sft" / "model", device=torch.device("cpu"))
    t0 = time.perf_counter()
    with evaluation.make_verifier(P.verify) as verifier:
        cache = a.cache / f"sft_dev_{a.dev}_{a.dev_samples}.parquet"
        if cache.exists():
            records = pd.read_parquet(cache)
        else:
            cache.parent.mkdir(parents=True, exist_ok=True)
            records, _ = dev_eval(model, tok, dev, verifier, a.dev_samples, seed)
            records.to_parquet(cache)
        rate = records.groupby(["domain", "level"])["correct"].apply(lambda s: s.eq(True).mean())
        cells = [c for c, r in rate.items() if a.low <= r <= a.high]
        print("cells in the window:", [f"{d} L{lv} {rate[(d, lv)]:.2f}" for d, lv in cells], flush=True)
        fresh = stream(cells, a.problems, seed + 4242, seen | {d["problem"] for d in dev})
        fresh = fresh.assign(problem_id=[f"edge-{i}" for i in range(len(fresh))],
                             difficulty=[f"L{lv}" for lv in fresh["level"]])
        sampler = sampling.HFSampler(model, tok, temperature=P.dpo.on_policy_temperature, top_p=1.0,
                                     max_new_tokens=P.dpo.max_length, batch_size=64)
        rollouts = dpo.on_policy_rollouts(sampler, fresh, verifier, n=P.dpo.on_policy_samples, seed=seed)
    pairs, stats = dpo.build_pairs({"on_policy": rollouts}, P.dpo.pairs_per_problem, P.dpo.length_match, seed=seed)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_parquet(a.out)
    summary = {"cells": [f"{d} L{lv}" for d, lv in cells], "problems": len(fresh),
               "samples_correct": float(rollouts["correct"].eq(True).mean()), "pairs": len(pairs),
               "problems_with_pairs": int(pairs["problem_id"].nunique()), "seconds": round(time.perf_counter() - t0, 1)}
    (a.out.parent / "edge_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
