"""The teacher interface: what every teacher returns (:class:`Rollout`) and offers (:class:`Teacher`).

Shared helpers: stable problem ids, per-sample seeds, and the answer part of a completion.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from lib.chat import THINK_CLOSE




@runtime_checkable
class ProblemLike(Protocol):
    """Anything with the problem text; ``id`` and ``level`` are used when present."""

    problem: str


@dataclass(frozen=True)
class Rollout:
    """One teacher answer to one problem.

    ``text`` is the whole completion: ``<think>`` reasoning ``</think>`` then the final answer
    with ``\\boxed{}`` (what the student is trained on and what the verifier reads).
    ``reasoning`` is the reasoning alone when the server returned it in a separate field
    (vLLM's reasoning parser, DeepSeek's API), else None. ``finished`` is False when a length
    limit cut the answer (the verifier then finds no answer; the repetition tagger cares).
    ``n_tokens`` is the completion's token count when the teacher knows it. ``meta`` holds
    teacher-specific facts (the embedded teacher records its injected slip and style).
    """

    text: str
    reasoning: str | None = None
    finished: bool = True
    n_tokens: int | None = None
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Teacher(Protocol):
    """Writes rollouts. ``generate`` returns ``n`` rollouts per problem, in input order."""

    name: str

    def generate(self, problems: Sequence[ProblemLike], n: int, seed: int = 0) -> list[list[Rollout]]: ...

    def complete(self, prompt: str) -> str: ...


def problem_id(p: ProblemLike) -> str:
    """The problem's ``id``, or a stable hash of its text when it has none."""
    pid = getattr(p, "id", None)
    if pid is None or pid == "":
        return "sha1-" + hashlib.sha1(p.problem.encode("utf-8")).hexdigest()[:12]
    return str(pid)


def sample_seed(seed: int, pid: str, index: int, bits: int = 31) -> int:
    """A per-(seed, problem id, sample index) integer seed, the same in every process.

    Rollouts depend on these three only - never on batch composition or order - so a resumed
    run rewrites exactly the text an uninterrupted run would have written.
    """
    digest = hashlib.sha256(f"{seed}/{pid}/{index}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (1 << bits)


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (rollouts per problem) must be an int >= 1, got {n!r}")


def strip_reasoning(text: str) -> str:
    """The answer part of a completion: what follows the last ``</think>`` (whole text if none)."""
    return text.rsplit(THINK_CLOSE, 1)[1].strip() if THINK_CLOSE in text else text.strip()

