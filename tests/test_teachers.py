"""lib.teachers: the embedded teacher's traces, the endpoint teacher against real loopback
HTTP servers (healthy, failing, stalling, garbage, closed port), the local model teacher."""
from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib import problems as P
from lib import teachers as T
from lib.chat import INSTRUCTION
from lib.judges import JUDGE_PROMPT, LLMJudge, parse_verdict
from lib.verify import Verifier

RATES = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}


@pytest.fixture(scope="module")
def probs():
    return P.generate(40, seed=7)


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=0, timeout_s=5.0) as v:
        yield v


# ============================================================================ embedded teacher

def test_deterministic_per_problem_and_index_whatever_the_batch(probs):
    t = T.EmbeddedTeacher(RATES, seed=3)
    together = t.generate(probs[:10], 4, seed=5)
    reversed_ = t.generate(probs[:10][::-1], 4, seed=5)[::-1]
    one_by_one = [t.generate([p], 4, seed=5)[0] for p in probs[:10]]
    fresh = T.EmbeddedTeacher(RATES, seed=3).generate(probs[:10], 4, seed=5)
    assert together == reversed_ == one_by_one == fresh
    assert together[2][3] == t.rollout(probs[2], 3, seed=5)
    # as a dict row (what lib.rollouts reads back) it is the same problem, hence the same text
    assert t.generate([probs[2].to_dict()], 4, seed=5)[0] == together[2]
    assert t.generate(probs[:10], 4, seed=6) != together  # the seed matters


def test_samples_of_one_problem_differ_in_wording_and_path(probs):
    t = T.EmbeddedTeacher(0.0, verbosity="normal")
    for p, rows in zip(probs[:20], t.generate(probs[:20], 8, seed=0)):
        texts = [r.text for r in rows]
        assert len(set(texts)) == 8, p.id
        # the parts chosen differ too, not only the phrasing
        paths = {json.dumps({k: v for k, v in r.meta["style"].items() if k != "conclusion"}, sort_keys=True)
                 for r in rows}
        assert len(paths) >= 4, p.id


@pytest.mark.parametrize("verbosity", T.VERBOSITIES)
def test_clean_traces_contain_every_step_line_verbatim(probs, verbosity):
    t = T.EmbeddedTeacher(0.0, verbosity=verbosity)
    for p, rows in zip(probs, t.generate(probs, 3, seed=1)):
        for r in rows:
            think, tail = r.text.split("</think>")
            assert r.text.startswith("<think>\n") and r.finished
            lines = think.splitlines()
            assert all(s in lines for s in p.step_texts), (p.id, r.text)
            assert tail.rstrip().endswith(f"\\boxed{{{p.answer}}}") or f"\\boxed{{{p.answer}}}" in tail
            assert "\\boxed" not in think


def test_verbosity_orders_lengths(probs):
    mean = {v: statistics.mean(len(r.text) for row in T.EmbeddedTeacher(0.2, verbosity=v).generate(probs, 4)
                               for r in row) for v in T.VERBOSITIES}
    assert mean["compact"] < mean["normal"] < mean["long"]
    cot = statistics.mean(len(P.cot_solution(p)) for p in probs)
    assert mean["compact"] > 2 * cot  # "long" reasoning even at its most compact


def test_slip_rate_by_level_roughly_as_configured():
    ps = P.generate(400, seed=21)  # 100 per level
    t = T.EmbeddedTeacher(RATES)
    rows = t.generate(ps, 4, seed=0)
    for lv, rate in RATES.items():
        slips = [r.meta["slip"] is not None for p, row in zip(ps, rows) if p.level == lv for r in row]
        assert len(slips) == 400
        assert abs(sum(slips) / len(slips) - rate) < 0.07, (lv, sum(slips) / len(slips))
    assert all(r.meta["slip"] is None for row in T.EmbeddedTeacher(0.0).generate(ps[:50], 4) for r in row)
    always = [r.meta["slip"] is not None for row in T.EmbeddedTeacher(1.0).generate(ps[:100], 2) for r in row]
    assert sum(always) >= 0.97 * len(always)


def test_slipped_traces_are_consistent_wrong_and_verified_so(probs, verifier):
    t = T.EmbeddedTeacher(0.5, verbosity="long")
    rows = [(p, r) for p, row in zip(probs, t.generate(probs, 4, seed=2)) for r in row]
    checks = verifier.check_many([(p.answer, r.text) for p, r in rows])
    n_slipped = n_checked_slip = 0
    for (p, r), c in zip(rows, checks):
        if r.meta["slip"] is None:
            assert c.equal is True, (p.id, c, r.text)
            continue
        n_slipped += 1
        assert c.equal is False and c.reason == "not_equal", (p.id, c)
        steps, wrong = p.resolve(tuple(r.meta["slip"]))
        assert c.answer == wrong == r.meta["wrong_answer"] != p.answer
        lines = r.text.split("</think>")[0].splitlines()
        assert all(s.text in lines for s in steps)  # the whole (wrong) trace, consistently
        i = r.meta["slip"][0]
        if i in r.meta["style"]["checked"]:  # the self-check restates the slip, never catches it
            n_checked_slip += 1
            after = lines[lines.index(steps[i].text) + 1]
            assert steps[i].text in after and not after.startswith("Check:")
    assert n_slipped > 20 and n_checked_slip > 3


def test_loops_are_unfinished_and_repetitive(probs, verifier):
    t = T.EmbeddedTeacher(0.0, repeat_rate=1.0, max_chars=1500)
    rows = [r for row in t.generate(probs[:10], 2) for r in row]
    assert all(r.meta["loop"] and not r.finished and len(r.text) == 1500 for r in rows)
    assert all("</think>" not in r.text and r.text.count("Wait, let me verify this again.") >= 5 for r in rows)
    assert all(c.equal is False for c in verifier.check_many([(p.answer, r.text) for p, r in zip(probs, rows)]))
    assert not any(r.meta["loop"] for row in T.EmbeddedTeacher().generate(probs, 4) for r in row)


@pytest.mark.parametrize("kwargs,match", [
    ({"error_rate": {1: 0.1}}, "no entry for level"),
    ({"error_rate": 1.5}, r"\[0, 1\]"),
    ({"verbosity": "chatty"}, "verbosity"),
    ({"repeat_rate": -0.1}, "repeat_rate"),
])
def test_embedded_bad_settings_are_clear(probs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        T.EmbeddedTeacher(**kwargs).generate([p for p in probs if p.level == 2][:1], 1)


def test_embedded_needs_synthetic_problems():
    with pytest.raises(TypeError, match="local' or 'endpoint"):
        T.EmbeddedTeacher().generate([T.Rollout("x")], 1)
    with pytest.raises(ValueError, match="n \\(rollouts per problem\\)"):
        T.EmbeddedTeacher().generate([], 0)


@pytest.mark.parametrize("gold,answer,verdict", [
    ("\\frac{1}{2}", "0.5", True), ("5", "x = 5", True), ("3", "4", False)])
def test_embedded_complete_answers_the_judge_prompt(gold, answer, verdict):
    t = T.EmbeddedTeacher()
    assert parse_verdict(t.complete(JUDGE_PROMPT.format(problem="p", gold=gold, answer=answer))) is verdict
    assert LLMJudge(t.complete).judge("p", gold, answer) is verdict
    assert parse_verdict(t.complete("Classify this problem.")) is None  # no guessing


# ============================================================================ endpoint teacher

def ok_body(content="The answer is \\boxed{5}.", reasoning="Let me think. 2 + 3 = 5.", field="reasoning_content",
            finish="stop", tokens=17) -> bytes:
    msg = {"role": "assistant", "content": content}
    if reasoning is not None:
        msg[field] = reasoning
    return json.dumps({"id": "x", "object": "chat.completion", "model": "r1",
                       "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 9, "completion_tokens": tokens}}).encode()


class FakeServer:
    """A real HTTP server on loopback. ``behave(i, body) -> (status, bytes, delay_s)`` answers
    POST number i; GET /models lists "r1". Counts requests and the most in flight at once."""

    def __init__(self, behave, max_requests=200):
        self.behave, self.max_requests = behave, max_requests
        self.posts: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # set at shutdown so stalled handlers end
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep test output clean
                pass

            def _send(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def do_GET(self):
                self._send(200, json.dumps({"data": [{"id": "r1"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    i = len(server.posts)
                    server.posts.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if i >= server.max_requests:
                        status, out, delay = 503, b"too many requests in test", 0
                    else:
                        status, out, delay = server.behave(i, body)
                    if delay:
                        server.release.wait(delay)
                    self._send(status, out)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@contextmanager
def teacher_for(server, **kw):
    kw = {"max_retries": 2, "backoff_s": 0.01, "timeout_s": 5.0, "progress": False, **kw}
    t = T.EndpointTeacher(server.url, "r1", **kw)
    try:
        yield t
    finally:
        t.close()


PROBS = [P.Problem(f"q{i}", "arithmetic", 1, "elementary", f"What is {i} + 1?", str(i + 1), ()) for i in range(4)]


def test_endpoint_healthy_reasoning_separate_and_concurrency_bounded():
    with FakeServer(lambda i, b: (200, ok_body(), 0.1)) as srv, teacher_for(srv, max_concurrency=3) as t:
        rows = t.generate(PROBS, 3, seed=1)
    assert [len(r) for r in rows] == [3, 3, 3, 3] and len(srv.posts) == 12
    r = rows[0][0]
    assert r.text == "<think>\nLet me think. 2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}."
    assert r.reasoning == "Let me think. 2 + 3 = 5." and r.finished and r.n_tokens == 17
    assert 2 <= srv.max_in_flight <= 3  # concurrent, never above the limit
    body = srv.posts[0]
    assert body["model"] == "r1" and body["temperature"] == 0.6 and body["top_p"] == 0.95
    assert body["messages"][0]["role"] == "user" and body["messages"][0]["content"].endswith(INSTRUCTION)
    seeds = {(b["messages"][0]["content"], b["seed"]) for b in srv.posts}
    assert len({s for _, s in seeds}) == 12  # one seed per (problem, sample): reproducible on vLLM
    assert T.sample_seed(1, "q0", 2) in {s for _, s in seeds}


@pytest.mark.parametrize("body,text,reasoning,finished", [
    (ok_body(field="reasoning"), "<think>\nLet me think. 2 + 3 = 5.\n</think>\n\nThe answer is \\boxed{5}.",
     "Let me think. 2 + 3 = 5.", True),  # newer vLLM field name
    (ok_body(content="2+3=5</think>\\boxed{5}", reasoning=None), "<think>\n2+3=5</think>\\boxed{5}", None, True),
    (ok_body(content="<think>a</think>\\boxed{5}", reasoning=None), "<think>a</think>\\boxed{5}", None, True),
    (ok_body(content=None, reasoning="still going", finish="length"), "<think>\nstill going\n</think>\n\n",
     "still going", False),
])
def test_parse_chat_response(body, text, reasoning, finished):
    r = T.parse_chat_response(body.decode())
    assert (r.text, r.reasoning, r.finished) == (text, reasoning, finished)


def test_endpoint_retries_5xx_then_succeeds():
    def behave(i, body):
        return (500, b"internal error", 0) if i < 2 else (200, ok_body(), 0)

    with FakeServer(behave) as srv, teacher_for(srv, max_concurrency=1) as t:
        rows = t.generate(PROBS[:1], 1)
    assert rows[0][0].reasoning and len(srv.posts) == 3


def test_endpoint_always_5xx_is_a_clear_error_in_bounded_time():
    with FakeServer(lambda i, b: (500, b"boom", 0)) as srv, teacher_for(srv, max_concurrency=2) as t:
        t0 = time.monotonic()
        with pytest.raises(T.TeacherUnavailableError) as e:
            t.generate(PROBS, 2)
        assert time.monotonic() - t0 < 5
    msg = str(e.value)
    assert srv.url in msg and "3 attempt(s)" in msg and "HTTP 500" in msg
    assert len(srv.posts) <= 8 * 3  # the batch stops; nothing retries forever


def test_endpoint_429_honours_retry_after_and_recovers():
    with FakeServer(lambda i, b: (429, b"slow down", 0) if i == 0 else (200, ok_body(), 0)) as srv, \
            teacher_for(srv) as t:
        assert t.generate(PROBS[:1], 1)[0][0].finished and len(srv.posts) == 2


def test_endpoint_stall_times_out_retries_then_errors_in_bounded_time():
    with FakeServer(lambda i, b: (200, ok_body(), 30)) as srv, \
            teacher_for(srv, timeout_s=0.3, max_retries=1, max_concurrency=1) as t:
        t0 = time.monotonic()
        with pytest.raises(T.TeacherUnavailableError, match="timeout after 0.3 s") as e:
            t.generate(PROBS[:1], 1)
        assert time.monotonic() - t0 < 3.0
    assert "2 attempt(s)" in str(e.value) and len(srv.posts) == 2


def test_endpoint_stall_once_then_answers():
    with FakeServer(lambda i, b: (200, ok_body(), 30 if i == 0 else 0)) as srv, \
            teacher_for(srv, timeout_s=0.3, max_concurrency=1) as t:
        assert t.generate(PROBS[:1], 1)[0][0].finished and len(srv.posts) == 2


@pytest.mark.parametrize("garbage,match", [
    (b"<html>502 Bad Gateway</html>", "not JSON"),
    (json.dumps({"object": "chat.completion"}).encode(), "no 'choices'"),
    (json.dumps({"choices": [{"index": 0}]}).encode(), "no 'message'"),
])
def test_endpoint_garbage_is_retried_then_reported(garbage, match):
    with FakeServer(lambda i, b: (200, garbage, 0)) as srv, teacher_for(srv, max_concurrency=1) as t:
        with pytest.raises(T.TeacherUnavailableError, match=match):
            t.generate(PROBS[:1], 1)
    assert len(srv.posts) == 3
    with FakeServer(lambda i, b: (200, garbage if i == 0 else ok_body(), 0)) as srv, teacher_for(srv) as t:
        assert t.generate(PROBS[:1], 1)[0][0].finished


def test_endpoint_client_errors_are_not_retried():
    with FakeServer(lambda i, b: (400, b'{"error": "prompt too long"}', 0)) as srv, teacher_for(srv) as t:
        with pytest.raises(T.TeacherRequestError, match="prompt too long"):
            t.generate(PROBS[:1], 1)
    assert len(srv.posts) == 1


def test_endpoint_wrong_model_name_is_clear():
    with FakeServer(lambda i, b: (200, ok_body(), 0)) as srv:
        t = T.EndpointTeacher(srv.url, "deepseek-r1", progress=False)
        with pytest.raises(T.TeacherRequestError, match="serves \\['r1'\\]"):
            t.generate(PROBS[:1], 1)
        t.close()
        assert srv.posts == []


def test_endpoint_closed_port_fails_fast_and_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    t = T.EndpointTeacher(url, "r1", progress=False)
    t0 = time.monotonic()
    with pytest.raises(T.TeacherUnavailableError, match="unreachable") as e:
        t.generate(PROBS[:1], 1)
    assert time.monotonic() - t0 < 2.0 and url in str(e.value)
    t2 = T.EndpointTeacher(url, "r1", check_server=False, max_retries=2, backoff_s=0.01, progress=False)
    with pytest.raises(T.TeacherUnavailableError, match="3 attempt\\(s\\).*ConnectError"):
        t2.generate(PROBS[:1], 1)


def test_endpoint_complete_returns_the_answer_without_reasoning():
    reply = ok_body(content="YES", reasoning="The two are equal, so yes... or no? Yes.")
    with FakeServer(lambda i, b: (200, reply, 0)) as srv, teacher_for(srv) as t:
        assert t.complete("Are 1/2 and 0.5 equal?") == "YES"
        assert LLMJudge(t.complete).judge("p", "1/2", "0.5") is True
    assert srv.posts[0]["messages"] == [{"role": "user", "content": "Are 1/2 and 0.5 equal?"}]


# ============================================================================ local model, factory

def test_local_model_teacher(tiny_model, tiny_tokenizer, tmp_path):
    from lib.model import save

    save(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    t = T.LocalModelTeacher(tmp_path / "ckpt", max_new_tokens=6, batch_size=4)
    rows = t.generate(P.generate(2, seed=1), 3, seed=0)
    assert [len(r) for r in rows] == [3, 3]
    for r in (r for row in rows for r in row):
        assert isinstance(r.text, str) and isinstance(r.finished, bool) and 1 <= r.n_tokens <= 6
    assert rows == t.generate(P.generate(2, seed=1), 3, seed=0)  # seeded
    assert isinstance(t.complete("What is 2 + 2?"), str)


def test_from_params_builds_each_kind():
    """The one factory: params section ``teacher`` -> the teacher of its kind, settings carried over."""
    from lib.params import Teacher as TeacherParams

    base = TeacherParams.model_validate({})
    emb = T.from_params(base.model_copy(update={"kind": "embedded", "verbosity": "compact"}), seed=3)
    assert isinstance(emb, T.EmbeddedTeacher) and isinstance(emb, T.Teacher)
    assert (emb.verbosity, emb.seed) == ("compact", 3)
    loc = T.from_params(base.model_copy(update={"kind": "local", "checkpoint": "ckpt", "temperature": 0.3}), seed=0)
    assert isinstance(loc, T.LocalModelTeacher) and loc.temperature == 0.3 and loc.checkpoint_path == "ckpt"
    ep = T.from_params(base.model_copy(update={"kind": "endpoint", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                                               "max_concurrency": 3}), seed=0)
    try:
        assert isinstance(ep, T.EndpointTeacher) and ep.max_concurrency == 3 and ep.model == "m"
    finally:
        ep.close()
    with pytest.raises(ValueError, match="unknown teacher kind 'r1'.*embedded"):
        T.from_params(base.model_copy(update={"kind": "r1"}), seed=0)


def test_every_slip_resolves_or_is_refused():
    """Regression: a slip on a fraction's reduction line once divided by zero and crashed a run.

    Every slip the teacher can draw (each step x each delta) must give a trace or a SlipError.
    """
    ps = P.generate(400, seed=0, split="train")
    tried = 0
    for p in ps:
        for i in range(len(p.steps)):
            for delta in (-10, -2, -1, 1, 2, 10):
                try:
                    p.resolve((i, delta))
                except P.SlipError:
                    pass
                tried += 1
    assert tried > 4000
