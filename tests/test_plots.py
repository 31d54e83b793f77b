"""The notebooks' plots: each built from a small hand-made input, checked on what a reader sees."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from lib import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bar_heights(ax) -> list[float]:
    return [round(p.get_height(), 6) for p in ax.patches]


def test_grouped_bars_one_bar_per_value_in_percent_with_legend():
    fig = plots.grouped_bars({"all": {"before": 0.1, "after": 0.5}, "L1": {"before": 0.2, "after": float("nan")}},
                             "accuracy", "accuracy (%)")
    ax = fig.axes[0]
    assert sorted(_bar_heights(ax)) == [10.0, 20.0, 50.0]  # the NaN is left out
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all", "L1"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["before", "after"]
    assert ax.get_title() == "accuracy" and ax.get_ylabel() == "accuracy (%)"


def test_heldout_summaries_accuracy_by_level_and_eos():
    s = {"base": {"accuracy": 0.05, "by_level": {1: 0.1, 2: 0.0}, "finished_share": 1.0},
         "mid-trained": {"accuracy": 0.45, "by_level": {"1": 0.7, "2": 0.2}, "finished_share": 0.9}}
    fig = plots.heldout_summaries(s, "03")
    acc, eos = fig.axes
    assert [t.get_text() for t in acc.get_xticklabels()] == ["all", "L1", "L2"]
    assert sorted(_bar_heights(acc)) == [0.0, 5.0, 10.0, 20.0, 45.0, 70.0]  # JSON's string level keys read too
    assert sorted(_bar_heights(eos)) == [90.0, 100.0]
    assert [t.get_text() for t in eos.get_legend().get_texts()] == ["base", "mid-trained"]


def test_packing_fill_compares_packed_rows_with_one_example_per_row():
    pack = {"n_examples": 100, "n_rows": 30, "max_length": 200, "tokens": 5700, "fill": 0.95}
    fig = plots.packing_fill(pack)
    rows, fill = fig.axes
    assert [p.get_width() for p in rows.patches] == [30, 100]
    assert [round(p.get_width(), 3) for p in fill.patches] == [95.0, 28.5]  # 5,700 / (100 x 200)
    assert [t.get_text() for t in rows.get_yticklabels()] == ["packed", "one example per row"]


def test_dpo_curves_draw_rewards_margin_and_logps():
    curve = pd.DataFrame({"step": [1, 2, 3], "loss": [0.69, 0.6, 0.5], "margin": [0.0, 0.1, 0.3],
                          "reward_chosen": [0.0, 0.05, 0.1], "reward_rejected": [0.0, -0.05, -0.2],
                          "logps_chosen": [-50.0, -49.0, -48.5], "logps_rejected": [-60.0, -62.0, -65.0]})
    fig = plots.dpo_curves(curve, beta=0.1)
    loss, rewards, logps = fig.axes
    assert len(loss.lines) == 1
    assert [t.get_text() for t in rewards.get_legend().get_texts()] == ["chosen", "rejected", "margin"]
    assert "β = 0.1" in rewards.get_title()
    assert [t.get_text() for t in logps.get_legend().get_texts()] == ["chosen", "rejected"]
    assert list(logps.lines[1].get_ydata()) == [-60.0, -62.0, -65.0]


def test_dpo_curves_without_logged_steps_say_so():
    fig = plots.dpo_curves(pd.DataFrame({"step": [], "loss": []}))
    assert all(any(t.get_text() == "no logged steps" for t in ax.texts) for ax in fig.axes)


def test_answer_shares_puts_a_guess_next_to_its_share_of_the_gold():
    pred = pd.Series(["2", "2", "2", None])
    gold = pd.Series(["2", "7", "9", "11"])
    ax = plots.answer_shares(pred, gold).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "(none)"]
    assert sorted(_bar_heights(ax)) == [0.0, 25.0, 25.0, 75.0]  # "2": 75% of answers, 25% of gold


def test_lengths_wraps_long_stage_names_and_keeps_their_order():
    records = pd.DataFrame({"stage": ["base"] * 3 + ["base + SFT, no mid-training (LIMO/s1K ablation)"] * 3,
                            "set": "synthetic", "n_tokens": [5, 6, 7, 50, 60, 70]})
    ax = plots.lengths(records).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "base" and "\n" in labels[1] and labels[1].replace("\n", " ").startswith("base + SFT, no mid")
    fig = ax.figure
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def test_by_level_legend_sits_outside_the_bars():
    report = {"stages": [{"label": s, "evals": {"synthetic": {"pass1_by_level": {"1": 0.5, "4": 0.1}}}}
                         for s in ("base", "+ SFT")]}
    fig = plots.by_level(report)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["base", "+ SFT"]
    fig.canvas.draw()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the plotting area
