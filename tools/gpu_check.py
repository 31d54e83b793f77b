"""One command for whoever gets a GPU: the real-scale path end to end on CUDA, then the GPU benchmarks.

    make gpu-check                      # = .venv/bin/python tools/gpu_check.py
    .venv/bin/python tools/gpu_check.py [--params params/rehearsal.yaml] [--only 00 03] [--device cpu]
                                        [--name gpu-check-<time>]   # continue that run (with --only)

1. Every stage of ``--params`` (default: ``params/rehearsal.yaml``, the real-scale path at CPU
   size: hub-schema files, a served teacher/judge/tagger, launched training; ~5 minutes on 2 CPU
   cores) with ``run.device=cuda`` and bf16 autocast (``model.dtype=bfloat16``) into a fresh
   folder under ``outputs/gpu-check-<time>/``: CUDA training (TRL) under ``accelerate launch``
   with one process per GPU (two at most), vLLM for evaluation and RL sampling when it is
   installed (RL then runs in one process: colocated vLLM is not wired across processes), the
   verifier, the report (:func:`device_overrides`).
2. ``benchmarks/bench_gpu.py``: training MFU and generation tokens/s (vLLM against
   ``transformers.generate`` when vLLM is installed).
3. A table: stage, wall time, device, training backend, key metric; then the benchmark lines.

Without CUDA it says so and exits 2 (``--device cpu`` rehearses the script itself on CPU). A
SIGTERM (a lease or a job's time running out) is passed on to the recipe, which stops its server
and kernels; the table of the stages that finished is still written.
Nothing in CI depends on it. Output: ``outputs/gpu-check-<time>/gpu_check.md`` as well as the terminal.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stage_rows(run_dir: Path) -> list[dict]:
    """One row per finished stage of a run folder, from each stage's manifest and metrics."""
    rows = []
    profile_path = run_dir / "eta_profile.json"  # the runner's wall time per stage (kernel start included)
    profile = json.loads(profile_path.read_text()) if profile_path.is_file() else {}
    for manifest in sorted(run_dir.glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        metrics_path = manifest.parent / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        key = next((metrics[k] for k in ("heldout_accuracy", "correct_share", "sft_rollouts", "final_pass1")
                    if k in metrics), None)
        wall = (profile.get(manifest.parent.name) or {}).get("wall_s", m.get("elapsed_s"))
        ran_on = (m.get("params") or {}).get("run", {}).get("device")  # a stage carried from another machine
        rows.append({"stage": manifest.parent.name, "wall_s": wall, "device": ran_on,
                     "backend": metrics.get("backend") or metrics.get("generation") or "",
                     "key_metric": key})
    return rows


def table(rows: list[dict], device: str) -> str:
    """The rows as markdown. ``device`` names this machine's accelerator; a row whose manifest says it
    ran on another kind of device (a stage carried from a CPU run) shows that device instead."""
    lines = ["| stage | wall s | device | backend | key metric |", "|---|---|---|---|---|"]
    for r in rows:
        wall = f"{r['wall_s']:.0f}" if isinstance(r["wall_s"], (int, float)) else "?"
        key = f"{r['key_metric']:.3f}" if isinstance(r["key_metric"], float) else str(r["key_metric"])
        shown = device if r.get("device") in (None, "cuda") else r["device"]
        lines.append(f"| {r['stage']} | {wall} | {shown} | {r['backend']} | {key} |")
    return "\n".join(lines)


TRAINING = ("mid_train", "sft", "dpo", "rl")


def run_forwarding_sigterm(cmd: list[str], cwd: Path) -> tuple[int, str | None]:
    """Run ``cmd``; a SIGTERM to this process (a lease or job running out) is passed on to it, and
    its exit awaited, so the report of the stages that finished is still written. Returns the exit
    code and the signal's name when one stopped it."""
    import signal

    proc = subprocess.Popen(cmd, cwd=cwd)
    stopped: list[str] = []

    def forward(signum, frame):
        stopped.append(signal.Signals(signum).name)
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, (stopped[0] if stopped else None)


def device_overrides(params_path: str | Path, device: str, n_gpus: int, vllm: bool) -> list[str]:
    """``section.key=value`` overrides that move ``params_path`` onto ``device``.

    bf16 autocast on CUDA, float32 on CPU. A training section that launches processes gets the
    2-process launcher config with 2+ GPUs, else the 1-process one (the same local launcher: one
    process per GPU on CUDA, gloo processes on CPU). With vLLM on CUDA, evaluation and RL sample
    with it and RL runs in its own process.
    """
    from lib import params as P

    p = P.load(params_path)
    sets = [f"run.device={device}", f"model.dtype={'bfloat16' if device == 'cuda' else 'float32'}"]
    procs = 2 if device == "cpu" or n_gpus >= 2 else 1
    for section in TRAINING:
        if getattr(p, section).accelerate_config:
            sets.append(f"{section}.accelerate_config=configs/accelerate_cpu_{procs}proc.yaml")
    if device == "cuda" and vllm:
        sets += ["eval.use_vllm=true", "rl.use_vllm=true", "rl.accelerate_config=null"]
    elif p.rl.use_vllm or p.eval.use_vllm:
        sets += ["eval.use_vllm=false", "rl.use_vllm=false"]
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params/rehearsal.yaml")
    ap.add_argument("--only", nargs="*", help="run just these stages (as lib.recipe --only)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: rehearse this script without a GPU (bf16 off)")
    ap.add_argument("--skip-bench", action="store_true", help="do not run benchmarks/bench_gpu.py")
    ap.add_argument("--name", help="the run folder under outputs/ (default gpu-check-<time>); with --only, an "
                                   "earlier check's folder to continue from its finished stages")
    args = ap.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); install a CUDA build of "
              "torch on a GPU machine, or pass --device cpu to rehearse the script", file=sys.stderr)
        return 2
    name = args.name or f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    out_root = ROOT / "outputs"
    import importlib.util

    sys.path.insert(0, str(ROOT))
    vllm = importlib.util.find_spec("vllm") is not None
    n_gpus = torch.cuda.device_count() if args.device == "cuda" else 0
    sets = ["--set", f"run.name={name}"]
    for s in device_overrides(ROOT / args.params, args.device, n_gpus, vllm):
        sets += ["--set", s]
    cmd = [sys.executable, "-m", "lib.recipe", args.params, *sets] + (["--only", *args.only] if args.only else [])
    print("gpu-check:", " ".join(cmd), flush=True)
    t0 = time.time()
    returncode, stopped_by = run_forwarding_sigterm(cmd, ROOT)
    wall = time.time() - t0
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    how = f"stopped by {stopped_by}, exit" if stopped_by else "exit"
    report = [f"# gpu-check {name}", "", f"`{' '.join(cmd[1:])}`: {how} {returncode}, {wall:.0f} s", "",
              table(stage_rows(out_root / name), device)]
    if not args.skip_bench and not stopped_by:
        bench = subprocess.run([sys.executable, "benchmarks/bench_gpu.py"], cwd=ROOT, capture_output=True, text=True)
        report += ["", "## benchmarks/bench_gpu.py", "", "```", (bench.stdout + bench.stderr[-2000:]).strip(), "```"]
    text = "\n".join(report) + "\n"
    (out_root / name).mkdir(parents=True, exist_ok=True)
    (out_root / name / "gpu_check.md").write_text(text)
    print(text)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
