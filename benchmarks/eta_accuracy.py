"""How good is the runner's ETA? Reads a finished run's progress logs and manifests.

    .venv/bin/python benchmarks/eta_accuracy.py outputs/tiny

For each stage: the gap between printed lines (the runner prints one every 10 s off a terminal),
and, at the first line after 10% of the stage's wall time that carries a task ETA, the predicted
end (line time + ETA) against the stage's real end, as a share of the stage's wall time. A line
carries a stage ETA where the runner had an ETA profile of the stage (lib.progress), else a task
ETA, which covers only the running task (training, sampling, ...), not what the stage does after
it. The kind printed is in the last column.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from pathlib import Path

LINE = re.compile(r"^(\d\d:\d\d:\d\d) (\S+)\s+(.*)$")
ETA = re.compile(r"(?:task|stage) ETA (?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
ELAPSED = re.compile(r"(?:starting \(|\| )(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:\)| elapsed)")


def seconds(m: re.Match) -> float:
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return 3600 * h + 60 * mi + s


def stage_rows(run: Path) -> list[dict]:
    rows = []
    for d in sorted(p for p in run.iterdir() if p.is_dir()):
        log, man = d / "progress.log", d / "manifest.json"
        if not (log.is_file() and man.is_file()):
            continue
        m = json.loads(man.read_text())
        end = dt.datetime.fromisoformat(m["finished_at"]).astimezone()
        lines = log.read_text().splitlines()
        first = LINE.match(lines[0]) if lines else None
        if first is None or not ELAPSED.search(first.group(3)):
            continue
        # the stage started (for the runner: kernel start-up included) the first line's elapsed before it
        t0 = dt.datetime.combine(end.date(), dt.time.fromisoformat(first.group(1)), tzinfo=end.tzinfo)
        if t0 > end:
            t0 -= dt.timedelta(days=1)
        start = t0 - dt.timedelta(seconds=seconds(ELAPSED.search(first.group(3))))
        wall = (end - start).total_seconds()
        times, eta_at_10, worst = [], None, None
        for line in lines:
            lm = LINE.match(line)
            if not lm:
                continue
            t = dt.datetime.combine(start.date(), dt.time.fromisoformat(lm.group(1)), tzinfo=start.tzinfo)
            if t < start - dt.timedelta(hours=12):
                t += dt.timedelta(days=1)
            times.append(t)
            em = ETA.search(lm.group(3))
            if em and (t - start).total_seconds() >= 0.1 * wall:
                predicted = t + dt.timedelta(seconds=seconds(em))
                err = abs((predicted - end).total_seconds()) / wall
                worst = err if worst is None else max(worst, err)
                if eta_at_10 is None:
                    eta_at_10 = {"at_s": round((t - start).total_seconds()),
                                 "predicted_end_s": round((predicted - start).total_seconds()),
                                 "error_share": round(err, 3), "line": lm.group(3)[:90],
                                 "kind": "stage" if "stage ETA" in lm.group(3) else "task"}
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
        rows.append({"stage": d.name, "wall_s": round(wall), "lines": len(times), "max_gap_s": max(gaps, default=None),
                     "eta_after_10pct": eta_at_10, "worst_error_after_10pct": None if worst is None else round(worst, 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a finished run folder, e.g. outputs/tiny")
    args = ap.parse_args()
    print(f"{'stage':<18} {'wall':>6} {'lines':>5} {'max gap':>8} {'worst':>6}  first ETA after 10% "
          f"(predicted end vs real, error share); worst: the largest error of any line after 10%")
    for r in stage_rows(args.run):
        e = r["eta_after_10pct"]
        eta = (f"at {e['at_s']} s: end {e['predicted_end_s']} s vs {r['wall_s']} s -> {100 * e['error_share']:.0f}% "
               f"({e['kind']} ETA)") if e else "-"
        worst = "-" if r["worst_error_after_10pct"] is None else f"{100 * r['worst_error_after_10pct']:.0f}%"
        print(f"{r['stage']:<18} {r['wall_s']:>5}s {r['lines']:>5} {str(r['max_gap_s']):>7}s {worst:>6}  {eta}")


if __name__ == "__main__":
    main()
