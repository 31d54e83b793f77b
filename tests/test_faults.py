"""Fault injection, as a table: each row injects one fault into one stage's mechanism and asserts
either a named error (which file, which filter, which count, what to do) or a clean resume with
nothing lost and nothing duplicated. docs/faults.md carries the table with these tests' results.

Kill-resume rows SIGKILL a subprocess at a chosen optimizer step (lib.training.KILL_ENV), rerun the
same work to completion and compare it with an uninterrupted run: steps logged, every loss, tokens
seen and a hash of the final weights, bitwise (CPU, one thread, seeded).
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from lib import artifacts, params as params_mod, recipe, rollouts as R, rl, stages, subsets, training
from lib import model as modellib
from lib.launch import child_env
from lib.paths import PARAMS_DIR
from tests import fault_driver

ROOT = Path(__file__).resolve().parents[1]

FAKE = (
    stages.Stage("00_a", "A", ("run", "model")),
    stages.Stage("01_b", "B", ("run", "eval"), deps=("00_a",)),
)


@pytest.fixture
def fake_stages(use_fake_stages):
    return use_fake_stages(FAKE)


def finish_with_parquet(p, name, df):
    d = artifacts.stage_dir(p, name)
    d.mkdir(parents=True, exist_ok=True)
    artifacts.write_parquet(df, d / "sft.parquet")
    artifacts.StageRun(name, p, d).finish({"rows": len(df)})
    return d


# ============================================================================ corrupt outputs
def test_corrupt_parquet_after_finish_reruns_the_stage_and_stops_its_readers(fake_stages, capsys):
    p = fake_stages()
    d = finish_with_parquet(p, "00_a", pd.DataFrame({"x": range(10)}))
    finish_with_parquet(p, "01_b", pd.DataFrame({"x": range(3)}))
    assert artifacts.is_current(p, "00_a")
    m = json.loads((d / artifacts.MANIFEST).read_text())
    assert "sft.parquet" in m["outputs"] and "metrics.json" in m["outputs"]
    bad = d / "sft.parquet"
    bad.write_bytes(b"garbage" + bad.read_bytes()[7:])  # same size, header and footer magic broken
    bad.write_bytes(bad.read_bytes()[:-8] + b"XXXXXXXX")
    assert not artifacts.is_current(p, "00_a")
    assert "sft.parquet does not load" in artifacts.stale_outputs(p, "00_a")
    # a reader (open_stage -> require) gets a named error with the file and the command, not a pyarrow error
    with pytest.raises(artifacts.CorruptArtifactError, match=r"00_a .*sft\.parquet does not load.*--only 00_a --force"):
        artifacts.require(p, "00_a")
    # the runner's plan reruns it (and what depends on it) and says why
    assert [a for _, a in recipe.plan(p, recipe.select(None, None), False)] == ["run", "run"]
    tmp = artifacts.run_dir(p).parent
    assert recipe.main([str(PARAMS_DIR / "smoke.yaml"), "--set", f"run.output_root={tmp}", "--dry-run"]) == 0
    assert f"rerun: {bad} does not load" in capsys.readouterr().out


def test_truncated_output_is_missing_or_resized(fake_stages):
    p = fake_stages()
    d = finish_with_parquet(p, "00_a", pd.DataFrame({"x": range(10)}))
    f = d / "sft.parquet"
    f.write_bytes(f.read_bytes()[:-20])
    assert "changed size" in artifacts.stale_outputs(p, "00_a")
    f.unlink()
    assert "sft.parquet is missing" in artifacts.stale_outputs(p, "00_a")


def test_finish_refuses_an_output_that_does_not_load(fake_stages):
    p = fake_stages()
    d = artifacts.stage_dir(p, "00_a")
    d.mkdir(parents=True)
    (d / "sft.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(artifacts.CorruptArtifactError, match=r"wrote .*sft\.parquet, which does not load"):
        artifacts.StageRun("00_a", p, d).finish({})
    assert not (d / artifacts.MANIFEST).exists() and not artifacts.is_current(p, "00_a")


# ============================================================================ empty subsets
def rollouts_df(correct, finished=True, n_problems=4):
    rows = [{"problem_id": f"p{i}", "problem": f"q{i}?", "answer": "1", "text": f"t{i}-{k}", "correct": c,
             "finished": finished, "repetitive": False, "tag_difficulty": "elementary", "tag_domain": "arithmetic",
             "length": 10 + k}
            for i in range(n_problems) for k, c in enumerate(correct)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("subset, make, filt, param", [
    ("sft", lambda df: subsets.sft_subset(df.assign(finished=False), n_problems=3), "finished", "teacher.max_tokens"),
    ("midtrain", lambda df: subsets.midtrain_subset(df.assign(correct=False)), "verified correct", "teacher"),
    ("dpo_source", lambda df: subsets.dpo_source(df), "problem has a correct and an incorrect rollout",
     "teacher.error_rate"),
    ("rl_pool", lambda df: subsets.rl_pool(df.assign(correct=None)), "verifiable", "verify."),
])
def test_a_filter_that_empties_a_subset_is_named(subset, make, filt, param):
    df = rollouts_df([True, True])
    out, stats = make(df)
    assert out.empty
    f = next(f for f in stats["filters"] if f["after"] == 0)
    assert f["filter"].startswith(filt) and f["before"] > 0  # counts before/after recorded (metrics.json)
    with pytest.raises(subsets.EmptySubsetError, match=rf"subset '{subset}' is empty: the filter '{filt}.*' kept "
                                                       rf"none of {f['before']} rows; change {param}"):
        subsets.check_nonempty(subset, out, stats)
    subsets.check_nonempty(subset, out, stats, allow_empty=[subset])  # params subsets.allow_empty: expected


def test_decontamination_that_removes_everything_is_named():
    stats = {"filters": [{"filter": "decontamination", "before": 40, "after": 0, "param": "tagging.threshold"},
                         {"filter": "verified correct", "before": 0, "after": 0, "param": "teacher"}]}
    with pytest.raises(subsets.EmptySubsetError, match="filter 'decontamination' kept none of 40 rows; change tagging"):
        subsets.check_nonempty("midtrain", pd.DataFrame(), stats)


def test_filter_counts_are_recorded_for_a_nonempty_subset():
    df = rollouts_df([True, False, None])
    _, stats = subsets.sft_subset(df, n_problems=2)
    assert [(f["filter"], f["before"], f["after"]) for f in stats["filters"]] == [
        ("verified correct", 12, 4), ("finished", 4, 4), ("not repetitive", 4, 4), ("has a difficulty tag", 4, 4),
        ("draw of n_problems x per_problem", 4, 2)]
    params_mod.Subsets(allow_empty=["dpo_source"])  # the params key exists and is checked
    with pytest.raises(Exception):
        params_mod.Subsets(allow_empty=["sfft"])


def test_empty_rl_pool_blames_the_pool_not_the_threshold():
    with pytest.raises(rl.NoPromptsError, match="RL prompt pool is empty") as e:
        rl.select_prompts(pd.DataFrame(columns=["problem", "length_cv", "pass_rate", "n_correct"]),
                          prompt_optimization=True, max_length_cv=0.5, rebalance=True, max_pass_rate=0.5,
                          drop_unsolved=True, hard_below=0.3, oversample_hard=2, seed=0)
    assert "nan" not in str(e.value) and "max_length_cv" not in str(e.value)


def test_empty_training_rows_point_at_the_filter_counts():
    with pytest.raises(ValueError, match=r"no training rows.*02_tag_data's metrics.json \(subset_stats -> filters\)"):
        training.fit_sft(None, None, [], None)


# ============================================================================ params, paths, display
def test_cross_section_rule_says_the_reason_first_and_names_keys_and_files(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(f"extends: {PARAMS_DIR / 'smoke.yaml'}\neval:\n  benchmarks: [aime24]\n")
    with pytest.raises(params_mod.ParamsError) as e:
        params_mod.load(f)
    msg = str(e.value)
    first = msg.splitlines()[1]
    assert first.startswith("  - eval.benchmarks ['aime24'] not in tagging.decontaminate_against")
    assert f"eval.benchmarks ({f})" in msg or "eval.benchmarks (bad.yaml)" in msg
    assert "tagging.decontaminate_against (" in msg
    assert len(msg) < 600 and "<parameters>" not in msg


def test_relative_checkpoint_resolves_from_anywhere_or_names_where_it_looked(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "outputs/tiny/06_rl/model").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr("lib.paths.ROOT", repo)
    monkeypatch.chdir(elsewhere)
    assert modellib.resolve_checkpoint("outputs/tiny/06_rl/model") == str(repo / "outputs/tiny/06_rl/model")
    with pytest.raises(modellib.CheckpointNotFoundError) as e:
        modellib.load("outputs/tiny/05_rollout_dpo/model")
    assert str(elsewhere / "outputs/tiny/05_rollout_dpo/model") in str(e.value)
    assert str(repo / "outputs/tiny/05_rollout_dpo/model") in str(e.value)
    assert modellib.resolve_checkpoint("microsoft/Phi-4-mini-reasoning") == "microsoft/Phi-4-mini-reasoning"


@pytest.mark.parametrize("verdicts, want", [([True, True], {"incorrect": None}), ([False, None], {"correct": None})])
def test_example_display_without_correct_or_incorrect_rollouts(verdicts, want):
    ex = R.examples(pd.DataFrame({"correct": verdicts, "text": ["a", "b"]}))
    assert {k: v for k, v in ex.items() if v is None} == want
    nb = json.loads((ROOT / "notebooks/01_generate_data.ipynb").read_text())
    assert "rollouts.examples(df)" in "".join("".join(c["source"]) for c in nb["cells"])


# ============================================================================ lock
HOLD = """
import sys, time
from lib import artifacts
with artifacts.RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def hold_lock(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            env=child_env())
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_second_runner_is_refused_and_a_killed_runners_lock_is_cleared(tmp_path, capsys):
    run_dir = tmp_path / "smoke"
    proc = hold_lock(run_dir)
    try:
        with pytest.raises(artifacts.RunLockedError, match=rf"in use by another runner \(pid {proc.pid} on .*kill {proc.pid}"):
            with artifacts.RunLock(run_dir):
                pass
        rc = recipe.main([str(PARAMS_DIR / "smoke.yaml"), "--set", f"run.output_root={tmp_path}", "--only", "00"])
        assert rc == 3 and f"pid {proc.pid}" in capsys.readouterr().err
        assert not (run_dir / "00_base_model").exists()  # nothing ran
    finally:
        proc.kill()
        proc.wait()
    # the killed holder's record is stale: taken over, with a message naming it
    msgs = []
    with artifacts.RunLock(run_dir, message=msgs.append):
        assert json.loads((run_dir / artifacts.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(msgs) == 1 and "stale lock" in msgs[0] and f"pid {proc.pid}" in msgs[0]
    with artifacts.RunLock(run_dir, message=msgs.append):  # a released lock is not stale
        pass
    assert len(msgs) == 1


# ============================================================================ full disk / unwritable
def enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_on_subset_write_keeps_the_previous_file(tmp_path, monkeypatch):
    f = tmp_path / "sft.parquet"
    old = pd.DataFrame({"x": [1, 2, 3]})
    artifacts.write_parquet(old, f)

    def partial_then_fail(self, path, *a, **k):
        Path(path).write_bytes(b"PAR1 half")
        enospc()
    monkeypatch.setattr(pd.DataFrame, "to_parquet", partial_then_fail)
    with pytest.raises(artifacts.OutputWriteError, match=rf"could not write {f} \(No space left on device\); the previous"):
        artifacts.write_parquet(pd.DataFrame({"x": [9]}), f)
    monkeypatch.undo()
    assert pd.read_parquet(f).equals(old) and sorted(p.name for p in tmp_path.iterdir()) == ["sft.parquet"]


def test_full_disk_on_manifest_write_leaves_the_stage_incomplete(fake_stages, monkeypatch):
    p = fake_stages()
    d = artifacts.stage_dir(p, "00_a")
    d.mkdir(parents=True)
    real = Path.write_text
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: enospc() if "manifest" in self.name else real(self, *a, **k))
    with pytest.raises(artifacts.OutputWriteError, match=rf"could not write {d / artifacts.MANIFEST}"):
        artifacts.StageRun("00_a", p, d).finish({})
    assert not artifacts.is_current(p, "00_a") and not list(d.glob(".tmp-*"))


def test_full_disk_on_rollouts_shard_then_rerun_equals_uninterrupted(tmp_path, monkeypatch):
    from lib import problems
    from lib.teachers import EmbeddedTeacher
    from lib.verify import Verifier

    def gen(out, v):
        return R.generate_rollouts(problems.generate(12, seed=5), EmbeddedTeacher(0.3, verbosity="compact"), 2, out,
                                   v, shard_size=4, progress=False)
    real, calls = R.pq.write_table, []

    def fail_third(table, where, *a, **k):
        calls.append(where)
        if len(calls) == 3:
            Path(where).write_bytes(b"PAR1 half")
            enospc()
        return real(table, where, *a, **k)
    with Verifier(workers=0) as v:
        gen(tmp_path / "ref", v)
        monkeypatch.setattr(R.pq, "write_table", fail_third)
        with pytest.raises(R.ShardWriteError, match=r"could not write rollouts shard .*shard-00002\.parquet "
                                                    r"\(No space left on device\); the 2 shard\(s\) before it are intact"):
            gen(tmp_path / "cut", v)
        monkeypatch.undo()
        assert [x.name for x in R.shard_paths(tmp_path / "cut")] == ["shard-00000.parquet", "shard-00001.parquet"]
        assert not list((tmp_path / "cut").glob("_tmp-*"))
        s = gen(tmp_path / "cut", v)
    assert s.problems_resumed == 8 and s.problems_generated == 4
    assert R.load_rollouts(tmp_path / "cut").to_list() == R.load_rollouts(tmp_path / "ref").to_list()


def test_full_disk_during_a_checkpoint_then_rerun_equals_uninterrupted(tmp_path, monkeypatch):
    from transformers import Trainer

    full = fault_driver.run("sft", tmp_path / "full")
    real = Trainer._save_optimizer_and_scheduler

    def fail_at_4(self, output_dir):  # after checkpoint-4's weights, before its optimizer and trainer_state
        if output_dir.endswith("checkpoint-4"):
            raise OSError(errno.ENOSPC, "No space left on device", os.path.join(output_dir, "optimizer.pt"))
        return real(self, output_dir)
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fail_at_4)
    with pytest.raises(training.CheckpointWriteError, match=r"could not write .*checkpoint-4/optimizer\.pt \(No space "
                                                            r"left on device\).*resumes from .*checkpoint-2"):
        fault_driver.run("sft", tmp_path / "cut")
    monkeypatch.undo()
    half = tmp_path / "cut/trainer/checkpoint-4"
    assert (half / "model.safetensors").is_file() and not (half / "trainer_state.json").exists()  # half written
    # transformers' own pick would be this half checkpoint; ours skips (and removes) it
    from transformers.trainer_utils import get_last_checkpoint
    assert get_last_checkpoint(str(tmp_path / "cut/trainer")) == str(half)
    assert training.last_checkpoint(tmp_path / "cut/trainer", remove_incomplete=False).endswith("checkpoint-2")
    resumed = fault_driver.run("sft", tmp_path / "cut")
    assert resumed["resumed_from_step"] == 2
    assert {k: resumed[k] for k in ("steps", "logged_steps", "losses", "tokens_seen", "weights")} == \
        {k: full[k] for k in ("steps", "logged_steps", "losses", "tokens_seen", "weights")}


# ============================================================================ kill-resume
def kill_and_resume(kind, kill_step, tmp_path):
    """Uninterrupted run in process; a subprocess SIGKILLed at ``kill_step``; the rerun in process."""
    full = fault_driver.run(kind, tmp_path / "full")
    env = {**child_env(), training.KILL_ENV: f"step:{kill_step}"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "tests.fault_driver", kind, str(tmp_path / "cut")], cwd=ROOT,
                          env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-3000:]
    assert not (tmp_path / "cut/result.json").exists()
    resumed = fault_driver.run(kind, tmp_path / "cut")
    print(f"{kind}: killed at step {kill_step} (subprocess {time.time() - t0:.0f} s)")
    return full, resumed


# kill steps drawn once at random (seeded) from the steps that are not checkpoint steps and from those that are
@pytest.mark.parametrize("kind, kill_step, resumed_from", [("midtrain", 3, 2), ("sft", 5, 4)])
def test_kill_resume_sft_trainer_is_bitwise(kind, kill_step, resumed_from, tmp_path):
    """03_mid_train (packed) and 04_sft (padded): TRL SFTTrainer checkpoints."""
    full, resumed = kill_and_resume(kind, kill_step, tmp_path)
    assert resumed["resumed_from_step"] == resumed_from
    assert resumed["logged_steps"] == full["logged_steps"] == list(range(1, fault_driver.STEPS[kind] + 1))
    assert resumed["losses"] == full["losses"] and resumed["tokens_seen"] == full["tokens_seen"]
    assert resumed["weights"] == full["weights"]


@pytest.mark.slow
def test_kill_resume_dpo_trainer_is_bitwise(tmp_path):
    """05_rollout_dpo: TRL DPOTrainer checkpoints."""
    full, resumed = kill_and_resume("dpo", 3, tmp_path)
    assert resumed["resumed_from_step"] == 2
    assert resumed["logged_steps"] == full["logged_steps"] == list(range(1, 7))
    assert resumed["losses"] == full["losses"] and resumed["weights"] == full["weights"]


@pytest.mark.slow
def test_kill_resume_grpo_trainer_is_bitwise(tmp_path):
    """06_rl: the recipe's GRPO trainer (sampling inside each step) checkpoints every step."""
    full, resumed = kill_and_resume("grpo", 3, tmp_path)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["logged_steps"] == full["logged_steps"]
    assert resumed["losses"] == full["losses"] and resumed["weights"] == full["weights"]
