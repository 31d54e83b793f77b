"""The real-scale clients (teacher, LLM judge, LLM tagger) against a real `transformers serve` on loopback.

No mocks: a small checkpoint is served by transformers' own OpenAI-compatible server, started
and stopped by lib.serving with a health check. The model is untrained, so its answers are
noise; what is checked is the path: requests reach generation with their sampling settings,
replies come back through the same parsers as at real scale, and an outage is named.
"""
from __future__ import annotations

import json

import pytest

from lib import evaluation, serving, tagging
from lib import model as modellib
from lib import params as P
from lib.paths import PARAMS_DIR
from lib.rollouts import PromptItem
from lib.teachers.endpoint import EndpointTeacher, TeacherUnavailableError

needs_serve = pytest.mark.skipif(not serving.serve_available(), reason='needs pip install -e ".[serving]"')


@pytest.fixture(scope="module")
def checkpoint(tiny_model, tiny_tokenizer, tmp_path_factory):
    return modellib.save(tiny_model, tiny_tokenizer, tmp_path_factory.mktemp("served") / "ckpt")


def test_the_served_copy_samples_and_leaves_the_checkpoint_alone(checkpoint, tmp_path):
    before = (checkpoint / "generation_config.json").read_text()
    out = serving.sampling_copy(checkpoint, tmp_path / "copy")
    assert json.loads((out / "generation_config.json").read_text())["do_sample"] is True
    assert (checkpoint / "generation_config.json").read_text() == before  # the original is untouched
    assert (out / "config.json").is_symlink() and (out / "config.json").resolve() == (checkpoint / "config.json")
    assert serving.sampling_copy(checkpoint, tmp_path / "copy") == out  # a second call replaces the copy
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        serving.sampling_copy(tmp_path, tmp_path / "nothing")


@needs_serve
@pytest.mark.slow
def test_teacher_judge_and_tagger_through_transformers_serve(checkpoint, tmp_path):
    probs = [PromptItem("p1", "What is 2 + 3?"), PromptItem("p2", "What is 7 times 6?")]
    with serving.LocalServer(checkpoint, work_dir=tmp_path / "server") as srv:
        assert srv.healthy() and srv.base_url.startswith("http://127.0.0.1:")
        kw = dict(max_tokens=12, max_concurrency=2, max_retries=1, timeout_s=60, progress=False)
        sampled = EndpointTeacher(srv.base_url, srv.model, temperature=1.0, **kw).generate(probs, 3, seed=0)
        greedy = EndpointTeacher(srv.base_url, srv.model, temperature=0.0, **kw).generate(probs, 3, seed=0)
        assert [len(r) for r in sampled] == [3, 3] and all(r.n_tokens == 12 for rs in sampled for r in rs)
        # temperature reached generation: at T=1 an untrained model's samples differ; at T=0 they are one text
        assert all(len({r.text for r in rs}) > 1 for rs in sampled), [[r.text for r in rs] for rs in sampled]
        assert all(len({r.text for r in rs}) == 1 for rs in greedy)

        # the LLM second opinion (params verify.judge_*): every math-verify rejection goes to the server
        v = P.load(PARAMS_DIR / "smoke.yaml", ["verify.second_opinion=llm", f"verify.judge_base_url={srv.base_url}",
                                                f"verify.judge_model={srv.model}", "verify.workers=0",
                                                "verify.judge_max_retries=0"]).verify
        with evaluation.make_verifier(v) as verifier:
            checks = verifier.check_many([("5", "\\boxed{6}"), ("42", "\\boxed{41}")])
            stats = verifier.stats
        assert [c.equal for c in checks] == [False, False] and stats.judge_calls == 2
        assert stats.judge_failed == 2  # noise is no YES/NO: the rejection stands, counted, not an outage

        # the LLM tagger through the teacher's client (params teacher.*, tagging.tagger: llm)
        p = P.load(PARAMS_DIR / "smoke.yaml", ["tagging.tagger=llm", "teacher.kind=endpoint",
                                                f"teacher.base_url={srv.base_url}", f"teacher.model={srv.model}",
                                                "teacher.max_retries=0", "teacher.max_tokens=12"])
        tagger = tagging.from_params(p.tagging, p.teacher, seed=0)
        tags = tagger.tag_many(["What is 2 + 3?", "How many ways to order 3 books?"])
        assert len(tags) == 2 and tagger.counts["error"] == 0  # every request answered
        assert tagger.counts["ok"] + tagger.counts["partial"] + tagger.counts["unparseable"] == 2

    assert not srv.healthy()  # stopped on exit
    with pytest.raises(TeacherUnavailableError):
        EndpointTeacher(srv.base_url, srv.model, temperature=1.0, max_tokens=4, max_retries=0, timeout_s=5,
                        progress=False).generate(probs[:1], 1)


@needs_serve
def test_a_server_that_cannot_start_is_named(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")  # no model type: transformers cannot load it
    with pytest.raises(serving.ServerError, match="transformers serve"):
        with serving.LocalServer(tmp_path / "broken", work_dir=tmp_path / "srv", startup_timeout_s=60):
            pass


@needs_serve
@pytest.mark.slow
def test_server_stopped_mid_stage_is_named_and_a_rerun_resumes(checkpoint, tmp_path):
    """Stage 01's loop against a real server that is stopped once the first shard is written: the
    teacher's named error stops the work, the written shard stays, and with the server back a
    rerun completes the rest without redoing or duplicating a problem."""
    import threading
    import time

    from lib import problems as PR
    from lib import rollouts
    from lib.verify import Verifier

    probs = PR.generate(96, seed=5)
    out = tmp_path / "rollouts"
    kw = dict(max_tokens=8, max_concurrency=2, max_retries=0, timeout_s=30, temperature=1.0, progress=False)
    srv = serving.LocalServer(checkpoint, work_dir=tmp_path / "server").start()
    try:
        def stop_after_first_shard():
            deadline = time.monotonic() + 120
            while not list(out.glob(rollouts.SHARD_GLOB)) and time.monotonic() < deadline:
                time.sleep(0.02)
            srv.stop()

        watcher = threading.Thread(target=stop_after_first_shard)
        watcher.start()
        with Verifier(workers=0) as v, pytest.raises(TeacherUnavailableError):
            rollouts.generate_rollouts(probs, EndpointTeacher(srv.base_url, srv.model, **kw), 2, out, v,
                                       shard_size=16, progress=False)
        watcher.join()
        written = rollouts.summarize(out).problems
        assert 16 <= written < 96 and written % 16 == 0  # whole shards kept, the rest not done
    finally:
        srv.stop()
    with serving.LocalServer(checkpoint, work_dir=tmp_path / "server2") as srv2, Verifier(workers=0) as v:
        summary = rollouts.generate_rollouts(probs, EndpointTeacher(srv2.base_url, srv2.model, **kw), 2, out, v,
                                             shard_size=16, progress=False)
    df = rollouts.load_rollouts(out).to_pandas()
    assert summary.problems == 96 and summary.problems_resumed == written and len(df) == 192
    assert not df.duplicated(["problem_id", "sample_index"]).any()
