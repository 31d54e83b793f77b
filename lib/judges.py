"""Second opinions on rejected answers: judges the Verifier consults when math-verify says "not equal".

The paper re-checks math-verify *rejections* with an LLM judge (GPT-4o-mini) to recover false
negatives. A `Judge` is consulted only for checks that came out `equal=False` from math-verify
with an extracted answer (never for missing answers, never for True or None). Two judges:
`RuleJudge` (offline, deterministic normaliser + exact numeric comparison; the default second
opinion of the CLI) and `LLMJudge(complete)` (prompt `JUDGE_PROMPT`, one-word YES/NO verdict).
A judge that returns None (error, unparseable reply) leaves the rejection standing and is counted.
`Verifier(judge=None)` (the default) is math-verify alone; the CLI defaults to `--judge rule`.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Protocol, runtime_checkable

from lib.answers import BOX_CMD_RE, last_boxed, prefilter, strip_math_delimiters



@runtime_checkable
class Judge(Protocol):
    """A second opinion on a rejected answer: True (equivalent), False (not), None (cannot tell)."""

    name: str

    def judge(self, problem: str | None, gold: str, answer: str, completion: str | None) -> bool | None: ...


_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,!;: ]|~|\\quad|\\qquad")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_ASSIGN_RE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*(?!=)")
_NUM_RE = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[+-]?\.\d+$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$|^([+-]?)\\frac(\d)(\d)$")
_SLASH_RE = re.compile(r"^([+-]?[\d.]+)\s*/\s*([\d.]+)$")
_UNIT_TAIL_RE = re.compile(r"^(.*?\d)\s*([A-Za-z][A-Za-z ]*)$")


def normalize_answer(s: str) -> str:
    """A canonical string for simple answers: the RuleJudge's normaliser (also handy for voting).

    Strips `$`, boxes, `\\left`/`\\right`, spacing commands, `\\text{..}`-like wrappers,
    degrees, `\\%`/`%`, `\\$`, a leading `x =`, a trailing `.`; `\\dfrac`/`\\tfrac` -> `\\frac`;
    `2{,}125` -> `2,125`; collapses spaces; lower-cases purely alphabetic words.
    """
    t = strip_math_delimiters(s)
    inner = last_boxed(t) if BOX_CMD_RE.search(t) else None
    t = inner if inner is not None else t
    t = t.replace("\\left", "").replace("\\right", "")
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    t = _SPACING_RE.sub(" ", t)
    for _ in range(3):  # \text{\textbf{x}} -> x
        t = _TEXT_CMD_RE.sub(r"\1", t)
    t = _DEGREE_RE.sub("", t)
    t = t.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    t = t.replace("{,}", ",")
    t = _ASSIGN_RE.sub("", t.strip())
    t = re.sub(r"\s+", " ", t).strip().rstrip(".").strip()
    if re.fullmatch(r"[A-Za-z][A-Za-z ]+", t):
        t = t.lower()
    return t


def exact_number(s: str) -> Fraction | None:
    """Exact value of an integer, decimal, `a/b` or `\\frac{a}{b}` with numeric a, b; else None."""
    s = s.replace(" ", "")
    if _NUM_RE.match(s):
        return Fraction(s.replace(",", ""))
    m = _FRAC_RE.match(s)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5), m.group(6))
        a, b = exact_number(num), exact_number(den)
        if a is None or b is None or b == 0:
            return None
        return -a / b if sign == "-" else a / b
    m = _SLASH_RE.match(s)
    if m:
        a, b = exact_number(m.group(1)), exact_number(m.group(2))
        if a is None or b is None or b == 0:
            return None
        return a / b
    return None


def _strip_units(s: str) -> str:
    """`5 cm` -> `5`, `18 dollars` -> `18`; only when what remains is a plain number."""
    m = _UNIT_TAIL_RE.match(s)
    if m and exact_number(m.group(1)) is not None:
        return m.group(1)
    return s


def _split_top_level(s: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _unwrap_single(s: str) -> str:
    """`(073)` -> `073`: parentheses around one number (AIME's `\\textbf{(073)}` style)."""
    if len(s) > 2 and s[0] == "(" and s[-1] == ")" and exact_number(s[1:-1]) is not None:
        return s[1:-1]
    return s


def _same_simple(gold: str, answer: str) -> bool:
    g, a = _strip_units(normalize_answer(gold)), _strip_units(normalize_answer(answer))
    if not g or not a:
        return False
    g, a = _unwrap_single(g), _unwrap_single(a)
    if g[0] + g[-1] == a[0] + a[-1] and g[0] in "([" and g[-1] in ")]" and len(g) > 2 and len(a) > 2:
        gp, ap = _split_top_level(g[1:-1]), _split_top_level(a[1:-1])
        if len(gp) > 1 and len(gp) == len(ap):  # tuples / intervals: element-wise, order matters
            return all(_same_simple(x, y) for x, y in zip(gp, ap))
    fg, fa = exact_number(g), exact_number(a)
    if fg is not None and fa is not None:
        return fg == fa  # exact: 1/3 vs 0.333 stays unequal on purpose
    return g.replace(" ", "") == a.replace(" ", "")


@dataclass(frozen=True)
class RuleJudge:
    """Offline, deterministic second opinion: normalise both sides, then compare exactly.

    Recovers formatting-only rejections (`x = 5` vs `5`, `2,125` vs `2125`, `5\\text{ cm}` vs
    `5`, `\\dfrac{1}{2}` vs `0.5`, `30^\\circ` vs `30`). Numbers are compared as exact Fractions,
    tuples element-wise in order, anything else as normalised strings, so it never accepts an
    answer that differs in value. Known leniency: `1,234` is read as one thousand two hundred
    thirty-four (a thousands separator), not as the list 1, 234.
    """

    name: str = "rule"

    def judge(self, problem: str | None, gold: str, answer: str, completion: str | None = None) -> bool | None:
        if prefilter(gold) or prefilter(answer):
            return None
        return _same_simple(gold, answer)


JUDGE_PROMPT = """\
You are checking a student's final answer to a math problem against the reference answer.
Decide whether the two answers are mathematically equivalent: the same value, expression,
set or choice, allowing for different but equivalent notation (fractions vs decimals that are
exactly equal, reordered terms, units or words around the same number). Do not solve the
problem again and do not judge the reasoning; only compare the two final answers.

Problem:
{problem}

Reference answer:
{gold}

Student's final answer:
{answer}

Are the two answers equivalent? Reply with exactly one word: YES or NO."""


def parse_verdict(reply: str) -> bool | None:
    """YES/NO from a judge reply, or None.

    None if both YES and NO occur as words ("YES and NO", "No... wait, yes"); otherwise the one
    that occurs ("Verdict: **YES**", "No, they differ."); otherwise a first word TRUE/FALSE or
    CORRECT/INCORRECT; otherwise None.
    """
    words = re.findall(r"[A-Za-z]+", reply.upper())
    found = {w for w in words if w in ("YES", "NO")}
    if len(found) == 1:
        return found.pop() == "YES"
    if found or not words:
        return None
    return {"TRUE": True, "FALSE": False, "CORRECT": True, "INCORRECT": False}.get(words[0])


@dataclass
class LLMJudge:
    """Second opinion from a language model: `complete(prompt) -> reply` (any client you like).

    The prompt is `JUDGE_PROMPT` (or `prompt`), filled with problem, gold and answer; the reply
    is read with `parse_verdict`. A raised exception or an unparseable reply gives None and is
    counted in `errors` / `unparseable` (the rejection then stands).
    """

    complete: Callable[[str], str]
    name: str = "llm"
    prompt: str = JUDGE_PROMPT
    calls: int = 0
    errors: int = 0
    unparseable: int = 0
    last_error: str | None = None  # the latest failed call's exception, for the outage message
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def judge(self, problem: str | None, gold: str, answer: str, completion: str | None = None) -> bool | None:
        """Safe to call from several threads at once (the Verifier asks ``judge_concurrency`` at a time)."""
        with self._lock:
            self.calls += 1
        text = self.prompt.format(problem=problem or "(not given)", gold=gold, answer=answer)
        try:
            reply = self.complete(text)
        except Exception as e:  # noqa: BLE001 - counted; the Verifier stops a batch where too many fail
            with self._lock:
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
            return None
        verdict = parse_verdict(reply) if isinstance(reply, str) else None
        if verdict is None:
            with self._lock:
                self.unparseable += 1
        return verdict


