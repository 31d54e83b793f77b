"""lib.rollouts: every rollout kept with its verdict, shards of whole problems, resume after a
SIGKILL (even mid-write) gives exactly the rows of an uninterrupted run, bad rows set aside."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib import problems as P
from lib.launch import child_env
from lib import rollouts as R
from lib.teachers import EmbeddedTeacher
from lib.judges import LLMJudge
from lib.verify import Verifier

ROOT = Path(__file__).resolve().parents[1]
N = 4


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=0, timeout_s=5.0) as v:
        yield v


@pytest.fixture(scope="module")
def probs():
    return P.generate(24, seed=5)


def rows_of(out_dir) -> list[dict]:
    return R.load_rollouts(out_dir).to_list()


def test_every_rollout_kept_with_its_verdict(probs, verifier, tmp_path):
    s = R.generate_rollouts(probs, EmbeddedTeacher(0.3), N, tmp_path, verifier, shard_size=7, progress=False)
    rows = rows_of(tmp_path)
    assert len(rows) == s.rollouts == len(probs) * N and s.problems == len(probs)
    assert Counter(r["problem_id"] for r in rows) == {p.id: N for p in probs}
    assert [r["problem_id"] for r in rows[::N]] == [p.id for p in probs]  # input order
    assert all(sorted(r["sample_index"] for r in rows if r["problem_id"] == p.id) == list(range(N)) for p in probs)
    for r in rows:  # verdict agrees with the teacher's deliberate slips; both kinds are kept
        assert r["correct"] is (json.loads(r["meta"])["slip"] is None)
        # a correct rollout writes the gold's own text (no parse needed); a slip is parsed and rejected
        assert r["checker"] == ("identical" if r["correct"] else "math_verify") and r["teacher"] == "embedded-normal"
        assert r["n_tokens"] == len(r["text"].split()) and r["finished"] and r["reasoning"] is None
    assert s.correct + s.incorrect + s.unverifiable == s.rollouts and 0 < s.incorrect < s.correct
    assert sum(b["rollouts"] for b in s.by_level.values()) == s.rollouts
    assert s.rollouts_per_s > 0 and s.shards == 4 and s.rejected_rows == 0
    assert json.loads((tmp_path / R.SUMMARY_FILE).read_text())["rollouts"] == s.rollouts
    assert (tmp_path / R.REJECTED_FILE).read_text() == ""
    for shard in R.shard_paths(tmp_path):  # a problem never straddles two shards
        ids = pq.read_table(shard, columns=["problem_id"]).column("problem_id").to_pylist()
        assert all(c == N for c in Counter(ids).values())


def test_loadable_with_datasets_load_dataset(probs, verifier, tmp_path):
    import datasets

    R.generate_rollouts(probs[:6], EmbeddedTeacher(), 2, tmp_path / "out", verifier, shard_size=4, progress=False)
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / R.SHARD_GLOB), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 12 and ds.column_names == R.ROW_SCHEMA.names


def test_count_tokens_and_dict_rows(probs, verifier, tmp_path):
    R.generate_rollouts(probs[:5], EmbeddedTeacher(), 2, tmp_path / "a", verifier, progress=False, count_tokens=len)
    R.generate_rollouts([p.to_dict() for p in probs[:5]], EmbeddedTeacher(), 2, tmp_path / "b", verifier,
                        progress=False, count_tokens=len)
    a, b = rows_of(tmp_path / "a"), rows_of(tmp_path / "b")
    assert a == b and all(r["n_tokens"] == len(r["text"]) for r in a)


# ---------------------------------------------------------------------------- resume after kill

RUN = """
import sys
from lib import problems as P
from lib.rollouts import generate_rollouts
from lib.teachers import EmbeddedTeacher
from lib.verify import Verifier
n_problems, shard_size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Verifier(workers=0) as v:
    generate_rollouts(P.generate(n_problems, seed=5), EmbeddedTeacher(0.3, verbosity="compact"), 4, out, v,
                      shard_size=shard_size, progress=False)
"""


def run_in_process(n_problems, shard_size, out, verifier):
    return R.generate_rollouts(P.generate(n_problems, seed=5), EmbeddedTeacher(0.3, verbosity="compact"), 4, out,
                               verifier, shard_size=shard_size, progress=False)


def spawn(n_problems, shard_size, out, kill_at=None):
    env = child_env()  # the checkout first, the caller's PYTHONPATH kept (lib.launch)
    env.pop(R.KILL_ENV, None)
    if kill_at:
        env[R.KILL_ENV] = kill_at
    return subprocess.Popen([sys.executable, "-c", RUN, str(n_problems), str(shard_size), str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, verifier):
    out = tmp_path_factory.mktemp("reference")
    run_in_process(30, 4, out, verifier)
    return rows_of(out)


def test_resume_after_sigkill_mid_write_equals_uninterrupted(tmp_path, verifier, reference):
    proc = spawn(30, 4, tmp_path, kill_at="mid_write:2")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out.decode()[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "_tmp-shard-00002.parquet" in names and "shard-00001.parquet" in names
    assert "shard-00002.parquet" not in names
    with pytest.raises(Exception):  # the half-written temp file is not a readable shard
        pq.read_table(tmp_path / "_tmp-shard-00002.parquet")

    s = run_in_process(30, 4, tmp_path, verifier)
    assert not list(tmp_path.glob("_tmp-*"))
    assert s.problems_resumed == 8 and s.problems_generated == 22 and s.problems == 30
    assert rows_of(tmp_path) == reference
    again = run_in_process(30, 4, tmp_path, verifier)  # a finished run is a no-op
    assert again.problems_generated == 0 and rows_of(tmp_path) == reference


def test_resume_after_external_sigkill_equals_uninterrupted(tmp_path, verifier, reference):
    proc = spawn(30, 4, tmp_path)
    deadline = time.monotonic() + 120
    while not R.shard_paths(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    written = len(R.shard_paths(tmp_path))
    assert written >= 1
    s = run_in_process(30, 4, tmp_path, verifier)
    assert s.problems_resumed == min(30, 4 * written) and not list(tmp_path.glob("_tmp-*"))
    rows = rows_of(tmp_path)
    assert Counter(r["problem_id"] for r in rows) == {r["problem_id"]: 4 for r in reference}
    assert rows == reference


def test_resume_with_other_settings_is_refused(probs, verifier, tmp_path):
    R.generate_rollouts(probs[:3], EmbeddedTeacher(), 2, tmp_path, verifier, progress=False)
    with pytest.raises(ValueError, match="other settings.*'n': \\(2, 3\\)"):
        R.generate_rollouts(probs[:3], EmbeddedTeacher(), 3, tmp_path, verifier, progress=False)
    with pytest.raises(ValueError, match="verbosity"):
        R.generate_rollouts(probs[:3], EmbeddedTeacher(verbosity="long"), 2, tmp_path, verifier, progress=False)


# ---------------------------------------------------------------------------- input rows

GOOD = "<think>\n2 + 3 = 5\n</think>\nSo \\boxed{5}."
BAD = "<think>\n2 + 3 = 6\n</think>\nSo \\boxed{6}."


def test_bad_rows_are_set_aside_with_reasons_and_traces_used_as_is(verifier, tmp_path):
    items = [
        {"id": "a", "problem": "What is 2 + 3?", "answer": "5", "generation": GOOD, "level": "Level 2"},
        {"id": "b", "problem": "What is 2 + 3?", "answer": 5, "generations": [GOOD, BAD, "<think>\nhmm\n</think>\nI give up."]},
        {"id": "c", "answer": "5", "generation": GOOD},                          # no problem text
        {"id": "d", "problem": "What is 2 + 3?", "generation": GOOD},            # no answer
        {"id": "e", "problem": "What is 2 + 3?", "answer": ["5"], "generation": GOOD},  # answer of wrong type
        {"id": "a", "problem": "Again?", "answer": "1", "generation": GOOD},     # duplicate id
        "just a string",                                                          # not a row
        {"id": "f", "problem": "   ", "answer": "5", "generation": GOOD},        # empty problem
        {"id": "g", "problem": "What is 2 + 3?", "answer": "5", "generation": 42},  # trace of wrong type
        {"problem": "What is 1 + 1?", "answer": "2", "generation": "\\boxed{2}"},  # no id: derived
    ]
    s = R.generate_rollouts(items, None, 8, tmp_path, verifier, progress=False)
    rejected = [json.loads(line) for line in (tmp_path / R.REJECTED_FILE).read_text().splitlines()]
    assert s.rejected_rows == len(rejected) == 7
    reasons = {r["index"]: r["reason"] for r in rejected}
    assert reasons[2] == "missing problem text" and reasons[3] == "missing reference answer"
    assert "must be a string, got list" in reasons[4] and "duplicate id 'a' (first at index 0)" in reasons[5]
    assert "expected a mapping" in reasons[6] and reasons[7] == "empty problem text" and "trace field" in reasons[8]
    assert rejected[0]["row"]["id"] == "c"
    rows = rows_of(tmp_path)
    assert [(r["problem_id"], r["sample_index"], r["correct"], r["reason"]) for r in rows] == [
        ("a", 0, True, "equal"), ("b", 0, True, "equal"), ("b", 1, False, "not_equal"),
        ("b", 2, False, "no_answer"), (rows[-1]["problem_id"], 0, True, "equal")]
    assert rows[0]["level"] == 2 and rows[1]["answer"] == "5" and rows[-1]["problem_id"].startswith("sha1-")
    assert {r["teacher"] for r in rows} == {"dataset"} and rows[0]["text"] == GOOD


def test_problems_from_jsonl_and_parquet_with_field_map(verifier, tmp_path):
    recs = [{"uid": f"u{i}", "question": f"What is {i} + 1?", "gold": str(i + 1), "solution": f"\\boxed{{{i + 1}}}"}
            for i in range(3)]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n")
    fmap = {"id": "uid", "problem": "question", "answer": "gold", "trace": "solution"}
    s = R.generate_rollouts(jsonl, None, 1, tmp_path / "a", verifier, progress=False, field_map=fmap)
    assert s.rollouts == 3 and s.correct == 3 and s.rejected_rows == 1
    bad = json.loads((tmp_path / "a" / R.REJECTED_FILE).read_text())
    assert bad["reason"].startswith("line 4: not valid JSON") and bad["row"] == "{not json"
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet")
    R.generate_rollouts(tmp_path / "p.parquet", None, 1, tmp_path / "b", verifier, progress=False, field_map=fmap)
    assert rows_of(tmp_path / "a") == rows_of(tmp_path / "b")
    with pytest.raises(ValueError, match="field_map keys"):
        R.validate_problems(recs, {"question": "problem"})


def test_second_opinion_is_recorded(verifier, tmp_path):
    items = [{"id": "x", "problem": "p", "answer": "5", "generation": BAD}]
    with Verifier(workers=0, judge=LLMJudge(lambda prompt: "YES", name="always-yes")) as lenient:
        s = R.generate_rollouts(items, None, 1, tmp_path, lenient, progress=False)
    (row,) = rows_of(tmp_path)
    assert row["correct"] is True and row["checker"] == "judge:always-yes" and row["reason"].startswith("recovered")
    assert s.recovered_by_second_opinion == 1


def test_a_teacher_is_needed_for_rows_without_traces(probs, verifier, tmp_path):
    with pytest.raises(ValueError, match="no teacher was given"):
        R.generate_rollouts(probs[:2], None, 1, tmp_path, verifier, progress=False)
