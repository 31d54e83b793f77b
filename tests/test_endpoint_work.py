"""The LLM judge and the LLM tagger at real-scale throughput, through the same endpoint client as
the teacher against a real HTTP server on loopback: requests run concurrently (bounded), and an
outage stops the work with a named error instead of passing silently - keeping what was written."""
from __future__ import annotations

import json

import pytest

from lib import problems as P
from lib import rollouts
from lib.tagging import LLMTagger, TaggerOutageError
from lib.teachers import EmbeddedTeacher
from lib.judges import LLMJudge
from lib.verify import JudgeOutageError, Verifier
from tests.test_teachers import FakeServer, ok_body, teacher_for

YES = ok_body(content="YES", reasoning=None)
TAG = ok_body(content=json.dumps({"domain": "algebra", "difficulty": "high school"}), reasoning=None)


def rejections(n):
    """(gold, completion) pairs that math-verify rejects: every one goes to the judge."""
    return [(str(i), f"so the answer is \\boxed{{{i + 1}}}") for i in range(n)]


def test_judge_calls_run_concurrently_and_recover_rejections():
    with FakeServer(lambda i, b: (200, YES, 0.2)) as srv, teacher_for(srv, max_concurrency=8) as t:
        with Verifier(workers=0, judge=LLMJudge(t.complete, name="r1"), judge_concurrency=4) as v:
            checks = v.check_many(rejections(12))
    assert all(c.equal is True and c.checker == "judge:r1" for c in checks)
    assert len(srv.posts) == 12 and 2 <= srv.max_in_flight <= 4
    assert v.stats.judge_calls == 12 and v.stats.judge_recovered == 12


def test_judge_outage_is_a_named_error_past_the_share():
    # the server answers 3 requests, then fails every one (503, no retries left)
    with FakeServer(lambda i, b: (200, YES, 0) if i < 3 else (503, b"down", 0)) as srv, \
            teacher_for(srv, max_retries=0, max_concurrency=4) as t:
        with Verifier(workers=0, judge=LLMJudge(t.complete), judge_concurrency=4, judge_max_failure_share=0.2) as v:
            with pytest.raises(JudgeOutageError, match=r"failed on 7 of 10 calls.*judge_max_failure_share"):
                v.check_many(rejections(10))
        # under the share, failures leave the rejection standing and are counted
        with Verifier(workers=0, judge=LLMJudge(t.complete), judge_max_failure_share=1.0) as v:
            checks = v.check_many(rejections(4))
        assert [c.equal for c in checks] == [False] * 4 and v.stats.judge_failed == 4


def test_a_stopped_server_stops_data_generation_and_a_rerun_resumes(tmp_path):
    """Stage 01's loop with an LLM judge: the server goes away after the first shard's calls; the
    named error stops the run, the finished shard stays, and a rerun with the server back
    completes the rest without redoing or duplicating a row."""
    probs = P.generate(48, seed=3)
    teacher = EmbeddedTeacher(error_rate=0.5, seed=0, verbosity="compact")
    first_shard_calls = sum(r.meta["slip"] is not None for row in teacher.generate(probs[:16], 2) for r in row)
    assert first_shard_calls > 3  # the judge has work in the first shard
    alive = {"n": first_shard_calls}

    def behave(i, body):
        return (200, YES, 0) if i < alive["n"] else (503, b"server stopped", 0)

    out = tmp_path / "rollouts"
    with FakeServer(behave) as srv, teacher_for(srv, max_retries=0) as t:
        with Verifier(workers=0, judge=LLMJudge(t.complete), judge_max_failure_share=0.1) as v:
            with pytest.raises(JudgeOutageError):
                rollouts.generate_rollouts(probs, teacher, 2, out, v, shard_size=16, progress=False)
        assert rollouts.summarize(out).problems == 16  # the first shard survived
        alive["n"] = 10**6  # the server is back
        with Verifier(workers=0, judge=LLMJudge(t.complete), judge_max_failure_share=0.1) as v:
            summary = rollouts.generate_rollouts(probs, teacher, 2, out, v, shard_size=16, progress=False)
    df = rollouts.load_rollouts(out).to_pandas()
    assert summary.problems == 48 and len(df) == 96
    assert not df.duplicated(["problem_id", "sample_index"]).any()


def test_tagger_is_concurrent_and_an_outage_is_named():
    texts = [f"Solve for x: {i}x + 1 = 7." for i in range(12)]
    with FakeServer(lambda i, b: (200, TAG, 0.2)) as srv, teacher_for(srv, max_concurrency=8) as t:
        tags = LLMTagger(t.complete, max_concurrency=4).tag_many(texts)
    assert [x.domain for x in tags] == ["algebra"] * 12 and 2 <= srv.max_in_flight <= 4
    with FakeServer(lambda i, b: (200, TAG, 0) if i < 2 else (503, b"down", 0)) as srv, \
            teacher_for(srv, max_retries=0) as t:
        tagger = LLMTagger(t.complete, max_concurrency=2, max_failure_share=0.1)
        with pytest.raises(TaggerOutageError, match=r"no answer for 10 of 12 problems.*tagging.max_failure_share"):
            tagger.tag_many(texts)
        assert tagger.counts["error"] == 10 and tagger.counts["ok"] == 2
