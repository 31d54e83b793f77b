"""The run report: ``report.json`` (the data) and ``REPORT.md`` rendered from it.

The stage table has the shape of the paper's ablation (rows = stages, columns = benchmarks,
pass@1 with its bootstrap interval), followed by pass@1 by difficulty, pass@k, cons@k,
response statistics and the wall time of every stage, read from the stages' manifests.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from lib import artifacts, metrics, stages


def build(params, results: dict[str, dict[str, dict]], settings: dict) -> dict:
    """``results[stage][eval_set] = summary`` (from lib.evaluation.summarize) -> report dict."""
    run = artifacts.run_dir(params)
    rows = []
    ablations = []
    for s in stages.STAGES:
        if s.name in results:
            rows.append({"stage": s.name, "label": s.label or s.name, "evals": results[s.name]})
        for sub, label in s.ablations:
            if f"{s.name}/{sub}" in results:
                ablations.append({"stage": f"{s.name}/{sub}", "label": label, "evals": results[f"{s.name}/{sub}"]})
    _add_paired(rows, ablations, seed=params.run.seed)
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
        "extract": params.verify.extract,
        "stages": rows,
        "ablations": ablations,
        "rl": _rl_section(run),
        "wall_time_s": wall,
    }


def _add_paired(rows: list[dict], ablations: list[dict], seed: int) -> None:
    """Each stage row gets ``paired[set]``: its pass@1 minus the previous stage's on the same
    problems, with a paired bootstrap interval (:func:`lib.metrics.paired_difference`), and
    ``paired_verified[set]``, the same for verified pass@1; each ablation row, its pass@1 against
    the full recipe's SFT row. Sets without per-problem scores are skipped."""
    def diff(after: dict, before: dict, key: str) -> dict:
        out = {}
        for name, e in after["evals"].items():
            b = before["evals"].get(name)
            if b and e.get(key) and b.get(key):
                d = metrics.paired_difference(e[key], b[key], seed=seed)
                out[name] = {**d.to_dict(), "vs": before["label"]}
        return out

    def hardest(after: dict, before: dict) -> dict:
        """pass@1 and verified pass@1 differences on the problems of the set's hardest level alone."""
        out = {}
        for name, e in after["evals"].items():
            b = before["evals"].get(name)
            levels = (e.get("problem_level") or {}) if b else {}
            if not levels or not all(e.get(k) and b.get(k) for k in ("pass1_per_problem", "verified_pass1_per_problem")):
                continue
            top = max(levels.values())
            ids = [i for i, lv in levels.items() if lv == top]
            out[name] = {"level": top, "vs": before["label"], **{
                key: metrics.paired_difference({i: e[key][i] for i in ids}, {i: b[key][i] for i in ids},
                                               seed=seed).to_dict()
                for key in ("pass1_per_problem", "verified_pass1_per_problem")}}
        return out

    for prev, row in zip(rows, rows[1:]):
        row["paired"] = diff(row, prev, "pass1_per_problem")
        row["paired_verified"] = diff(row, prev, "verified_pass1_per_problem")
        row["paired_hardest"] = hardest(row, prev)
    sft = next((r for r in rows if r["stage"] == "04_sft"), None)
    for row in ablations:
        if sft is not None:
            row["paired"] = diff(row, sft, "pass1_per_problem")


def _rl_section(run: Path) -> dict | None:
    """RL's before/after and plain-vs-tricks numbers from 06_rl's metrics, when it ran."""
    import json

    f = Path(run) / "06_rl" / artifacts.METRICS
    if not f.is_file():
        return None
    m = json.loads(f.read_text())
    return {"variants": m.get("variants", {}), "seconds_per_step": m.get("seconds_per_step", {}),
            "prompt_selection": m.get("prompt_selection", {}),
            "cons_paired": next((v for k, v in m.items() if k.startswith("cons@") and k.endswith("_paired")), [])}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _pass1_cell(e: dict | None, key: str = "pass1") -> str:
    """``mean [lo, hi]`` in percent of one evaluation's pass@1 (or ``key``, e.g. verified pass@1),
    "–" when the set was not evaluated or has no such number."""
    if e is None or key not in e:
        return "–"
    return f"{_pct(e[key]['mean'])} [{_pct(e[key]['lo'])}, {_pct(e[key]['hi'])}]"


def _diff_cell(d: dict | None) -> str:
    """``+7.1 [4.2, 10.0] (31↑ 9↓)`` in points, "–" when not computed."""
    if d is None:
        return "–"
    return (f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}] "
            f"({d['better']}↑ {d['worse']}↓)")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


EXTRACT_NOTE = {"strict": "the last \\boxed{} after </think>, the format the models were trained to write",
                "lenient": "boxed, answer phrases, the last expression or a choice letter, for outputs from anywhere"}


def render_markdown(report: dict, plots: dict[str, str] | None = None, images: bool = True) -> str:
    """REPORT.md text; ``plots`` maps a plot name to its path relative to the report.

    ``images=False`` leaves out every image line (a notebook shows the figures itself, and the
    report's relative image paths do not resolve from the notebook's folder)."""
    plots = plots or {}
    if not images:
        return "\n".join(line for line in render_markdown(report, plots).split("\n") if not line.startswith("!["))
    sets = list(dict.fromkeys(name for row in report["stages"] for name in row["evals"]))
    st = report["settings"]
    commit = (report["git"].get("commit") or "unknown")[:12] + (" (dirty)" if report["git"].get("dirty") else "")
    out = [f"# Report: run `{report['run']}`", "",
           f"Created {report['created']} at commit `{commit}`. Sampling: {st.get('n_samples')} samples per problem "
           f"at T={st.get('temperature')}, top-p {st.get('top_p')}, up to {st.get('max_new_tokens')} new tokens; "
           f"pass@1 is the mean of {st.get('n_runs')} runs with a 95% bootstrap interval over problems. "
           f"Answers were read with the **{report.get('extract', 'strict')}** extraction policy (`verify.extract`: "
           f"{EXTRACT_NOTE.get(report.get('extract', 'strict'), '')}).", ""]

    out += ["## Stage table: pass@1 (%)", ""]
    checked = [n for n in sets if any("verified_pass1" in (r["evals"].get(n) or {}) for r in report["stages"])]
    rows = []
    for r in report["stages"]:
        cells = [r["label"]]
        for name in sets:
            e = r["evals"].get(name)
            cells.append(_pass1_cell(e))
            if name in checked:
                cells += [_pass1_cell(e, "verified_pass1"), _pct(e.get("lucky_share")) if e else "–"]
        rows.append(cells)
    header = ["stage"] + [c for n in sets for c in ([n, f"{n} verified", f"{n} lucky-guess %"] if n in checked else [n])]
    out += _table(header, rows) + [""]
    if checked:
        out += ["**verified**: pass@1 counting a sample only when its answer is right *and* every arithmetic "
                "statement it writes is true; **lucky-guess %**: the share of right answers reached through at "
                "least one false statement (the first runs' samples).", ""]

    paired = [r for r in report["stages"] if r.get("paired")]
    if paired:
        out += ["## Paired: each stage minus the one before, same problems (points)", "",
                "The mean per-problem change of pass@1 with a 95% paired bootstrap interval over problems, and how "
                "many problems rose / fell. An interval that excludes 0 is a change this set can see; its half-width "
                "is the smallest change it resolves.", ""]
        out += _table(["stage", "vs"] + sets, [[r["label"], next(iter(r["paired"].values()))["vs"]]
                                               + [_diff_cell(r["paired"].get(n)) for n in sets] for r in paired]) + [""]
        pv = [r for r in paired if r.get("paired_verified")]
        if pv:
            out += ["The same for verified pass@1 (answer right and every checked statement true):", ""]
            out += _table(["stage", "vs"] + sets, [[r["label"], next(iter(r["paired_verified"].values()))["vs"]]
                                                   + [_diff_cell(r["paired_verified"].get(n)) for n in sets]
                                                   for r in pv]) + [""]
        ph = [r for r in paired if r.get("paired_hardest")]
        if ph:
            hsets = [n for n in sets if any(n in r["paired_hardest"] for r in ph)]
            lv = {n: next(r["paired_hardest"][n] for r in ph if n in r["paired_hardest"]) for n in hsets}
            out += ["The hardest level alone, where the paper's claim that the later stages extend competence "
                    "would show first (" + ", ".join(f"{n}: L{lv[n]['level']}, "
                                                     f"{lv[n]['pass1_per_problem']['n_problems']} problems"
                                                     for n in hsets) + "):", ""]
            out += _table(["stage", "vs"] + [c for n in hsets for c in (f"{n} L{lv[n]['level']}",
                                                                         f"{n} L{lv[n]['level']} verified")],
                          [[r["label"], next(iter(r["paired_hardest"].values()))["vs"]]
                           + [c for n in hsets for c in (
                               (_diff_cell(r["paired_hardest"][n]["pass1_per_problem"]),
                                _diff_cell(r["paired_hardest"][n]["verified_pass1_per_problem"]))
                               if n in r["paired_hardest"] else ("–", "–"))]
                           for r in ph]) + [""]
    if report.get("ablations"):
        out += ["## Ablation: SFT without mid-training (the paper's LIMO/s1K negative result)", ""]
        base_rows = {r["label"]: r for r in report["stages"]}
        abl = [base_rows[k] for k in ("base", "+ SFT") if k in base_rows] + report["ablations"]
        out += _table(["model"] + sets, [[r["label"]] + [_pass1_cell(r["evals"].get(n)) for n in sets]
                                         for r in abl]) + [""]
        for r in report["ablations"]:
            for n, d in (r.get("paired") or {}).items():
                out += [f"Paired, {r['label']} minus {d['vs']} on {n}: {_diff_cell(d)} points.", ""]

    if report.get("rl"):
        rl = report["rl"]
        out += ["## RL: plain GRPO vs GRPO with the paper's three tricks", "",
                "Held-out pass@1 and cons@k at the first and last tracked step (06_rl, same seed and steps).", ""]
        vrows = []
        for name, v in rl["variants"].items():
            cons = sorted(k for k in v if k.startswith("cons@") and k.endswith("_before"))
            ck = cons[0][:-len("_before")] if cons else None
            vrows.append([name, _pct(v.get("pass1_before")), _pct(v.get("pass1_after")),
                          _pct(v.get(f"{ck}_before")) if ck else "–", _pct(v.get(f"{ck}_after")) if ck else "–"])
        ck_name = next((k[:-len("_before")] for v in rl["variants"].values() for k in v
                        if k.startswith("cons@") and k.endswith("_before")), "cons@k")
        out += _table(["variant", "pass@1 before", "pass@1 after", f"{ck_name} before", f"{ck_name} after"], vrows)
        if rl.get("cons_paired"):
            out += ["", f"Paired by tracked problem, {ck_name} (points, 95% bootstrap interval, problems up↑ down↓):", ""]
            out += _table(["comparison", f"{ck_name} difference"],
                          [[d["comparison"], _diff_cell(d)] for d in rl["cons_paired"]])
        out += ["", "![RL tracking](06_rl/rl_tracking.png)", "", "![RL steps](06_rl/rl_steps.png)", ""]
        sps = rl.get("seconds_per_step") or {}
        if sps:
            out += ["Seconds per RL step:", ""]
            out += _table(["variant", "total", "generation", "checking", "update"],
                          [[n, f"{t['s_per_step']:.2f}", f"{t['generation_s']:.2f}", f"{t['checking_s']:.2f}",
                            f"{t['update_s']:.2f}"] for n, t in sps.items()]) + [""]

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


def clip_text(text: str, max_chars: int = 1500) -> str:
    """``text`` cut to ``max_chars`` for display, saying how much was left out (looping traces
    run to thousands of characters)."""
    if len(text) <= max_chars:
        return text
    return text[:max_chars] + f"\n… [{len(text) - max_chars:,} more characters not shown]"


def side_by_side_html(columns: dict[str, str], header: str | None = None, max_chars: int = 1500) -> str:
    """Texts side by side as an HTML table (``{column title: text}``, escaped, clipped), for
    ``IPython.display.HTML``: e.g. a DPO pair's chosen and rejected answers under its prompt."""
    from html import escape

    cell = 'style="vertical-align:top; text-align:left; width:{w}%"'.format(w=100 // max(len(columns), 1))
    pre = '<pre style="white-space:pre-wrap; font-size:85%">{}</pre>'
    out = ['<table style="width:100%; table-layout:fixed">']
    if header is not None:
        out.append(f'<tr><td colspan="{len(columns)}" style="text-align:left">{pre.format(escape(header))}</td></tr>')
    out.append("<tr>" + "".join(f"<th {cell}>{escape(t)}</th>" for t in columns) + "</tr>")
    out.append("<tr>" + "".join(f"<td {cell}>{pre.format(escape(clip_text(x, max_chars)))}</td>"
                                for x in columns.values()) + "</tr>")
    return "\n".join(out + ["</table>"])


def _get(d: dict, k: int):
    """JSON round trips turn int keys into strings; accept both."""
    return d.get(k, d.get(str(k)))


def write(report: dict, run_dir: Path, plots: dict[str, str] | None = None) -> tuple[Path, Path]:
    import json

    j, md = Path(run_dir) / "report.json", Path(run_dir) / "REPORT.md"
    j.write_text(json.dumps(report, indent=2, sort_keys=False, default=str) + "\n")
    md.write_text(render_markdown(report, plots))
    return j, md
