"""Throughput of lib.verify: serial in-process vs. the worker pool, and the cost of the second opinion.

    .venv/bin/python benchmarks/bench_verify.py [--n 1000] [--workers 2 4] [--cli-rows 10000]

Workload: MATH-500 reference solutions checked against their own answers (right) and against the
next problem's answer (wrong, so ~half the checks are rejections that a judge re-examines), read
from the folder in PHI4MR_BENCHMARKS_DIR; without it, a synthetic mix of fractions, surds and tuples is used instead. Every
configuration runs in a fresh interpreter (cold sympy / math-verify caches for all), and start-up
(imports, spawning workers) is timed separately. Prints one line per measurement: `name: value (ratio vs baseline)`.
Runs in about a minute on 2 shared CPU cores.

CLI: `python -m lib.verify --jsonl` on `--cli-rows` rows (MATH-500 reference solutions against
their own and the next problem's answer, cycled), `--extract lenient` vs `--extract strict`,
timed end to end (interpreter start, workers, extraction, checks); lenient printed as a ratio
against strict measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lib import eval_sets as B
from lib import judges as J
from lib import verify as V


def workload(n: int) -> list[tuple[str, str]]:
    try:
        rows = B.load_local("math500")
        right = [(r["answer"], r["solution"]) for r in rows]
        wrong = [(rows[(i + 1) % len(rows)]["answer"], r["solution"]) for i, r in enumerate(rows)]
        pairs = [p for pair in zip(right, wrong) for p in pair]
    except FileNotFoundError:
        pairs = []
        for i in range(n):
            gold = [f"\\frac{{{i}}}{{7}}", f"{i}\\sqrt{{2}}", f"({i}, {i + 1})"][i % 3]
            pred = [f"\\boxed{{{i}/7}}", f"\\boxed{{\\sqrt{{{2 * i * i}}}}}", f"\\boxed{{({i + 1}, {i})}}"][i % 3]
            pairs.append((gold, pred))
    return (pairs * (n // len(pairs) + 1))[:n]


def trivial_check(gold: str, answer: str):
    """A check that costs nothing: measures the pool's own dispatch overhead."""
    return True, "equal"


def measure(config: str, n: int) -> dict:
    """Run one configuration in this (fresh) process; return its timings."""
    pairs = workload(n)
    kind, _, arg = config.partition(":")
    judge = {"rule": J.RuleJudge(), "llm": J.LLMJudge(lambda prompt: "NO", name="instant")}.get(arg)
    workers = int(arg) if kind in ("pool", "trivial") else 0
    check_fn = trivial_check if kind == "trivial" else V.math_verify_check
    t0 = time.perf_counter()
    with V.Verifier(workers=workers, judge=judge, check_fn=check_fn) as v:
        v.check("1", "1")  # imports sympy/math-verify, waits for a worker: not part of the timing
        startup = time.perf_counter() - t0
        t0 = time.perf_counter()
        checks = v.check_many(pairs)
        elapsed = time.perf_counter() - t0
        stats = v.stats
    return {
        "config": config,
        "checks_per_s": len(pairs) / elapsed,
        "startup_s": startup,
        "elapsed_s": elapsed,
        "rejected": sum(c.equal is False and c.checker == "math_verify" for c in checks),
        "recovered": stats.judge_recovered,
        "verdicts": [c.equal for c in checks],
    }


def run_fresh(config: str, n: int) -> dict:
    """Each configuration in its own interpreter: sympy and math-verify caches start cold for all."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", config, "--n", str(n)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def line(name: str, value: float, unit: str, baseline: float | None = None, baseline_name: str = "") -> None:
    ratio = f"{value / baseline:.2f}x vs {baseline_name}" if baseline else "n/a"
    print(f"{name}: {value:,.1f} {unit} ({ratio})", flush=True)


def cli_rows(n: int, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, (gold, prediction) in enumerate(workload(n)):
            f.write(json.dumps({"id": i, "gold": gold, "prediction": prediction}) + "\n")


def time_cli(path: Path, policy: str, workers: int) -> float:
    root = Path(__file__).resolve().parents[1]
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lib.verify", "--jsonl", str(path), "--out", os.devnull, "--extract", policy,
         "--workers", str(workers)],
        cwd=root, check=True, capture_output=True, text=True,
    )
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="checks per configuration")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="pool sizes to measure")
    ap.add_argument("--cli-rows", type=int, default=10_000, help="rows for the CLI lenient-vs-strict timing (0 = skip)")
    ap.add_argument("--cli-only", action="store_true", help="only the CLI lenient-vs-strict timing")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n)))
        return 0

    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f} (shared machine)")
    if args.cli_rows:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rows.jsonl"
            cli_rows(args.cli_rows, path)
            strict_s = time_cli(path, "strict", args.workers[0])
            lenient_s = time_cli(path, "lenient", args.workers[0])
        line(f"cli_{args.cli_rows}_rows_strict_s", strict_s, "s")
        line(f"cli_{args.cli_rows}_rows_lenient_s", lenient_s, "s", strict_s, "strict")
    if args.cli_only:
        return 0
    serial = run_fresh("serial:none", args.n)
    base = serial["checks_per_s"]
    line("serial_in_process_checks_per_s", base, "checks/s", base, "serial")
    for n in args.workers:
        pool = run_fresh(f"pool:{n}", args.n)
        assert pool["verdicts"] == serial["verdicts"], "pool and serial disagree"
        line(f"pool_{n}_workers_checks_per_s", pool["checks_per_s"], "checks/s", base, "serial")
        line(f"pool_{n}_workers_startup_s", pool["startup_s"], "s")
    trivial = run_fresh(f"trivial:{args.workers[0]}", args.n)
    line(f"pool_{args.workers[0]}_workers_dispatch_only_checks_per_s", trivial["checks_per_s"], "checks/s", base, "serial")

    rule = run_fresh("serial:rule", args.n)
    line("serial_with_rule_judge_checks_per_s", rule["checks_per_s"], "checks/s", base, "serial")
    extra_ms = 1000 * (rule["elapsed_s"] - serial["elapsed_s"]) / max(serial["rejected"], 1)
    line("rule_judge_extra_ms_per_rejection", extra_ms, "ms")
    llm = run_fresh("serial:llm", args.n)
    line("serial_with_instant_llm_judge_checks_per_s", llm["checks_per_s"], "checks/s", base, "serial")
    print(
        f"workload: {args.n} checks, {serial['rejected']} rejected by math-verify, {rule['recovered']} recovered "
        f"by RuleJudge. An LLM judge adds its API latency per rejection (at ~0.5 s a call: "
        f"~{0.5 * serial['rejected']:,.0f} s serially)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
