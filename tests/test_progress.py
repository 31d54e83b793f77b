"""lib.progress and the runner's ProgressWatcher: records written, throttled, read back and printed."""
from __future__ import annotations

import io
import re
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


def test_read_records_skips_a_half_written_line(tmp_path):
    p = tmp_path / "p.jsonl"
    assert progress.read_records(p) == []
    p.write_text(json.dumps({"n": 1}) + "\n" + '{"n": 2, "tot')
    assert progress.read_records(p) == [{"n": 1}]


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


# ------------------------------------------------------------------------------- the stage ETA
T0 = 1000.0  # the stage's start (wall time) in the cases below


def rec(task, n, total, at, *, start=False, done=False):
    r = {"task": task, "n": n, "total": total, "unit": "it", "elapsed": 0.0, "rate": None, "metrics": {},
         "done": done, "time": T0 + at}
    return {**r, "start": True} if start else r


# An earlier run: sampling from 10 s to 20 s, training from 30 s to 90 s, the stage over at 100 s.
PROFILE = {"params_hash": "h", "wall_s": 100.0, "tasks": [["sampling", 10.0, 20.0], ["train", 30.0, 90.0]]}


@pytest.mark.parametrize("recs,now,expected", [
    # the sampling started at 20 s where the profile's did at 10 s: twice as slow, so the stage
    # ends at 20 + 2 * (100 - 10) = 200 s; asked at 25 s, 175 s are left
    ([rec("sampling", 0, 10, 20, start=True)], 25, 175.0),
    # half the sampling done at 30 s: 15 s into the profile, still twice as slow: 30 + 2 * 85 = 200
    ([rec("sampling", 0, 10, 20, start=True), rec("sampling", 5, 10, 30)], 30, 170.0),
    # training a quarter done at 60 s: profile point 30 + 0.25 * 60 = 45 s, speed 60/45: 60 + 55 * 4/3
    ([rec("sampling", 0, 10, 20, start=True), rec("sampling", 10, 10, 35, done=True),
      rec("train", 0, 40, 50, start=True), rec("train", 10, 40, 60)], 60, 60 + 55 * 60 / 45 - 60),
    # the same run, asked 20 s later with no new record: the predicted end stays where it was
    ([rec("sampling", 0, 10, 20, start=True), rec("sampling", 10, 10, 35, done=True),
      rec("train", 0, 40, 50, start=True), rec("train", 10, 40, 60)], 80, 60 + 55 * 60 / 45 - 80),
    # a resumed task (started at 20 of 40) counts its share from where it started
    ([rec("sampling", 0, 10, 20, start=True), rec("sampling", 10, 10, 35, done=True),
      rec("train", 20, 40, 50, start=True), rec("train", 30, 40, 60)], 60, 60 + 40 * 60 / 60 - 60),
    # past the predicted end: 0, never negative
    ([rec("sampling", 0, 10, 5, start=True), rec("sampling", 10, 10, 10, done=True)], 500, 0.0),
])
def test_stage_eta_scales_the_rest_of_the_profile_by_this_runs_speed(recs, now, expected):
    assert progress.stage_eta(recs, PROFILE, T0, T0 + now) == pytest.approx(expected)


@pytest.mark.parametrize("recs,profile", [
    ([], PROFILE),                                                    # nothing reported yet
    ([rec("sampling", 0, 10, 20, start=True)], None),                  # no profile for these params
    ([rec("train", 0, 10, 20, start=True)], PROFILE),                  # another sequence of tasks
    ([rec("sampling", 0, 10, 20, start=True), rec("train", 0, 4, 30, start=True),
      rec("sampling", 0, 4, 40, start=True)], PROFILE),                # more tasks than the profile has
    ([rec("sampling", 0, 10, 0.5, start=True)], {**PROFILE, "tasks": [["sampling", 0.5, 9.0]]}),  # too early
])
def test_no_stage_eta_without_a_matching_profile(recs, profile):
    assert progress.stage_eta(recs, profile, T0, T0 + 50) is None


def test_records_of_another_task_between_do_not_move_the_position():
    """RL: the trainer's step records arrive between the sampling tasks it starts."""
    prof = {"params_hash": "h", "wall_s": 50.0,
            "tasks": [["train", 2.0, 2.0], ["sampling", 10.0, 20.0], ["sampling", 30.0, 40.0]]}
    recs = [rec("train", 0, 2, 4, start=True), rec("sampling", 0, 8, 20, start=True), rec("sampling", 8, 8, 40, done=True)]
    eta = progress.stage_eta(recs, prof, T0, T0 + 40)
    assert eta == pytest.approx(2 * 30)  # at profile point 20 s after 40 s: speed 2, 30 profile seconds left
    assert progress.stage_eta(recs + [rec("train", 1, 2, 45)], prof, T0, T0 + 40) == pytest.approx(eta)


def test_profile_of_a_finished_stage_and_its_file(tmp_path):
    recs = [rec("sampling", 0, 10, 10, start=True), rec("sampling", 5, 10, 15), rec("sampling", 10, 10, 20, done=True),
            rec("train", 0, 40, 30, start=True), rec("sampling", 0, 2, 31, start=True), rec("train", 40, 40, 90, done=True)]
    prof = progress.profile_of(recs, T0, T0 + 100, "h")
    # a task ends at its own last record; the trainer's final record after the sampling is not the sampling's
    assert prof == {"params_hash": "h", "wall_s": 100.0,
                    "tasks": [["sampling", 10.0, 20.0], ["train", 30.0, 30.0], ["sampling", 31.0, 31.0]]}
    f = tmp_path / "eta_profile.json"
    progress.save_profile(f, "04_sft", prof)
    progress.save_profile(f, "03_mid_train", PROFILE)
    progress.save_profile(f, "04_sft", {**prof, "wall_s": 120.0})  # a rerun replaces the stage's profile
    assert progress.load_profiles(f) == {"03_mid_train": PROFILE, "04_sft": {**prof, "wall_s": 120.0}}
    # the first file with this stage *and* these parameters wins; others are passed over
    other = tmp_path / "shipped.json"
    progress.save_profile(other, "04_sft", {**prof, "params_hash": "g"})
    assert progress.find_profile("04_sft", "g", [f, other])["params_hash"] == "g"
    assert progress.find_profile("04_sft", "h", [tmp_path / "none.json", f])["wall_s"] == 120.0
    assert progress.find_profile("05_rollout_dpo", "h", [f, other]) is None


@pytest.mark.parametrize("text", ["{not json", '{"04_sft": {"wall_s": 3}}', "[1, 2]"])
def test_a_broken_profile_file_is_a_named_error(tmp_path, text):
    f = tmp_path / "eta_profile.json"
    f.write_text(text)
    with pytest.raises(progress.ProfileError, match="delete it"):
        progress.load_profiles(f)


def test_bars_and_trainers_mark_their_first_record(sink, monkeypatch):
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    with progress.Bar(2, "sampling", display=False) as bar:
        bar.update(2)
    recs = records(sink)
    assert [r.get("start", False) for r in recs] == [True, False, False]


def test_describe_with_a_stage_eta_prefers_it():
    r = {"task": "train", "n": 100, "total": 400, "unit": "step", "rate": 2.0, "metrics": {}, "done": False}
    assert progress.describe(r, 7.0, 95.0) == "train 100/400 steps | 2 step/s | 7s elapsed, stage ETA 1m35s"


def test_watcher_with_a_profile_prints_the_stage_eta(tmp_path):
    prog, out = tmp_path / "progress.jsonl", io.StringIO()
    with ProgressWatcher("04_sft", prog, tmp_path / "log", every_s=0.05, tty=False, out=out, profile=PROFILE) as w:
        # this run reached the profile's 10 s point 10 s after the watcher started: same speed
        prog.write_text(json.dumps({**rec("sampling", 0, 10, 0, start=True), "time": w.t0 + 10}) + "\n")
        time.sleep(0.3)
    last = out.getvalue().splitlines()[-1]
    eta = int(re.search(r"stage ETA 1m(\d\d)s", last).group(1))
    assert 39 <= eta <= 40  # at the profile's 10 s point at t0 + 10 s: the stage ends at t0 + 100 s; asked at ~t0 + 0.3 s


def test_the_shipped_tiny_profile_matches_the_tiny_params():
    """A fresh clone's `make tiny` shows stage ETAs from params/tiny.eta.json only while its
    parameter hashes are tiny's: after changing params/tiny.yaml, run `make tiny` and copy
    outputs/tiny/eta_profile.json over params/tiny.eta.json."""
    from lib import params as params_mod, stages
    from lib.paths import PARAMS_DIR

    p = params_mod.load(PARAMS_DIR / "tiny.yaml")
    shipped = progress.load_profiles(PARAMS_DIR / "tiny.eta.json")
    stale = [s.name for s in stages.STAGES if shipped.get(s.name, {}).get("params_hash") != p.hash(s.sections)]
    assert not stale, f"params/tiny.eta.json is stale for {stale}: refresh it from outputs/tiny/eta_profile.json"
