"""The run report: ``report.json`` (the data) and ``REPORT.md`` rendered from it.

The stage table has the shape of the paper's ablation (rows = stages, columns = benchmarks,
pass@1 with its bootstrap interval), followed by pass@1 by difficulty, pass@k, cons@k,
response statistics and the wall time of every stage, read from the stages' manifests.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from lib import artifacts, stages


def build(params, results: dict[str, dict[str, dict]], settings: dict) -> dict:
    """``results[stage][eval_set] = summary`` (from lib.evaluation.summarize) -> report dict."""
    run = artifacts.run_dir(params)
    rows = []
    for s in stages.STAGES:
        if s.name in results:
            rows.append({"stage": s.name, "label": s.label or s.name, "evals": results[s.name]})
    wall = {}
    for s in stages.STAGES:
        m = artifacts.read_manifest(run / s.name)
        if m:
            wall[s.name] = m.get("elapsed_s")
    return {
        "run": params.run.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git": artifacts.git_state(),
        "settings": settings,
        "stages": rows,
        "wall_time_s": wall,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(report: dict, plots: dict[str, str] | None = None) -> str:
    """REPORT.md text; ``plots`` maps a plot name to its path relative to the report."""
    plots = plots or {}
    sets = list(dict.fromkeys(name for row in report["stages"] for name in row["evals"]))
    st = report["settings"]
    commit = (report["git"].get("commit") or "unknown")[:12] + (" (dirty)" if report["git"].get("dirty") else "")
    out = [f"# Report: run `{report['run']}`", "",
           f"Created {report['created']} at commit `{commit}`. Sampling: {st.get('n_samples')} samples per problem "
           f"at T={st.get('temperature')}, top-p {st.get('top_p')}, up to {st.get('max_new_tokens')} new tokens; "
           f"pass@1 is the mean of {st.get('n_runs')} runs with a 95% bootstrap interval over problems.", ""]

    out += ["## Stage table: pass@1 (%)", ""]
    rows = []
    for r in report["stages"]:
        cells = [r["label"]]
        for name in sets:
            e = r["evals"].get(name)
            cells.append("–" if e is None else f"{_pct(e['pass1']['mean'])} [{_pct(e['pass1']['lo'])}, {_pct(e['pass1']['hi'])}]")
        rows.append(cells)
    out += _table(["stage"] + sets, rows) + [""]

    levels = sorted({lv for r in report["stages"] for e in r["evals"].values() for lv in e.get("pass1_by_level", {})},
                    key=int)
    if levels:
        for name in sets:
            level_rows = [[r["label"]] + [_pct(r["evals"][name]["pass1_by_level"].get(lv)) for lv in levels]
                          for r in report["stages"] if name in r["evals"] and r["evals"][name].get("pass1_by_level")]
            if level_rows:
                out += [f"## pass@1 (%) by difficulty level: {name}", ""]
                out += _table(["stage"] + [f"L{lv}" for lv in levels], level_rows) + [""]
    if "by_level" in plots:
        out += [f"![pass@1 by level]({plots['by_level']})", ""]

    for metric, title in (("pass_at_k", "pass@k (%)"), ("cons_at_k", "cons@k (%), majority vote over k samples")):
        out += [f"## {title}", ""]
        for name in sets:
            ks = sorted({int(k) for r in report["stages"] if name in r["evals"] for k in r["evals"][name][metric]})
            out += [f"{name}:", ""]
            out += _table(["stage"] + [f"k={k}" for k in ks],
                          [[r["label"]] + [_pct(_get(r["evals"][name][metric], k)) for k in ks]
                           for r in report["stages"] if name in r["evals"]]) + [""]
        if metric in plots:
            out += [f"![{metric}]({plots[metric]})", ""]

    out += ["## Responses", ""]
    resp = []
    for r in report["stages"]:
        for name, e in r["evals"].items():
            resp.append([r["label"], name, f"{e['length']['mean']:.0f}", f"{e['length']['p90']:.0f}",
                         _pct(e["truncated_share"]), _pct(e["repetitive_share"]), str(e["unverifiable"])])
    out += _table(["stage", "set", "mean tokens", "p90 tokens", "truncated %", "repetitive %", "unverifiable"], resp) + [""]
    if "lengths" in plots:
        out += [f"![response lengths]({plots['lengths']})", ""]

    out += ["## Wall time per stage", ""]
    wall = report["wall_time_s"]
    out += _table(["stage", "seconds"], [[k, "–" if v is None else f"{v:.0f}"] for k, v in wall.items()])
    out += ["", f"Total: {sum(v or 0 for v in wall.values()):.0f} s (the evaluation stage's own time is "
            "recorded in its manifest after this report is written).", ""]
    return "\n".join(out)


def _get(d: dict, k: int):
    """JSON round trips turn int keys into strings; accept both."""
    return d.get(k, d.get(str(k)))


def write(report: dict, run_dir: Path, plots: dict[str, str] | None = None) -> tuple[Path, Path]:
    import json

    j, md = Path(run_dir) / "report.json", Path(run_dir) / "REPORT.md"
    j.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
    md.write_text(render_markdown(report, plots))
    return j, md
