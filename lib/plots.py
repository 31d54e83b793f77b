"""Plots shared by the notebooks and the report (seaborn; each returns its Figure)."""
from __future__ import annotations

import matplotlib

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
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if rows:
        sns.barplot(data=pd.DataFrame(rows), x="level", y="pass@1 (%)", hue="stage", ax=ax)
    ax.set_title(f"pass@1 by difficulty level ({eval_set})")
    fig.tight_layout()
    return fig


def lengths(records: pd.DataFrame) -> matplotlib.figure.Figure:
    """Response length distribution per stage (records need ``stage``, ``set``, ``n_tokens``)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    sns.boxplot(data=records, x="stage", y="n_tokens", hue="set", ax=ax, fliersize=1)
    ax.set(ylabel="response tokens", title="response length by stage")
    fig.tight_layout()
    return fig


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


def rl_steps(curves: dict[str, pd.DataFrame]) -> matplotlib.figure.Figure:
    """Per-step reward, response length, sampling temperature and filtered-group share, per variant."""
    df = pd.concat([c.assign(variant=name) for name, c in curves.items()], ignore_index=True)
    cols = [("reward", "mean reward"), ("length", "mean completion tokens"), ("temperature", "sampling temperature"),
            ("all_equal_share", "share of all-equal groups")]
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
