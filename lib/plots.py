"""Plots shared by the notebooks and the report (seaborn; each returns its Figure)."""
from __future__ import annotations

import textwrap

import matplotlib
import matplotlib.patches

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

sns.set_theme(style="whitegrid", context="notebook")


def pass_at_k(report: dict, metric: str = "pass_at_k", title: str = "pass@k") -> matplotlib.figure.Figure:
    """One line per stage, one panel per evaluation set: metric against k (log2 axis)."""
    rows = [{"stage": r["label"], "set": name, "k": int(k), "value": 100 * v}
            for r in report["stages"] for name, e in r["evals"].items() for k, v in e[metric].items()]
    df = pd.DataFrame(rows)
    g = sns.relplot(data=df, x="k", y="value", hue="stage", col="set", kind="line", marker="o",
                    height=3.2, aspect=1.3, facet_kws={"sharey": False})
    for ax in g.axes.flat:
        ax.set_xscale("log", base=2)
        ax.set_ylabel(f"{title} (%)")
    g.figure.suptitle(title, y=1.03)
    return g.figure


def by_level(report: dict, eval_set: str = "synthetic") -> matplotlib.figure.Figure:
    rows = [{"stage": r["label"], "level": f"L{lv}", "pass@1 (%)": 100 * v}
            for r in report["stages"] if eval_set in r["evals"]
            for lv, v in r["evals"][eval_set].get("pass1_by_level", {}).items()]
    fig, ax = plt.subplots(figsize=(10, 3.2))
    if rows:
        sns.barplot(data=pd.DataFrame(rows), x="level", y="pass@1 (%)", hue="stage", ax=ax)
        ax.legend(title="stage", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the bars
    ax.set_title(f"pass@1 by difficulty level ({eval_set})")
    fig.tight_layout()
    return fig


def _wrap(label: str, width: int = 14) -> str:
    return "\n".join(textwrap.wrap(str(label), width)) or str(label)


def lengths(records: pd.DataFrame) -> matplotlib.figure.Figure:
    """Response length distribution per stage (records need ``stage``, ``set``, ``n_tokens``)."""
    order = list(dict.fromkeys(records["stage"]))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(order)), 3.6))
    sns.boxplot(data=records, x="stage", y="n_tokens", hue="set", order=order, ax=ax, fliersize=1)
    ax.set_xticks(range(len(order)), [_wrap(s) for s in order])  # long stage names wrap instead of overlapping
    ax.set(xlabel="", ylabel="response tokens", title="response length by stage")
    if ax.get_legend() is not None:
        ax.legend(title="set", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # off the boxes
    fig.tight_layout()
    return fig


def grouped_bars(values: dict[str, dict[str, float]], title: str, ylabel: str, *, percent: bool = True,
                 ax=None) -> matplotlib.figure.Figure:
    """Bars in groups: ``values[group][series]`` (e.g. ``{"L1": {"before": 0.1, "after": 0.5}}``).

    One colour per series (legend), each bar labelled with its value; ``percent`` shows
    shares in [0, 1] as percentages. Missing or NaN values are left out.
    """
    fig, ax = (plt.subplots(figsize=(max(5, 1.4 * len(values) + 2), 3.2)) if ax is None else (ax.figure, ax))
    series = list(dict.fromkeys(s for g in values.values() for s in g))
    width = 0.8 / max(len(series), 1)
    palette = sns.color_palette(n_colors=max(len(series), 1))
    for j, name in enumerate(series):
        xs, ys = [], []
        for i, group in enumerate(values.values()):
            v = group.get(name)
            if v is not None and v == v:
                xs.append(i + (j - (len(series) - 1) / 2) * width)
                ys.append(100 * v if percent else v)
        bars = ax.bar(xs, ys, width=width, label=name, color=palette[j])
        ax.bar_label(bars, fmt="%.0f" if percent else "%.3g", fontsize=8, padding=1)
    ax.set_xticks(range(len(values)), [_wrap(g) for g in values])
    ax.set(ylabel=ylabel, title=title)
    if percent:
        ax.set_ylim(0, 112)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.tight_layout()
    return fig


def heldout_summaries(summaries: dict[str, dict], title: str) -> matplotlib.figure.Figure:
    """Greedy held-out checks side by side (``{model label: evaluation.quick_accuracy summary}``).

    Left: accuracy, all problems and per level; right: share of answers that end with EOS.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [3, 1.4]})
    levels = sorted({int(lv) for s in summaries.values() for lv in s.get("by_level", {})})
    acc = {"all": {name: s["accuracy"] for name, s in summaries.items()}}
    for lv in levels:
        acc[f"L{lv}"] = {name: s.get("by_level", {}).get(lv, s.get("by_level", {}).get(str(lv)))
                         for name, s in summaries.items()}
    grouped_bars(acc, f"{title}: greedy held-out accuracy", "accuracy (%)", ax=axes[0])
    axes[0].get_legend().remove()
    grouped_bars({"ends with EOS": {name: s.get("finished_share") for name, s in summaries.items()}},
                 "answers that stop", "greedy answers (%)", ax=axes[1])
    fig.tight_layout()
    return fig


def packing_fill(pack: dict) -> matplotlib.figure.Figure:
    """What packing saves (``pack``: :class:`lib.packing.PackStats` as a dict): rows and the share
    of row tokens that are real, packed vs one example per row of ``max_length``."""
    one_per_row = pack["tokens"] / max(pack["n_examples"] * pack["max_length"], 1)
    df = pd.DataFrame([{"layout": "packed", "rows": pack["n_rows"], "fill": 100 * pack["fill"]},
                       {"layout": "one example per row", "rows": pack["n_examples"], "fill": 100 * one_per_row}])
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.6))
    for ax, col, xlabel in zip(axes, ["rows", "fill"], [f"rows of {pack['max_length']} tokens",
                                                        "real tokens per row (%)"]):
        bars = ax.barh(df["layout"], df[col], color=sns.color_palette(n_colors=2))
        ax.bar_label(bars, fmt="%.0f" if col == "fill" else "{:,.0f}", padding=2, fontsize=9)
        ax.set(xlabel=xlabel)
        ax.margins(x=0.2)
        ax.invert_yaxis()  # packed on top
    axes[1].set_xlim(0, 115)
    axes[1].set_yticks([])
    fig.suptitle(f"packing: {pack['n_examples']:,} examples, {pack['tokens']:,} tokens", y=1.02)
    fig.tight_layout()
    return fig


def dpo_curves(curve: pd.DataFrame, beta: float | None = None) -> matplotlib.figure.Figure:
    """DPO training from TRL's logs (:func:`lib.dpo.fit_dpo`'s curve): loss; implicit rewards of
    chosen and rejected and their margin; log-probabilities of chosen and rejected answers."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
    panels = [("DPO loss", [("loss", "loss")]),
              ("implicit reward" + (f" (β = {beta:g})" if beta is not None else ""),
               [("reward_chosen", "chosen"), ("reward_rejected", "rejected"), ("margin", "margin")]),
              ("log-prob of the whole answer (batch mean)", [("logps_chosen", "chosen"), ("logps_rejected", "rejected")])]
    for ax, (title, cols) in zip(axes, panels):
        drawn = False
        for col, label in cols:
            if col in curve and curve[col].notna().any():
                ax.plot(curve["step"], curve[col], marker="o", markersize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=ax.transAxes)
        elif len(cols) > 1:
            ax.legend(fontsize=9)
        ax.set(title=title, xlabel="step")
    fig.tight_layout()
    return fig


def answer_shares(predicted: pd.Series, gold: pd.Series, top: int = 6) -> matplotlib.figure.Figure:
    """The most frequent predicted answers: share of the model's answers vs share of gold answers.

    A model that guesses one answer everywhere scores exactly that answer's share of the gold.
    ``predicted``: extracted answers (None when there is none); ``gold``: reference answers.
    """
    pred = predicted.fillna("(none)").astype(str)
    shares = pred.value_counts(normalize=True).head(top)
    gold_share = gold.astype(str).value_counts(normalize=True)
    values = {a: {"model's answers": v, "gold answers": float(gold_share.get(a, 0.0))} for a, v in shares.items()}
    return grouped_bars(values, "the most frequent answers", "share of problems (%)")


def loss_curves(curve: pd.DataFrame, title: str) -> matplotlib.figure.Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3))
    if curve.empty:  # a run shorter than one logging interval
        for ax in axes:
            ax.text(0.5, 0.5, "no logged steps", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.lineplot(data=curve, x="step", y="loss", ax=axes[0])
        sns.lineplot(data=curve, x="step", y="lr", ax=axes[1])
    axes[0].set_title(f"{title}: loss")
    axes[1].set_title(f"{title}: learning rate")
    fig.tight_layout()
    return fig


def prompt_selection(probed: pd.DataFrame, selected: pd.DataFrame) -> matplotlib.figure.Figure:
    """RL prompt selection: length CV and pass rate of the candidates vs the prompts kept."""
    kept = probed["problem"].isin(set(selected["problem"]))
    df = probed.assign(set=kept.map({True: "kept", False: "dropped"}))
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.2))
    sns.histplot(data=df, x="length_cv", hue="set", ax=axes[0], bins=30, multiple="stack")
    axes[0].set_title("response-length CV per prompt (trick 1)")
    sns.histplot(data=df, x="pass_rate", hue="set", ax=axes[1], bins=10, multiple="stack", discrete=False)
    axes[1].set_title("probe pass rate per prompt (trick 2)")
    lengths = pd.DataFrame([{"set": s, "tokens": n} for s, ls in (("all candidates", probed["lengths"]),
                                                                   ("kept", probed.loc[kept, "lengths"]))
                            for row in ls for n in row])
    if not lengths.empty:
        sns.boxplot(data=lengths, x="set", y="tokens", ax=axes[2], fliersize=1)
    axes[2].set_title("response lengths before / after selection")
    fig.tight_layout()
    return fig


def cell_pass_rates(rates: pd.DataFrame, low: float, high: float) -> matplotlib.figure.Figure:
    """The starting model's dev pass rate per domain x level (``lib.curriculum.cell_pass_rates``);
    the cells inside ``[low, high]``, which the RL stream draws from, are outlined."""
    table = rates.pivot(index="domain", columns="level", values="pass_rate")
    fig, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 3, 0.5 * table.shape[0] + 1.5))
    sns.heatmap(100 * table, annot=True, fmt=".0f", vmin=0, vmax=100, cmap="viridis", ax=ax,
                cbar_kws={"label": "dev pass@1 (%)"})
    for i, d in enumerate(table.index):
        for j, lv in enumerate(table.columns):
            v = table.loc[d, lv]
            if pd.notna(v) and low <= v <= high:
                ax.add_patch(matplotlib.patches.Rectangle((j, i), 1, 1, fill=False, edgecolor="white", lw=2.5))
    ax.set(xlabel="level", ylabel="", title=f"RL draws fresh problems from the outlined cells (dev pass rate "
           f"{100 * low:.0f}-{100 * high:.0f}%)")
    fig.tight_layout()
    return fig


def rl_steps(curves: dict[str, pd.DataFrame]) -> matplotlib.figure.Figure:
    """Per-step reward, response length, sampling temperature, filtered-group share and the share of
    right answers whose arithmetic is all true (the rest are lucky guesses), per variant."""
    df = pd.concat([c.assign(variant=name) for name, c in curves.items()], ignore_index=True)
    cols = [("reward", "mean reward"), ("length", "mean completion tokens"), ("temperature", "sampling temperature"),
            ("all_equal_share", "share of all-equal groups"),
            ("verified_share", "right answers with all arithmetic true")]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3))
    for ax, (col, title) in zip(axes, cols):
        if col in df and df[col].notna().any():
            sns.lineplot(data=df, x="step", y=col, hue="variant", ax=ax, marker="o", markersize=3)
        ax.set_title(title)
    fig.tight_layout()
    return fig


def rl_tracking(histories: dict[str, pd.DataFrame], k: int) -> matplotlib.figure.Figure:
    """Held-out pass@1 and cons@k against RL step, per variant (the paper's stability signal)."""
    df = pd.concat([h.assign(variant=name) for name, h in histories.items()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, col in zip(axes, ["pass1", f"cons@{k}"]):
        sns.lineplot(data=df.assign(**{col: 100 * df[col]}), x="step", y=col, hue="variant", marker="o", ax=ax)
        ax.set(ylabel=f"{col} (%)", title=f"held-out {col} during RL")
    fig.tight_layout()
    return fig
