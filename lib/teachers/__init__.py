"""Teachers: whoever writes the long chain-of-thought rollouts that the student is distilled on.

The paper's teacher is DeepSeek-R1 (671B) writing ~8 long CoT rollouts per problem, about 10M
rollouts over 1.6M problems (Xu et al. 2025, arXiv 2504.21233, section "Distillation"). Three teachers share one small interface (:class:`Teacher`):

* :class:`EmbeddedTeacher` - the embedded default. It writes long, varied reasoning for the
  synthetic problems of :mod:`lib.problems` from their exact steps, and is wrong on purpose
  at a configurable rate per level (through :func:`lib.problems.random_slip`), so the
  verified-correct / incorrect split that feeds SFT and rollout DPO exists without a GPU.
* :class:`LocalModelTeacher` - any transformers checkpoint (this project's own included)
  through the shared sampler :func:`lib.sampling.sample`.
* :class:`EndpointTeacher` - an OpenAI-compatible chat-completions server (vLLM, SGLang, a
  hosted API) serving e.g. DeepSeek-R1; bounded concurrency, per-request timeouts, retries
  with exponential backoff, and clear errors when the server is down or answers garbage.

Every teacher returns :class:`Rollout` objects, ``n`` per problem, in the problems' order, and
offers ``complete(prompt) -> str`` (one free-form answer) as the backend of the LLM judge
(:class:`lib.judges.LLMJudge`) and of the LLM tagger. :func:`from_params` builds the one params
section ``teacher`` names.
"""
from __future__ import annotations

import os

from lib.teachers.base import ProblemLike, Rollout, Teacher, problem_id, sample_seed, strip_reasoning
from lib.teachers.embedded import DEFAULT_ERROR_RATE, VERBOSITIES, EmbeddedTeacher, as_problem
from lib.teachers.endpoint import EndpointTeacher, TeacherRequestError, TeacherUnavailableError, parse_chat_response
from lib.teachers.local import LocalModelTeacher

__all__ = ["DEFAULT_ERROR_RATE", "VERBOSITIES", "EmbeddedTeacher", "EndpointTeacher", "LocalModelTeacher",
           "ProblemLike", "Rollout", "Teacher", "TeacherRequestError", "TeacherUnavailableError", "as_problem",
           "from_params", "parse_chat_response", "problem_id", "sample_seed", "strip_reasoning"]


def from_params(t, seed: int, progress: bool = True) -> Teacher:
    """The teacher described by params section ``teacher`` (see lib/params.py): the one factory."""
    if t.kind == "embedded":
        return EmbeddedTeacher(error_rate=dict(t.error_rate), seed=seed, verbosity=t.verbosity,
                               repeat_rate=t.repeat_rate)
    if t.kind == "local":
        return LocalModelTeacher(t.checkpoint, temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_tokens)
    if t.kind == "endpoint":
        return EndpointTeacher(t.base_url, t.model, api_key=os.environ.get(t.api_key_env, "EMPTY"),
                               max_concurrency=t.max_concurrency, timeout_s=t.timeout_s, max_retries=t.max_retries,
                               temperature=t.temperature, top_p=t.top_p, max_tokens=t.max_tokens, progress=progress)
    raise ValueError(f"unknown teacher kind {t.kind!r}; choose one of embedded, local, endpoint")
