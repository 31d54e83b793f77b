"""lib.progress and the runner's ProgressWatcher: records written, throttled, read back and printed."""
from __future__ import annotations

import io
import json
import time

import pytest

from lib import progress
from lib.recipe import ProgressWatcher


@pytest.fixture
def sink(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(progress, "_last_write", 0.0)
    path = progress.start(tmp_path / "progress.jsonl")
    yield path
    monkeypatch.delenv(progress.ENV, raising=False)


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bar_reports_counts_rate_and_done(sink, monkeypatch):
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    with progress.Bar(10, "sampling", unit="prompt", initial=2, display=False) as bar:
        bar.set_metrics(correct=0.5)
        time.sleep(0.01)
        bar.update(3)
    recs = records(sink)
    assert [r["n"] for r in recs] == [2, 5, 5]
    assert recs[0]["rate"] is None  # nothing done yet: no rate, no ETA
    assert recs[1]["rate"] > 0 and recs[1]["metrics"] == {"correct": 0.5} and recs[-1]["done"] is True
    # the rate counts work done in this run only (3 prompts), not the 2 resumed ones
    assert recs[1]["rate"] * recs[1]["elapsed"] == pytest.approx(3, rel=0.25)  # 5 if it counted them


def test_reports_are_throttled_but_start_and_end_are_forced(sink):
    with progress.Bar(1000, "rollouts", display=False) as bar:
        for _ in range(1000):
            bar.update(1)
    recs = records(sink)
    assert len(recs) <= 3 and recs[0]["n"] == 0 and recs[-1] == {**recs[-1], "n": 1000, "done": True}


def test_no_sink_or_other_rank_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert progress.report("x", 1, 2, force=True) is False
    path = progress.start(tmp_path / "p.jsonl")
    monkeypatch.setenv("RANK", "1")
    assert progress.report("x", 1, 2, force=True) is False and path.read_text() == ""
    monkeypatch.delenv(progress.ENV)


def test_non_finite_metrics_are_dropped(sink):
    progress.report("train", 1, 4, metrics={"loss": float("nan"), "reward": 0.25, "note": "x" * 100}, force=True)
    assert records(sink)[0]["metrics"] == {"reward": 0.25, "note": "x" * 40}


@pytest.mark.parametrize("rec,expected", [
    (None, "starting (7s)"),
    ({"task": "train", "n": 100, "total": 400, "unit": "step", "rate": 2.0, "metrics": {"loss": 1.23456}, "done": False},
     "train 100/400 steps | loss 1.235 | 2 step/s | 7s elapsed, task ETA 2m30s"),
    ({"task": "sampling", "n": 8, "total": 8, "unit": "prompt", "rate": 0.5, "metrics": {}, "done": True},
     "sampling 8/8 prompts | 2 s/prompt | 7s elapsed"),
    ({"task": "rollouts", "n": 3, "total": None, "unit": "problem", "rate": None, "metrics": {}, "done": False},
     "rollouts 3 problems | 7s elapsed"),
])
def test_describe(rec, expected):
    assert progress.describe(rec, 7.0) == expected


def test_last_record_skips_a_half_written_line(tmp_path):
    p = tmp_path / "p.jsonl"
    assert progress.last_record(p) is None
    p.write_text(json.dumps({"n": 1}) + "\n" + '{"n": 2, "tot')
    assert progress.last_record(p) == {"n": 1}


def test_watcher_prints_a_line_every_interval_and_logs_it(tmp_path):
    prog, log, out = tmp_path / "progress.jsonl", tmp_path / "progress.log", io.StringIO()
    prog.write_text(json.dumps({"task": "train", "n": 5, "total": 10, "unit": "step", "rate": 1.0,
                                "metrics": {"loss": 2.0}, "done": False}) + "\n")
    with ProgressWatcher("03_mid_train", prog, log, every_s=0.05, tty=False, out=out):
        time.sleep(0.3)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all("03_mid_train" in x and "train 5/10 steps" in x and "ETA 5s" in x for x in lines)
    assert len(log.read_text().splitlines()) == len(lines)


def test_watcher_on_a_terminal_rewrites_one_line(tmp_path):
    out = io.StringIO()
    with ProgressWatcher("00_base_model", tmp_path / "none.jsonl", tmp_path / "log", every_s=10, tty=True, out=out):
        time.sleep(1.2)  # a terminal updates every second
    text = out.getvalue()
    assert text.startswith("\r  00_base_model") and "\n" not in text and text.endswith("\r")
