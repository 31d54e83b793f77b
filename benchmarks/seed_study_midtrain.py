"""Mid-training's loss path over several training seeds: is the gap one run showed variance or effect?

    .venv/bin/python benchmarks/seed_study_midtrain.py [--run outputs/tiny] [--params params/tiny.yaml]
        [--seeds 1 2] [--paths trl model] [--out outputs/seed_study_midtrain.jsonl]

One whole tiny run with the model's own loss (``RecipeSFTTrainer.trl_loss = False``, 1.3x faster)
ended mid-training at greedy held-out 0.385 instead of TRL's 0.515 (``lib/sft_trainer.py``). The
two losses agree to float rounding on one batch, so either the run-to-run spread of mid-training
is that large or the path matters. This script trains stage 03 as the notebook does
(:func:`lib.launch.train_stage` on the run's ``midtrain.parquet`` from its base model, the run's
``mid_train`` section and threads), once per (loss path, training seed), and measures each model
with the stage's own key metric (greedy :func:`lib.evaluation.quick_accuracy` on the same
held-out problems). The training seed changes the order of the packed rows (the trainer's
seeded sampler); data, base model and evaluation are the same. Seed 0 is the run's own.

Each result is appended to ``--out`` as it finishes (a rerun skips what is there). Stop other
jobs first: each arm is ~10 minutes on 2 cores, and sharing them only costs time, not results.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from lib import chat, evaluation, launch, params as params_mod  # noqa: E402
from lib import model as modellib  # noqa: E402
from lib.sft_trainer import RecipeSFTTrainer  # noqa: E402


def done_keys(out: Path) -> set[tuple[str, int]]:
    if not out.is_file():
        return set()
    return {(r["path"], r["seed"]) for r in (json.loads(line) for line in out.read_text().splitlines() if line.strip())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="outputs/tiny")
    ap.add_argument("--params", default="params/tiny.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--paths", nargs="+", default=["trl", "model"], choices=["trl", "model"])
    ap.add_argument("--out", default="outputs/seed_study_midtrain.jsonl")
    args = ap.parse_args(argv)

    P = params_mod.load(args.params)
    run, out = Path(args.run), Path(args.out)
    base = run / "00_base_model" / "model"
    data_path = run / "02_tag_data" / "midtrain.parquet"
    for f in (base, data_path):
        if not f.exists():
            raise SystemExit(f"{f} not found: run stages 00-02 first (python -m lib.recipe {args.params} --only 00 01 02)")
    modellib.set_threads(P.run.threads)
    data = pd.read_parquet(data_path)
    rows = [chat.conversation(r.problem, r.text) for r in data.itertuples()]
    heldout_set, test = evaluation.stage_heldout(P.problems, P.eval, seed=P.run.seed, limit=P.mid_train.eval_problems)
    section = P.mid_train.model_copy(update={"checkpoint_every": 0})
    quick = dict(max_new_tokens=P.mid_train.max_length, batch_size=64, seed=P.run.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    have = done_keys(out)
    for seed in args.seeds:
        for path in args.paths:
            if (path, seed) in have:
                print(f"{path} seed {seed}: already in {out}, skipped", flush=True)
                continue
            RecipeSFTTrainer.trl_loss = path == "trl"
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                model, tokenizer, stats = launch.train_stage(base, rows, section, Path(tmp) / "training",
                                                             device=modellib.pick_device("cpu"),
                                                             seed=seed, packing=section.packing, dtype=P.model.dtype)
            train_s = time.time() - t0
            model.eval()
            with evaluation.make_verifier(P.verify) as verifier:
                _, acc = evaluation.quick_accuracy(model, tokenizer, test, verifier, **quick)
            rec = {"path": path, "seed": seed, "heldout_accuracy": acc["accuracy"], "heldout_set": heldout_set,
                   "n_heldout": len(test), "final_loss": stats["final_loss"], "train_loss": stats["train_loss"],
                   "steps": stats["steps"], "train_s": round(train_s, 1), "tokens_per_s": stats["tokens_per_s"]}
            with out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    RecipeSFTTrainer.trl_loss = True
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
