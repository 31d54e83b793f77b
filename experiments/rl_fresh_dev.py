"""Does an RL arm's dev gain hold on problems the choice never saw? A second, larger dev set.

``experiments/rl_stream.py`` chose its settings on one 400-problem dev set, so the best arm's gain
there is biased upward by the choice. This scores the start model (05's DPO model) and the arms'
final checkpoints on a *fresh* dev set from the generator's training split: a seed of its own, none of
its problems in the run's training data, in the first dev set, or in the arms' RL stream. Same
sampling settings and seeds for every model, paired per problem.

    PYTHONPATH=. .venv/bin/python -m experiments.rl_fresh_dev --run outputs/tiny \\
        --arm /tmp/rl_stream/answer_80 --arm /tmp/rl_stream/answer_80_s1 --dev 1000
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from experiments.rl_stream import dev_eval, dev_items, stream
from lib import evaluation, metrics, params
from lib import model as modellib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--arm", type=Path, action="append", default=[],
                    help="an rl_stream output folder (its result.json and training/checkpoint-<steps>)")
    ap.add_argument("--stage", type=Path, action="append", default=[],
                    help="a finished 06_rl stage folder (its model/ and rl_prompts.parquet): the stage's RL model "
                         "from the same DPO start, scored on the same fresh set")
    ap.add_argument("--exclude-arm", type=Path, action="append", default=[],
                    help="an rl_stream folder whose streamed problems are left out of the fresh set, not scored "
                         "(to score new arms on the very set an earlier call drew)")
    ap.add_argument("--exclude-stage", type=Path, action="append", default=[],
                    help="a 06_rl folder whose prompts are left out of the fresh set, not scored")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the JSON goes (default: fresh_dev_<dev>.json beside the first arm or stage)")
    ap.add_argument("--dev", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--first-dev", type=int, default=400, help="the size of rl_stream's dev set, to exclude")
    a = ap.parse_args(argv)
    if not a.arm and not a.stage:
        ap.error("give at least one --arm or --stage")
    P = params.load("params/tiny.yaml")
    seed = P.run.seed
    seen = set(pd.read_parquet(a.run / "02_tag_data" / "tagged.parquet")["problem"])
    first = {d["problem"] for d in dev_items(a.first_dev, seed + 7919, seen, P)}
    streamed = set()
    for arm in a.arm + a.exclude_arm:
        r = json.loads((arm / "result.json").read_text())
        cells = [(c.split(" L")[0], int(c.split(" L")[1])) for c in r["selection"]["cells"]]
        n = r["selection"]["distinct_prompts"]  # what the arm streamed, as it recorded it (its own group size)
        streamed |= set(stream(cells, n, seed + 31337, seen | first)["problem"])
    for st in a.stage + a.exclude_stage:
        streamed |= set(pd.read_parquet(st / "rl_prompts.parquet")["problem"])
    dev = dev_items(a.dev, seed + 104729, seen | first | streamed, P)
    out = {"dev": a.dev, "samples": a.samples, "excluded": {"training": len(seen), "first_dev": len(first),
                                                            "streamed": len(streamed)}}
    with evaluation.make_verifier(P.verify) as verifier:
        model, tok = modellib.load(a.run / "05_rollout_dpo" / "model", device=torch.device("cpu"))
        _, before = dev_eval(model, tok, dev, verifier, a.samples, seed)
        out["before"] = {"pass1": before["pass1"]["mean"], "verified": before["verified_pass1"]["mean"],
                         "lucky": before["lucky_share"]}
        models = []  # (name, checkpoint folder, the first dev set's paired verified change or None)
        for arm in a.arm:
            r = json.loads((arm / "result.json").read_text())
            models.append((arm.name, arm / "training" / f"checkpoint-{r['steps']}", r["paired_verified"]))
        models += [(f"stage:{st}", st / "model", None) for st in a.stage]
        for name, folder, first_dev_verified in models:
            model, tok = modellib.load(folder, device=torch.device("cpu"))
            _, after = dev_eval(model, tok, dev, verifier, a.samples, seed)
            d = metrics.paired_difference(after["pass1_per_problem"], before["pass1_per_problem"], seed=seed)
            dv = metrics.paired_difference(after["verified_pass1_per_problem"], before["verified_pass1_per_problem"],
                                           seed=seed)
            out[name] = {"pass1": after["pass1"]["mean"], "verified": after["verified_pass1"]["mean"],
                         "lucky": after["lucky_share"], "paired_pass1": d.to_dict(), "paired_verified": dv.to_dict(),
                         "first_dev_paired_verified": first_dev_verified}
            print(name, json.dumps(out[name], default=str), flush=True)
    (a.out or (a.arm or a.stage)[0].parent / f"fresh_dev_{a.dev}.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, dict) or k in ("before", "excluded")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
