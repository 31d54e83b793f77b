"""An OpenAI-compatible ``/chat/completions`` server as teacher (vLLM, SGLang, a hosted API).

The HTTP client lives here: bounded concurrency, per-request timeouts, retries with backoff,
and named errors when the server is down, refuses a request or answers garbage.
"""
from __future__ import annotations

import json
import random
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Sequence

from lib.chat import THINK_CLOSE, THINK_OPEN, prompt_messages

from lib.progress import Bar
from lib.teachers.base import ProblemLike, Rollout, _check_n, problem_id, sample_seed, strip_reasoning



class TeacherUnavailableError(RuntimeError):
    """The teacher server could not give a usable answer (down, failing, stalling, garbage)."""


class TeacherRequestError(RuntimeError):
    """The server refused the request itself (4xx other than 408/429): retrying cannot help."""


_RETRY_STATUS = {408, 409, 425, 429}  # plus every 5xx


class _Stopped(TeacherUnavailableError):
    """A request abandoned because another one in the batch failed first (never the reported error)."""


class _Retryable(Exception):
    def __init__(self, what: str, retry_after: float | None = None):
        super().__init__(what)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Job:
    messages: list
    seed: int | None
    label: str


class EndpointTeacher:
    """An OpenAI-compatible ``/chat/completions`` server as teacher (vLLM, SGLang, a hosted API).

    Real scale serves DeepSeek-R1 with vLLM (``vllm serve deepseek-ai/DeepSeek-R1
    --reasoning-parser deepseek_r1``); the paper samples ~8 rollouts per problem.

    * Transport: ``httpx`` directly rather than the ``openai`` client, so that retries, backoff
      and what counts as a garbage answer are ours and visible, and non-standard fields
      (``reasoning_content`` / ``reasoning``) are read without relying on pydantic extras.
    * Concurrency: at most ``max_concurrency`` requests in flight (a thread pool of that size
      and a connection pool of the same size).
    * Samples: the ``n`` rollouts of a problem are ``n`` separate requests, each with its own
      ``seed`` derived from (seed, problem id, sample index): vLLM then reproduces a sample
      (given the same server and batch), a failed sample is retried alone, and load spreads
      evenly. The API's ``n`` parameter is not used (not every server supports it, and one
      failure would lose all n).
    * Retries: connection errors, timeouts, HTTP 408/409/425/429/5xx and garbage answers
      (non-JSON, no ``choices``, no ``message``) are retried up to ``max_retries`` times with
      exponential backoff ``backoff_s * 2**attempt`` (capped at ``max_backoff_s``, with jitter,
      honouring ``Retry-After``); then :class:`TeacherUnavailableError` names the URL, the
      attempts made and the last error. Other 4xx (bad model name, prompt too long) raise
      :class:`TeacherRequestError` at once. The first request that gives up stops the batch.
    * Before the first batch, ``GET /models`` checks that something listens at ``base_url``
      (a closed port fails in well under a second, not after the retry schedule) and that it
      serves ``model``.
    * Reasoning: when the server returns it separately (``message.reasoning_content``, DeepSeek
      API and vLLM < 0.10; ``message.reasoning``, newer vLLM), ``text`` is
      ``<think>\\n{reasoning}\\n</think>\\n\\n{content}`` and ``reasoning`` is set. When the
      template opened ``<think>`` in the prompt (DeepSeek-R1's does) the content starts inside
      the reasoning; a missing ``<think>`` is then restored. ``finished`` is
      ``finish_reason == "stop"``; ``n_tokens`` is ``usage.completion_tokens``.
    """

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", max_concurrency: int = 8,
                 timeout_s: float = 600.0, max_retries: int = 4, backoff_s: float = 1.0,
                 temperature: float = 0.6, top_p: float = 0.95, max_tokens: int = 32768,
                 max_backoff_s: float = 60.0, connect_timeout_s: float = 10.0, check_server: bool = True,
                 progress: bool = True):
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r} "
                             "(e.g. http://localhost:8000/v1 for `vllm serve`)")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise ValueError(f"need max_concurrency >= 1, max_retries >= 0, timeout_s > 0; got "
                             f"{max_concurrency}, {max_retries}, {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_concurrency, self.timeout_s, self.max_retries = int(max_concurrency), float(timeout_s), int(max_retries)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.temperature, self.top_p, self.max_tokens = float(temperature), float(top_p), int(max_tokens)
        self.check_server, self.progress = check_server, progress
        self.name = f"endpoint:{model}"
        self._server_checked = False
        self._client = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(self.timeout_s, connect=min(connect_timeout_s, self.timeout_s)),
            limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency))

    @property
    def config(self) -> dict:
        # base_url left out on purpose: a server restarted on another port may resume a run
        return {"kind": "endpoint", "model": self.model, "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens}

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "EndpointTeacher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- public -------------------------------------------------------------------------------

    def generate(self, problems: Sequence[ProblemLike], n: int, seed: int = 0) -> list[list[Rollout]]:
        _check_n(n)
        jobs = [_Job(prompt_messages(p.problem), sample_seed(seed, problem_id(p), k), f"{problem_id(p)}#{k}")
                for p in problems for k in range(n)]
        flat = self._run_all(jobs)
        return [flat[i * n:(i + 1) * n] for i in range(len(problems))]

    def complete(self, prompt: str) -> str:
        """One answer to a raw prompt (the LLM judge / tagger backend); reasoning stripped."""
        (r,) = self._run_all([_Job([{"role": "user", "content": prompt}], None, "complete")], progress=False)
        return strip_reasoning(r.text)

    def ping(self) -> list[str]:
        """``GET /models``: the served model ids. Fails fast if nothing listens at ``base_url``."""
        import httpx

        url = f"{self.base_url}/models"
        try:
            resp = self._client.get("/models", timeout=min(self.timeout_s, 10.0))
        except httpx.TransportError as e:
            raise TeacherUnavailableError(
                f"teacher endpoint {url} is unreachable ({type(e).__name__}: {e}). Is the server running? "
                f"Start it (e.g. `vllm serve {self.model} --reasoning-parser deepseek_r1`) or fix base_url.") from e
        if resp.status_code != 200:
            return []  # not every compatible server lists models; the first real request will tell
        try:
            return [m["id"] for m in resp.json().get("data", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            return []

    # -- machinery ----------------------------------------------------------------------------

    def _ensure_server(self) -> None:
        if self.check_server and not self._server_checked:
            served = self.ping()
            if served and self.model not in served:
                raise TeacherRequestError(f"{self.base_url} serves {served}, not {self.model!r}: fix the teacher "
                                          "model name in params (it must equal the served name)")
            self._server_checked = True

    def _run_all(self, jobs: list[_Job], progress: bool | None = None) -> list[Rollout]:
        if not jobs:
            return []
        self._ensure_server()
        stop = threading.Event()
        out: list[Rollout | None] = [None] * len(jobs)
        bar = Bar(len(jobs), f"teacher {self.model}", unit="request", leave=False,
                  display=self.progress if progress is None else progress)

        def run(i: int) -> None:
            out[i] = self._request(jobs[i], stop)
            bar.update(1)

        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)), thread_name_prefix="teacher")
        try:
            futures = [pool.submit(run, i) for i in range(len(jobs))]
            wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in futures if f.done() and f.exception() is not None]
            if errors:
                stop.set()  # the other requests give up at their next attempt
                first = next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
                raise first
        finally:
            # On failure (or Ctrl-C) do not wait for requests still in flight (up to timeout_s
            # each): they see `stop` at their next attempt and end in the background.
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
        return out  # type: ignore[return-value]

    def _payload(self, job: _Job) -> dict:
        body = {"model": self.model, "messages": job.messages, "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens}
        if job.seed is not None:
            body["seed"] = job.seed
        return body

    def _request(self, job: _Job, stop: threading.Event) -> Rollout:
        """One completion with retries; raises TeacherUnavailableError / TeacherRequestError."""
        attempts, last = 0, "no attempt made"
        rng = random.Random(job.label)  # jitter only; never affects the text
        for attempt in range(self.max_retries + 1):
            if stop.is_set():
                raise _Stopped(f"{self.base_url}: batch stopped after another request failed")
            attempts += 1
            try:
                return self._attempt(job)
            except _Retryable as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * (0.75 + 0.5 * rng.random())
                if e.retry_after is not None:
                    delay = max(delay, min(self.max_backoff_s, e.retry_after))
                if stop.wait(delay):
                    raise _Stopped(f"{self.base_url}: batch stopped after another request failed")
        raise TeacherUnavailableError(
            f"teacher endpoint {self.base_url}/chat/completions failed {attempts} attempt(s) for request "
            f"{job.label} (max_retries={self.max_retries}); last error: {last}. Check the server's logs, "
            "or raise timeout_s / max_retries if it is only slow.")

    def _attempt(self, job: _Job) -> Rollout:
        import httpx

        try:
            resp = self._client.post("/chat/completions", json=self._payload(job))
        except httpx.TimeoutException as e:
            raise _Retryable(f"timeout after {self.timeout_s:g} s ({type(e).__name__})") from e
        except httpx.HTTPError as e:  # connection refused/reset, protocol and decoding errors
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        status = resp.status_code
        if status in _RETRY_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {resp.text[:200]!r}", _retry_after(resp))
        if status >= 400:
            raise TeacherRequestError(f"teacher endpoint {self.base_url}/chat/completions refused request "
                                      f"{job.label}: HTTP {status}: {resp.text[:500]}")
        return parse_chat_response(resp.text)


def _retry_after(resp) -> float | None:
    try:
        return float(resp.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def parse_chat_response(body: str) -> Rollout:
    """A Rollout from a chat-completions JSON body; garbage raises a retryable error."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _Retryable(f"invalid response: not JSON (starts with {body[:120]!r})") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Retryable(f"invalid response: no 'choices' (starts with {body[:120]!r})")
    msg = choices[0].get("message")
    if not isinstance(msg, dict):
        raise _Retryable(f"invalid response: choice has no 'message' (starts with {body[:120]!r})")
    content = msg.get("content") or ""
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if not isinstance(content, str) or (reasoning is not None and not isinstance(reasoning, str)):
        raise _Retryable("invalid response: 'content' / 'reasoning' is not a string")
    if reasoning:
        text = f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n\n{content.lstrip()}"
    else:
        reasoning = None
        text = content
        if THINK_CLOSE in text and THINK_OPEN not in text.split(THINK_CLOSE, 1)[0]:
            text = f"{THINK_OPEN}\n{text}"  # the chat template opened <think> in the prompt
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    n_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
    finish = choices[0].get("finish_reason")
    return Rollout(text=text, reasoning=reasoning, finished=finish == "stop", n_tokens=n_tokens,
                   meta={"finish_reason": finish})


