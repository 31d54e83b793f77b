"""Answer extraction and checking: is a model's final answer equal to the reference?

Used by evaluation (pass@1, pass@k, cons@k), by data filtering (only verified-correct
rollouts feed mid-training and SFT; incorrect ones become DPO "rejected" samples) and by the
RL reward (+1 if the final answer verifies, -1 otherwise; Xu et al. 2025, "Phi-4-Mini-Reasoning",
arXiv 2504.21233). All of them call the same `Verifier.check`, so a number in the report and a
reward in training mean the same thing.

Extraction (`lib.answers`)
--------------------------
Where the final answer is in a completion is `lib.answers`' business, under one of two named
policies: `strict` (the recipe's trained format, the last box after `</think>`; the RL reward
and the recipe's own evaluation use it, `Verifier(extract="strict")`, the default) and
`lenient` (outputs from anywhere: boxes, several boxes as one answer, answer phrases in common
languages, the last expression, multiple-choice letters in prose; the CLI's default). Either
way a prediction may be a whole completion or a bare answer ("3/4", "$\\frac{3}{4}$").

Checking (`Verifier.check`, `check`)
------------------------------------
math-verify (huggingface/Math-Verify 0.9) decides, GOLD FIRST: `verify(gold, pred)` is not
symmetric (gold `1 < x < 2` accepts the prediction `(1,2)`, gold `(1,2)` rejects the
prediction `1 < x < 2`). Both sides are wrapped as `\\boxed{...}` before parsing so that LaTeX
answers and plain ones ("3/4") parse the same way. A gold that is a single letter A-E (GPQA,
MATH's `\\text{(C)}`) is compared as a multiple-choice letter, in the parent, without sympy.
Under the lenient policy an unboxed completion is searched by math-verify's own extraction
(`LatexExtractionConfig(boxed_match_priority=0)`, `ExprExtractionConfig()`) inside the checker,
under the same deadline, and a bare answer that math-verify reads differently unwrapped ("1,22"
as the decimal 1.22 rather than the set {1, 22}) is tried both ways; gold too. A gold that is a
letter, or a letter with its option's text ("(D) Alina"), is compared as a choice.
The result is a frozen `Check(equal, answer, checker, reason)`:

=========================================  ==========  ===============  =====================
situation                                  equal       checker          reason
=========================================  ==========  ===============  =====================
answer's text identical to the gold's      True        "identical"      "equal"
answers equivalent                         True        "math_verify"    "equal"
answers differ                             False       "math_verify"    "not_equal"
answer does not parse at all               False       "math_verify"    "answer_unparsable"
no answer extracted (see above)            False       "extract"        "no_answer" / ...
gold is a letter A-E, answer a letter      True/False  "choice"         "equal"/"not_equal"
second opinion overturned a rejection      True        "judge:<name>"   "recovered: ..."
gold empty or unparsable                   None        "math_verify"    "gold_unparsable"
answer/gold too long or nested too deep    None        "prefilter"      "too_long"/"too_deep"
check exceeded its deadline                None        "deadline"       "timeout" / "killed"
worker crashed / checker raised            None        "deadline"/"error" "worker_died"/"error"
=========================================  ==========  ===============  =====================

An answer whose text is character for character the gold's is equal without a parse ("identical",
decided in the parent; only with the default math-verify check). Most correct answers are such
copies: in tiny's distillation data 17,714 of 23,505 checks, which each cost a LaTeX parse before.

Reasons for "extract": "unclosed_think", "box_only_in_think", "no_box" (unboxed text longer than
a bare answer), "empty", "no_answer". Reasons for "prefilter" name the side: "too_long: answer".

Why a missing answer is False but a timeout is None: a model that gives no final answer has
answered wrongly (the paper's reward is -1 for it), whereas a gold that cannot be parsed or a
check that ran out of time says nothing about the model. `None` is "cannot verify": callers
count and report it separately (`Verifier.stats`), never silently as wrong. A reward function
has to choose what to do with None; treating it as -1 is the conservative choice.

Time bound
----------
math-verify's own timeouts use `signal.alarm`, which (a) fails outside the main thread and
(b) cannot interrupt C code that never returns to the interpreter (a catastrophic regex, a
huge-integer power); on timeout math-verify also returns False ("wrong") rather than "unknown".
So its timeouts are switched off and the bound is ours:

* `Verifier(workers=N>=1)`: N spawned worker processes. Inside a worker, a soft `setitimer`
  deadline of `timeout_s` interrupts ordinary Python/sympy loops (the worker survives); the
  parent also enforces a hard wall-clock deadline of `timeout_s + kill_grace_s` and kills and
  replaces a worker that has not answered by then. The bound holds even if sympy ignores signals.
* `Verifier(workers=0)`: in-process, with the soft `setitimer` deadline only (main thread only;
  POSIX only). Good for a handful of checks in a notebook or inside another worker process.
* A cheap pre-filter runs first: answers/golds longer than `MAX_ANSWER_CHARS` (1,000; the
  longest MATH-500 answer has 53) or nested deeper than `MAX_NESTING` (12 levels of {[( ; the
  deepest MATH-500 answer has 2) are unverifiable at once, without touching sympy. The cost
  of nesting is exponential: `\\frac{` nested 12 deep takes 0.08 s, 15 deep 1 s, 19 deep more
  than 5 s, 50 deep more than 20 s.

Second opinion
--------------
The judges that re-check math-verify's rejections live in `lib.judges` (`RuleJudge`, `LLMJudge`);
the Verifier consults one on checks that came out `equal=False` with an extracted answer.

math-verify 0.9 quirks found here (rows in tests/test_verify_cases_real_outputs.py)
--------------------------------------------------------------------------------------
* `\\boxed{104.}` (trailing period inside the box, AoPS style) is not 104; `\\textbf{(073)}`
  (AIME zero-padded) is not 73. RuleJudge recovers both.
* A bare `(1, 2)` given to math-verify's `parse` becomes the number 2 (the last number in
  the text); wrapped as `$(1, 2)$` or `\\boxed{(1, 2)}` it becomes Interval.open(1, 2), and
  `(2, 1)` or `(1, -2)` a Tuple (docs/stack_notes.md calls the wrapped form a tuple; in 0.9.0 it is an
  interval whenever the first element is smaller). We always wrap, so equal pairs agree and
  swapped pairs are rejected; only the sympy type differs.
* `10\\%` vs `10` and `25\\%` vs `0.25` are both accepted (percent is ambiguous by design).
* On its own timeout math-verify returns False (wrong), not "unknown": hence our deadline.
* Nested `\\frac` cost grows exponentially with depth (see Time bound).

Where it runs
-------------
Worker processes are spawned (not forked: fork is unsafe once torch or tokenizers hold
threads) and import `lib.verify`, so a Verifier works from a Jupyter notebook, from a script
(guard it with `if __name__ == "__main__":`), from threads (workers >= 1), and from other worker
processes; inside a daemonic process (multiprocessing.Pool), which may not have children, it
falls back to in-process checking with a warning.

CLI
---
`python -m lib.verify --jsonl FILE [--out OUT.jsonl] [--extract lenient|strict] [--workers N]
[--timeout S] [--judge rule|none] [--skip-bad [--rejects R.jsonl]]`: rows with `gold` and `prediction`
(optional `id`, `problem`) in, the same rows plus `equal`, `answer`, `checker`, `reason` out;
a summary line on stderr naming the extraction policy (default lenient: the CLI grades outputs
that this recipe did not produce). A malformed row stops the run with its line number (exit code 2)
unless `--skip-bad`, which writes it to the rejects file and goes on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import multiprocessing.connection
import os
import re
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Callable, Iterable, Sequence

from lib.judges import Judge, RuleJudge
from lib.math_check import math_verify_check, math_verify_check_lenient, run_bounded, worker_main
from lib.answers import (
    MAX_ANSWER_CHARS,
    MAX_NESTING,
    prefilter,
    POLICIES,
    choice_letter,
    extract,
    lenient_choice,
    lenient_gold_choice,
    prediction_to_answer,
)

DEFAULT_TIMEOUT_S = 5.0
# Extra time the parent gives a worker after the in-worker soft deadline before killing it.
DEFAULT_KILL_GRACE_S = 1.0
# A spawned worker imports sympy + math-verify and warms up in ~1-3 s on a busy 2-core box.
WORKER_STARTUP_TIMEOUT_S = 120.0
# Tasks in flight per worker (see Verifier._run_pool).
PIPELINE_DEPTH = 2


@dataclass(frozen=True)
class Check:
    """Outcome of one check. `equal`: True / False / None (= cannot verify).

    `answer` is the extracted final answer (None if none was found), `checker` who decided
    ("identical", "math_verify", "choice", "extract", "prefilter", "deadline", "judge:<name>", "error"),
    `reason` a short machine-readable why ("equal", "not_equal", "no_answer", "timeout", ...).
    """

    equal: bool | None
    answer: str | None
    checker: str
    reason: str

    @property
    def correct(self) -> bool:
        """True only for a verified-equal answer (None counts as not correct)."""
        return self.equal is True

    def to_dict(self) -> dict:
        return asdict(self)


def _clip(s: str, keep: int = 200) -> str:
    """Keep result rows small: an absurd 1 MB "answer" is stored as its first 200 characters."""
    return s if len(s) <= keep else s[:keep] + f"...[{len(s) - keep} more chars]"


# ---------------------------------------------------------------------------------------------
# The Verifier
# ---------------------------------------------------------------------------------------------


@dataclass
class VerifierStats:
    """Running counts over every check of a Verifier (reported by the CLI and notebooks)."""

    checks: int = 0
    correct: int = 0
    incorrect: int = 0
    unverifiable: int = 0
    timeouts: int = 0
    workers_killed: int = 0
    deduplicated: int = 0   # checks answered from an identical one in the same batch
    judge_calls: int = 0
    judge_recovered: int = 0
    judge_failed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Worker:
    proc: object
    conn: object
    ready: bool = False
    tasks: deque = field(default_factory=deque)  # (index, gold, answer) sent, oldest first
    deadline: float = 0.0  # for tasks[0], the one the worker is running
    started: float = field(default_factory=time.monotonic)


def _shutdown(workers: list[_Worker]) -> None:
    for w in workers:
        try:
            w.conn.send(None)
        except Exception:  # noqa: BLE001 - already gone
            pass
    for w in workers:
        w.proc.join(timeout=1.0)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=1.0)
        try:
            w.conn.close()
        except Exception:  # noqa: BLE001
            pass
    workers.clear()


Pair = tuple  # (gold, prediction) or (gold, prediction, problem)


class JudgeOutageError(RuntimeError):
    """Too many second-opinion calls failed in one batch: the judge (an LLM server) is not answering."""


class Verifier:
    """Time-bounded answer checker, in worker processes (`workers>=1`) or in-process (`workers=0`).

    >>> with Verifier(workers=2, timeout_s=5.0, judge=RuleJudge()) as v:
    ...     v.check("\\\\frac{1}{2}", "so the answer is \\\\boxed{0.5}").equal
    True

    Methods: `check(gold, prediction, problem=None) -> Check`, `check_many(pairs) -> list[Check]`
    (input order kept), `equivalent_many(pairs) -> list[bool]` (for majority voting), `stats`,
    `close()` / context manager. Threads sharing one instance are serialised by a lock.

    `extract` names the extraction policy (`lib.answers`): "strict" (default; the recipe's trained
    format, used by its stages and the RL reward) or "lenient" (outputs from anywhere; the CLI's).

    `check_fn` replaces math-verify (tests inject a hanging function to exercise the kill path);
    it must be a top-level, picklable `(gold, answer) -> (equal, reason)`. Inside a daemonic
    process (which may not have children) the Verifier falls back to in-process checking.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        judge: Judge | None = None,
        *,
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        max_nesting: int = MAX_NESTING,
        check_fn: Callable[[str, str], tuple[bool | None, str]] = math_verify_check,
        extract: str = "strict",
        judge_concurrency: int = 1,
        judge_max_failure_share: float = 1.0,
    ):
        if extract not in POLICIES:
            raise ValueError(f"extract must be one of {POLICIES} (see lib.answers), got {extract!r}")
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = in-process), got {workers}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if judge is not None and not isinstance(judge, Judge):
            raise TypeError(f"judge must have .name and .judge(problem, gold, answer, completion); got {judge!r}")
        if judge_concurrency < 1 or not 0.0 <= judge_max_failure_share <= 1.0:
            raise ValueError(f"need judge_concurrency >= 1 and judge_max_failure_share in [0, 1]; got "
                             f"{judge_concurrency}, {judge_max_failure_share}")
        if workers > 0 and mp.current_process().daemon:
            warnings.warn("Verifier inside a daemonic process cannot start workers; checking in-process.")
            workers = 0
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.kill_grace_s = float(kill_grace_s)
        self.judge = judge
        self.max_answer_chars = max_answer_chars
        self.max_nesting = max_nesting
        self.check_fn = check_fn
        self.extract = extract
        self.judge_concurrency = int(judge_concurrency)
        self.judge_max_failure_share = float(judge_max_failure_share)
        self.stats = VerifierStats()
        self._lock = threading.Lock()
        self._pool: list[_Worker] = []
        self._closed = False
        if workers:
            self._ctx = mp.get_context("spawn")  # fork is unsafe with torch/tokenizer threads
            self._pool = [self._spawn() for _ in range(workers)]
            self._finalizer = weakref.finalize(self, _shutdown, self._pool)

    # -- lifecycle ---------------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=worker_main, args=(child_conn, self.check_fn, self.timeout_s), daemon=True, name="verify-worker"
        )
        proc.start()
        child_conn.close()
        return _Worker(proc=proc, conn=parent_conn)

    def _replace(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=2.0)
        try:
            w.conn.close()
        except Exception:  # noqa: BLE001
            pass
        self._pool[self._pool.index(w)] = self._spawn()

    def close(self) -> None:
        """Stop the workers (idempotent). Also runs at garbage collection / interpreter exit."""
        self._closed = True
        if self.workers:
            self._finalizer()

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checking ----------------------------------------------------------------------------

    def check(self, gold: str, prediction: str, problem: str | None = None) -> Check:
        """Check one prediction (a whole completion or a bare answer) against `gold`."""
        return self.check_many([(gold, prediction, problem)])[0]

    def check_many(self, pairs: Iterable[Pair]) -> list[Check]:
        """Check many (gold, prediction[, problem]) pairs; results in input order."""
        items = [self._unpack(i, p) for i, p in enumerate(pairs)]
        with self._lock:
            if self._closed:
                raise RuntimeError("this Verifier is closed; create a new one")
            results: list[Check | None] = [None] * len(items)
            jobs: list[tuple[int, str, str, Callable | None]] = []
            for i, (gold, prediction, _problem) in enumerate(items):
                decided = self._precheck(gold, prediction)
                if isinstance(decided, Check):
                    results[i] = decided
                elif isinstance(decided, tuple):  # lenient: (gold, answer or text, check function)
                    jobs.append((i, *decided))
                else:
                    jobs.append((i, gold, decided, None))
            raw = self._run_jobs(jobs)
            for i, gold, answer, fn in jobs:
                equal, checker, reason, *found = raw[i]
                shown = found[0] if found and found[0] is not None else answer
                results[i] = Check(equal, _clip(shown) if fn is not None else shown, checker, reason)
            final = self._second_opinions(results, items)  # type: ignore[arg-type]
            self._count(final)
            return final

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Bare-answer equivalence for voting (first element plays gold); None counts as False."""
        return [c.equal is True for c in self.check_many([(a, b) for a, b in pairs])]

    def same_answer(self, a: str, b: str) -> bool:
        return self.equivalent_many([(a, b)])[0]

    @staticmethod
    def _unpack(i: int, pair: Pair) -> tuple[str, str, str | None]:
        if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
            raise ValueError(f"item {i}: expected (gold, prediction) or (gold, prediction, problem), got {pair!r:.80}")
        gold, prediction = pair[0], pair[1]
        problem = pair[2] if len(pair) == 3 else None
        if isinstance(gold, (int, float)) and not isinstance(gold, bool):
            gold = str(gold)  # AIME-style integer golds from JSON
        if not isinstance(gold, str) or not isinstance(prediction, str):
            raise TypeError(
                f"item {i}: gold and prediction must be str, got {type(gold).__name__} and {type(prediction).__name__}"
            )
        return gold, prediction, problem

    def _precheck(self, gold: str, prediction: str) -> Check | str | tuple:
        """Decide cheaply in the parent (no answer, prefilter, multiple choice) or return the answer."""
        if self.extract == "lenient":
            return self._precheck_lenient(gold, prediction)
        found = extract(prediction, "strict")
        answer = found.answer
        if answer is None:
            return Check(False, None, "extract", found.reason)
        gold = prediction_to_answer(gold) or ""  # a gold given as "$\\frac12$" or "\\boxed{5}" too
        if not gold:
            return Check(None, answer, "math_verify", "gold_unparsable")
        for side, text in (("gold", gold), ("answer", answer)):
            why = prefilter(text, self.max_answer_chars, self.max_nesting)
            if why:
                return Check(None, _clip(answer), "prefilter", f"{why}: {side}")
        gold_letter = choice_letter(gold, gold=True)
        if gold_letter is not None:
            pred_letter = choice_letter(answer)
            if pred_letter is None:
                return Check(False, answer, "choice", "not_a_choice")
            return Check(pred_letter == gold_letter, answer, "choice", "equal" if pred_letter == gold_letter else "not_equal")
        if answer == gold and self.check_fn is math_verify_check:
            return Check(True, answer, "identical", "equal")
        return answer

    def _precheck_lenient(self, gold: str, prediction: str) -> Check | tuple:
        """Lenient: decide a choice or a missing answer here, else (gold, answer, check function)."""
        gold_letter = lenient_gold_choice(gold)
        if gold_letter is not None:
            letter = lenient_choice(prediction)
            if letter is None:
                found = extract(prediction, "lenient")
                return Check(False, found.answer and _clip(found.answer), "choice", "not_a_choice")
            return Check(letter == gold_letter, letter, "choice", "equal" if letter == gold_letter else "not_equal")
        found = extract(prediction, "lenient")
        if found.answer is None:
            return Check(False, None, "extract", found.reason)
        g = extract(gold, "lenient")
        if g.answer is None:
            return Check(None, _clip(found.answer), "math_verify", "gold_unparsable")
        for side, text, search in (("gold", g.answer, g.search), ("answer", found.answer, found.search)):
            why = None if search else prefilter(text, self.max_answer_chars, self.max_nesting)
            if why:
                return Check(None, _clip(found.answer), "prefilter", f"{why}: {side}")
        fn = self.check_fn
        if found.answer == g.answer and fn is math_verify_check:
            return Check(True, _clip(found.answer), "identical", "equal")
        if fn is math_verify_check:
            fn = partial(math_verify_check_lenient, gold_search=g.search, answer_search=found.search)
        return g.answer, found.answer, fn

    def _run_jobs(self, jobs: list[tuple[int, str, str, Callable | None]]) -> dict[int, tuple]:
        """Check each distinct (gold, answer, check) once and give every job its result: samples of
        one problem often repeat an answer, and a LaTeX parse costs tens of milliseconds."""
        if not jobs:
            return {}
        def key(g, a, fn):
            if isinstance(fn, partial):  # the lenient check: a new partial per job, same function
                return g, a, fn.func, tuple(sorted(fn.keywords.items()))
            return g, a, fn

        first: dict[tuple, int] = {}
        unique = []
        for i, g, a, fn in jobs:
            if key(g, a, fn) not in first:
                first[key(g, a, fn)] = i
                unique.append((i, g, a, fn))
        if not self.workers:
            done = {i: run_bounded(fn or self.check_fn, g, a, self.timeout_s) for i, g, a, fn in unique}
        else:
            done = self._run_pool(unique)
        self.stats.deduplicated += len(jobs) - len(unique)
        return {i: done[first[key(g, a, fn)]] for i, g, a, fn in jobs}

    def _run_pool(self, jobs: list[tuple[int, str, str, Callable | None]]) -> dict[int, tuple]:
        """Dispatch to the workers, PIPELINE_DEPTH tasks each; kill a worker past its deadline.

        A second task waits in the worker's pipe so that the worker does not sit idle while the
        parent wakes up for the previous result (on a loaded 2-core box that wake-up costs up to
        a few ms, as long as a check). The deadline of a task starts when the worker begins it,
        i.e. when the previous result arrives; queued tasks of a killed worker are re-queued.
        """
        pending = deque(jobs)
        out: dict[int, tuple] = {}
        hard_s = self.timeout_s + self.kill_grace_s
        while pending or any(w.tasks for w in self._pool):
            now = time.monotonic()
            for w in self._pool:
                while w.ready and pending and len(w.tasks) < PIPELINE_DEPTH:
                    task = pending.popleft()
                    w.conn.send(task)
                    if not w.tasks:
                        w.deadline = now + hard_s
                    w.tasks.append(task)
            waits = [w.deadline - now for w in self._pool if w.tasks]
            waits += [w.started + WORKER_STARTUP_TIMEOUT_S - now for w in self._pool if not w.ready]
            conns = [w.conn for w in self._pool]
            for conn in mp.connection.wait(conns, timeout=max(0.0, min(waits)) if waits else None):
                w = next(x for x in self._pool if x.conn is conn)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    self._worker_died(w, out, pending)
                    continue
                if msg[0] == "ready":
                    w.ready = True
                elif w.tasks and msg[0] == w.tasks[0][0]:
                    out[msg[0]] = msg[1]
                    w.tasks.popleft()
                    w.deadline = time.monotonic() + hard_s  # the next queued task starts now
            now = time.monotonic()
            for w in list(self._pool):
                if w.tasks and now >= w.deadline:
                    out[w.tasks[0][0]] = (None, "deadline", f"killed: no answer after {hard_s:g} s")
                    self.stats.workers_killed += 1
                    self._requeue_and_replace(w, pending)
                elif not w.ready and now >= w.started + WORKER_STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"a verify worker did not start within {WORKER_STARTUP_TIMEOUT_S:g} s")
        return out

    def _requeue_and_replace(self, w: _Worker, pending: deque) -> None:
        """Put the tasks that were waiting behind the failed one back at the front, then respawn."""
        waiting = list(w.tasks)[1:]
        pending.extendleft(reversed(waiting))
        w.tasks.clear()
        self._replace(w)

    def _worker_died(self, w: _Worker, out: dict[int, tuple], pending: deque) -> None:
        w.proc.join(timeout=2.0)
        if not w.ready:
            raise RuntimeError(
                f"a verify worker exited during start-up (exit code {w.proc.exitcode}). Spawned workers "
                "import lib.verify: run from the repo root or install the package, and guard scripts "
                "with `if __name__ == '__main__':`."
            )
        if w.tasks:
            out[w.tasks[0][0]] = (None, "deadline", f"worker_died: exit code {w.proc.exitcode}")
        self.stats.workers_killed += 1
        self._requeue_and_replace(w, pending)

    def _second_opinions(self, checks: list[Check], items: list[tuple[str, str, str | None]]) -> list[Check]:
        """The judge re-examines math-verify's rejections, ``judge_concurrency`` at a time. A failed
        call leaves the rejection standing; more failures than ``judge_max_failure_share`` of this
        batch's calls (an endpoint down) raise :class:`JudgeOutageError` instead of passing silently."""
        todo = [i for i, c in enumerate(checks) if self.judge is not None and c.equal is False
                and c.answer is not None and c.checker == "math_verify"]
        if not todo:
            return checks

        raised = []

        def ask(i: int) -> bool | None:
            gold, prediction, problem = items[i]
            try:
                return self.judge.judge(problem, gold, checks[i].answer, prediction)
            except Exception as e:  # noqa: BLE001 - counted below; the rejection stands
                raised.append(e)
                return None

        errors_before = getattr(self.judge, "errors", 0)  # LLMJudge counts its failed calls itself

        if self.judge_concurrency > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.judge_concurrency, len(todo)), thread_name_prefix="judge") as pool:
                verdicts = list(pool.map(ask, todo))
        else:
            verdicts = [ask(i) for i in todo]
        self.stats.judge_calls += len(todo)
        self.stats.judge_failed += sum(v is None for v in verdicts)  # no verdict: failed, unsure or unparseable
        failed = len(raised) + getattr(self.judge, "errors", 0) - errors_before  # calls that did not get through
        if failed and failed > self.judge_max_failure_share * len(todo):
            last = getattr(self.judge, "last_error", None) or (repr(raised[-1]) if raised else None)
            raise JudgeOutageError(
                f"the {self.judge.name} judge failed on {failed} of {len(todo)} calls in this batch (more than "
                f"{self.judge_max_failure_share:.0%}, verify.judge_max_failure_share)"
                + (f"; last error: {last[:300].rstrip('.')}" if last else "") + ". Is its server up? "
                "Fix it and rerun (finished work is kept), or raise the share to accept unjudged rejections")
        out = list(checks)
        for i, verdict in zip(todo, verdicts):
            if verdict:
                self.stats.judge_recovered += 1
                c = checks[i]
                out[i] = Check(True, c.answer, f"judge:{self.judge.name}", f"recovered: math_verify said {c.reason}")
        return out

    def _count(self, checks: list[Check]) -> None:
        s = self.stats
        for c in checks:
            s.checks += 1
            if c.equal is True:
                s.correct += 1
            elif c.equal is False:
                s.incorrect += 1
            else:
                s.unverifiable += 1
            if c.checker == "deadline":
                s.timeouts += 1


def check(
    gold: str,
    prediction: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    judge: Judge | None = None,
    problem: str | None = None,
) -> Check:
    """One in-process check (main thread). For many checks or threads, use `Verifier(workers=N)`."""
    return Verifier(workers=0, timeout_s=timeout_s, judge=judge).check(gold, prediction, problem)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


class RowError(ValueError):
    pass


def parse_row(line: str, lineno: int) -> dict:
    """A JSONL row with str `gold` (int/float accepted) and str `prediction`; RowError otherwise."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise RowError(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise RowError(f"line {lineno}: expected a JSON object, got {type(row).__name__}")
    for key in ("gold", "prediction"):
        if key not in row:
            raise RowError(f"line {lineno}: missing field '{key}' (fields present: {sorted(row)})")
    gold = row["gold"]
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        raise RowError(f"line {lineno}: 'gold' must be a string or number, got {type(gold).__name__}")
    if not isinstance(row["prediction"], str):
        raise RowError(f"line {lineno}: 'prediction' must be a string, got {type(row['prediction']).__name__}")
    if "problem" in row and row["problem"] is not None and not isinstance(row["problem"], str):
        raise RowError(f"line {lineno}: 'problem' must be a string, got {type(row['problem']).__name__}")
    return row


def _judge_from_name(name: str) -> Judge | None:
    if name == "rule":
        return RuleJudge()
    if name == "none":
        return None
    raise ValueError(f"unknown judge {name!r}; choose 'rule' or 'none'")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.verify", description=__doc__.split("\n")[0])
    ap.add_argument("--jsonl", required=True, help="input rows with 'gold' and 'prediction' (optional 'id', 'problem')")
    ap.add_argument("--out", help="output JSONL (default: stdout)")
    ap.add_argument(
        "--extract",
        choices=POLICIES,
        default="lenient",
        help="answer extraction policy (lib.answers): lenient (default; outputs from anywhere) or "
        "strict (the recipe's trained format: the last \\boxed{} after </think>)",
    )
    ap.add_argument("--workers", type=int, default=2, help="worker processes (0 = in-process)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per check")
    ap.add_argument("--judge", choices=("rule", "none"), default="rule", help="second opinion on rejections")
    ap.add_argument("--skip-bad", action="store_true", help="write malformed rows to --rejects and go on")
    ap.add_argument("--rejects", help="rejects file for --skip-bad (default: <out or input stem>.rejects.jsonl)")
    args = ap.parse_args(argv)

    rows, bad = [], []
    with open(args.jsonl, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(parse_row(line, lineno))
            except RowError as e:
                if not args.skip_bad:
                    print(f"error: {args.jsonl}: {e}. Fix the row or pass --skip-bad.", file=sys.stderr)
                    return 2
                bad.append({"line": lineno, "error": str(e), "raw": line.rstrip("\n")})
    if bad:
        base = args.out or os.path.basename(args.jsonl)
        rejects = args.rejects or re.sub(r"\.jsonl?$", "", base) + ".rejects.jsonl"
        with open(rejects, "w", encoding="utf-8") as f:
            for b in bad:
                f.write(json.dumps(b, ensure_ascii=False) + "\n")
        print(f"skipped {len(bad)} malformed rows -> {rejects}", file=sys.stderr)

    t0 = time.perf_counter()
    judge = _judge_from_name(args.judge)
    with Verifier(workers=args.workers, timeout_s=args.timeout, judge=judge, extract=args.extract) as v:
        checks = v.check_many([(r["gold"], r["prediction"], r.get("problem")) for r in rows])
        stats = v.stats
    elapsed = time.perf_counter() - t0

    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for r, c in zip(rows, checks):
            out.write(json.dumps({**r, **c.to_dict()}, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    print(
        f"extract {args.extract} | rows {len(rows)} | correct {stats.correct} | incorrect {stats.incorrect} | "
        f"unverifiable {stats.unverifiable} | recovered by second opinion {stats.judge_recovered} | "
        f"malformed {len(bad)} | {len(rows) / max(elapsed, 1e-9):,.1f} checks/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
