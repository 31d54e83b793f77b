"""The math-verify check itself: parse gold and answer, compare them gold first, under our deadline.

Runs inside a :class:`lib.verify.Verifier` worker process (``worker_main``) or in-process under a
``setitimer`` deadline (``run_bounded``; main thread only). ``math_verify_check`` is the strict
check of a bare answer; ``math_verify_check_lenient`` also searches unboxed text with math-verify's
own extraction; ``plain_number_verdict`` answers two plain numbers without the LaTeX parser.
lib/verify.py's module docstring explains the time bound and the quirks of math-verify 0.9.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable

from lib.judges import exact_number




class _Deadline(BaseException):
    """Raised by our SIGALRM handler. A BaseException so that math-verify's `except Exception`
    (and its `except TimeoutException`, which would turn a timeout into False) let it through."""


class _DropTimeoutDisabledWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


_MV_LOGGING_DONE = False


def _quiet_math_verify() -> None:
    """math-verify warns once that its timeouts are off; they are off on purpose (ours are on)."""
    global _MV_LOGGING_DONE
    if not _MV_LOGGING_DONE:
        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
        _MV_LOGGING_DONE = True


def _parse(latex: str) -> list:
    """A bare answer, read as math-verify reads a boxed one (plain "3/4" and LaTeX alike)."""
    return _parse_text("\\boxed{" + latex + "}")


@lru_cache(maxsize=8192)
def _parse_gold(gold: str) -> tuple:
    # Golds repeat (8-64 samples per problem); sympy objects are immutable, so caching is safe.
    return tuple(_parse(gold))


_PLAIN_INT_RE = re.compile(r"[-+]?\d+")
_PLAIN_NUM_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)|[-+]?\d+/\d+|[-+]?\\[dt]?frac\{\d+\}\{\d+\}")


def plain_number_verdict(gold: str, answer: str) -> bool | None:
    """The verdict math-verify would give when both sides are plain numbers, without its LaTeX
    parser (~60 ms a distinct expression in pure Python): True when the exact values are equal,
    False when both are integers that differ; None (ask math-verify) otherwise. No thousands
    separators here: "1,22" is a decimal or a set depending on context, which math-verify decides."""
    g, a = gold.strip(), answer.strip()
    if not (_PLAIN_NUM_RE.fullmatch(g) and _PLAIN_NUM_RE.fullmatch(a)):
        return None
    gv, av = exact_number(g.lstrip("+")), exact_number(a.lstrip("+"))
    if gv is None or av is None:
        return None
    if gv == av:
        return True
    if _PLAIN_INT_RE.fullmatch(g) and _PLAIN_INT_RE.fullmatch(a):
        return False
    return None


def math_verify_check(gold: str, answer: str) -> tuple[bool | None, str]:
    """(equal, reason) from math-verify, gold first. No timeout of its own: callers bound it."""
    from math_verify import verify

    fast = plain_number_verdict(gold, answer)
    if fast is not None:
        return fast, "equal" if fast else "not_equal"
    _quiet_math_verify()
    gold_parsed = list(_parse_gold(gold))
    if not gold_parsed:
        return None, "gold_unparsable"
    pred_parsed = _parse(answer)
    if not pred_parsed:
        return False, "answer_unparsable"
    equal = verify(gold_parsed, pred_parsed, timeout_seconds=None)  # type: ignore[arg-type]
    return bool(equal), "equal" if equal else "not_equal"


def _parse_text(text: str) -> list:
    """math-verify's own extraction on unwrapped text: boxed first, then "final answer is",
    "answer:", the last LaTeX, the last number/expression (its priorities, not ours)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(
        text,
        extraction_config=[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()],
        parsing_timeout=None,  # type: ignore[arg-type]  # our deadline, see module docstring
    )


@lru_cache(maxsize=8192)
def _parse_gold_text(gold: str) -> tuple:
    return tuple(_parse_text(gold))


def _read_both_ways(text: str, search: bool) -> bool:
    """Also read a bare answer unwrapped? Only a plain number with separators: "1,22" is the
    decimal 1.22 unwrapped but the set {1, 22} boxed, whereas "(1, 2)" or "a + 3z = 0" unwrapped
    is just its last number."""
    return search or re.fullmatch(r"\s*[-+]?[\d][\d\s.,]*\s*", text) is not None


def math_verify_check_lenient(
    gold: str, answer: str, gold_search: bool = False, answer_search: bool = False
) -> tuple[bool | None, str, str | None]:
    """(equal, reason, answer found) under the lenient policy, gold first; callers bound its time.

    A side marked `search` is text that math-verify's own extraction searches (unwrapped); a
    bare answer is read boxed, and if that does not match, unwrapped as well. The third element
    is the answer math-verify found in a searched prediction (None for a bare one).
    """
    from math_verify import verify

    if not (gold_search or answer_search) and plain_number_verdict(gold, answer) is True:
        return True, "equal", None  # the first reading (boxed) of two equal plain numbers
    _quiet_math_verify()

    def golds():
        if not gold_search:
            # Read in math mode first, as math-verify reads a gold: boxed, `a + 3z = 0` would
            # collapse to its right-hand side and accept a bare `0`.
            yield list(_parse_gold_text("$" + gold + "$")) or list(_parse_gold(gold))
        if _read_both_ways(gold, gold_search):
            yield list(_parse_gold_text(gold))

    def preds():
        if not answer_search:
            yield _parse(answer)
        if _read_both_ways(answer, answer_search):
            yield _parse_text(answer)

    pred_variants = [p for p in preds() if p]
    shown = None
    if answer_search and pred_variants:
        found = pred_variants[0]
        shown = found[-1] if isinstance(found[-1], str) else str(found[0])
    any_gold = False
    for g in golds():
        if not g:
            continue
        any_gold = True
        for p in pred_variants:
            if verify(g, p, timeout_seconds=None):  # type: ignore[arg-type]
                return True, "equal", shown
    if not any_gold:
        return None, "gold_unparsable", shown
    if not pred_variants:
        return False, "answer_unparsable", shown
    return False, "not_equal", shown


@contextmanager
def _soft_deadline(seconds: float):
    """Raise `_Deadline` in the main thread after `seconds` (SIGALRM via setitimer, sub-second)."""
    if not hasattr(signal, "setitimer"):
        raise RuntimeError("In-process time bound needs POSIX signals; use Verifier(workers>=1).")

    def handler(signum, frame):
        raise _Deadline()

    old_handler = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)


def run_bounded(check_fn: Callable, gold: str, answer: str, timeout_s: float) -> tuple:
    """(equal, checker, reason) of `check_fn` under the soft deadline; never raises."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "In-process checks (Verifier(workers=0) or verify.check) bound their time with SIGALRM, "
            "which only works in the main thread. From a thread, use Verifier(workers=1 or more)."
        )
    try:
        with _soft_deadline(timeout_s):
            equal, reason, *found = check_fn(gold, answer)
        return (equal, "math_verify", reason, *found)
    except _Deadline:
        return None, "deadline", f"timeout: over {timeout_s:g} s"
    except Exception as e:  # noqa: BLE001 - any failure of the checker is "cannot verify"
        return None, "error", f"error: {type(e).__name__}"


def worker_main(conn, check_fn: Callable, timeout_s: float) -> None:
    """Worker process loop: warm up, say "ready", then answer (index, gold, answer) tasks."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a notebook is the parent's business
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        run_bounded(math_verify_check, "\\frac{1}{2}", "0.5", 30.0)  # import + load parsers (~0.3 s)
        conn.send(("ready", os.getpid()))
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            index, gold, answer, fn = task
            conn.send((index, run_bounded(fn or check_fn, gold, answer, timeout_s)))
    except (BrokenPipeError, EOFError, OSError, KeyboardInterrupt):
        return


