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
