"""End-to-end wall time per recipe stage, and how each stage's cost grows with data size.

    .venv/bin/python benchmarks/bench_stages.py [--scales 1 2 4] [--unit 1] [--params params/smoke.yaml]
                                               [--root /tmp/bench_stages] [--threads 1]

Runs the recipe runner (``python -m lib.recipe PARAMS --force``) once per scale factor ``k``,
each into a fresh ``ROOT/x{k}``, with the main size knobs multiplied by ``unit * k`` through ``--set``
(default 1: the smoke sizes. There every stage's own work takes a few seconds and kernel start-up
and imports dominate, so growth hardly shows; ``--unit 4`` makes "1x" 4 times the smoke sizes):

- ``problems.n_train`` and ``base_pretrain.n_problems`` (data for 00-02; more teacher rollouts),
- ``mid_train.max_steps``, ``sft.max_steps``, ``dpo.max_steps``, ``rl.max_steps`` (training steps).

Held fixed: model size, batch sizes, ``teacher.n_rollouts``, the test set and the evaluation
(07 and every stage's held-out check cost the same at every scale). Per stage it reads
``elapsed_s`` from the stage's ``manifest.json`` (time inside the notebook, from ``stage.start``
to ``stage.finish``) and the runner's own wall time (papermill: kernel start-up and imports
included), and prints ``name: seconds (ratio vs 1x)``. A stage whose time grows less than its
knob is dominated by fixed costs (imports, kernel start, model build, evaluation).

The smoke parameters and 1 thread keep it to a few minutes on a shared 2-core machine; every
run's stdout goes to ``ROOT/x{k}.log``.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR))  # run from anywhere

from lib import params as params_mod  # noqa: E402
from lib.stages import STAGES  # noqa: E402

# (section.key, how it scales): every knob is multiplied by the scale factor
KNOBS = ["problems.n_train", "base_pretrain.n_problems", "mid_train.max_steps", "sft.max_steps",
         "dpo.max_steps", "rl.max_steps"]
DONE = re.compile(r"^✓ (\S+)\s+(?:(\d+)m(\d+)s|([\d.]+)s)")


def overrides(p, k: int) -> list[str]:
    """``--set`` values with every knob multiplied by ``k``."""
    out = []
    for knob in KNOBS:
        section, key = knob.split(".")
        out.append(f"{knob}={getattr(getattr(p, section), key) * k}")
    return out


def run_scale(params: str, k: int, unit: int, root: Path, threads: int) -> dict:
    base = params_mod.load(params)
    out_root = root / f"x{k}"
    shutil.rmtree(out_root, ignore_errors=True)
    sets = overrides(base, k * unit) + [f"run.output_root={out_root}", f"run.threads={threads}"]
    cmd = [sys.executable, "-m", "lib.recipe", params, "--force"] + [a for s in sets for a in ("--set", s)]
    print(f"x{k}: " + " ".join(s for s in sets if not s.startswith("run.")), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT_DIR, capture_output=True, text=True)
    total = time.perf_counter() - t0
    (root / f"x{k}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"x{k} failed (rc {proc.returncode}); see {root / f'x{k}.log'}\n{proc.stderr[-2000:]}")
    runner = {}
    for line in proc.stdout.splitlines():
        m = DONE.match(line)
        if m:
            runner[m[1]] = int(m[2]) * 60 + int(m[3]) if m[2] else float(m[4])
    p = params_mod.load(params, sets)
    from lib import artifacts

    inside = {}
    for s in STAGES:
        f = artifacts.stage_dir(p, s.name) / artifacts.MANIFEST
        if f.is_file():
            inside[s.name] = float(json.loads(f.read_text())["elapsed_s"])
    return {"total": total, "inside": inside, "runner": runner}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params/smoke.yaml")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--root", type=Path, default=Path("/tmp/bench_stages"))
    ap.add_argument("--unit", type=int, default=1, help="the knobs of 1x, as a multiple of the params file's")
    ap.add_argument("--threads", type=int, default=1, help="run.threads of every stage")
    args = ap.parse_args()
    if args.scales[0] != 1:
        ap.error("the first scale must be 1 (the baseline)")
    args.root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    res = {}
    for k in args.scales:
        res[k] = run_scale(args.params, k, args.unit, args.root, args.threads)
        print(f"x{k}_total_seconds: {res[k]['total']:.0f} s", flush=True)

    base = res[1]
    for s in STAGES:
        if s.name not in base["inside"]:
            continue
        parts = [f"{base['inside'][s.name]:.1f} s at 1x"]
        for k in args.scales[1:]:
            v = res[k]["inside"].get(s.name)
            if v is not None:
                parts.append(f"{v:.1f} s at {k}x ({v / base['inside'][s.name]:.2f}x vs 1x)")
        print(f"stage_{s.name}_seconds: " + ", ".join(parts))
        walls = [res[k]["runner"].get(s.name) for k in args.scales]
        if None not in walls:
            print(f"stage_{s.name}_runner_wall_seconds: " + ", ".join(
                f"{w:.1f} s at {k}x ({w / walls[0]:.2f}x)" for k, w in zip(args.scales, walls))
                + " (kernel start-up, imports and papermill included)")
    fixed = sum(base["runner"].get(n, 0) - v for n, v in base["inside"].items())
    print(f"startup_seconds_1x: {fixed:.0f} s of {base['total']:.0f} s total are outside the stages' own "
          f"timers (kernel start-up, imports, papermill)")
    for k in args.scales[1:]:
        print(f"recipe_total_seconds_{k}x: {res[k]['total']:.0f} s ({res[k]['total'] / base['total']:.2f}x vs 1x "
              f"{base['total']:.0f} s)")
    print(f"total_seconds: {time.perf_counter() - t_start:.0f}")


if __name__ == "__main__":
    main()
