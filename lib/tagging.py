"""Tags on every distilled sample: domain, difficulty, repetition, length.

The paper tags each sample so that later stages can balance and select their own data
(Xu et al. 2025, "Phi-4-Mini-Reasoning", arXiv 2504.21233; Tagging):

* ``domain``: one of :data:`TAG_DOMAINS`. The synthetic generator's five domains keep their
  names (``number_theory``, ``counting_probability``); ``calculus`` and ``other`` exist for
  real data. The LLM prompt uses the human names ("number theory",
  "probability/combinatorics") and the parser maps them back (:data:`DOMAIN_ALIASES`).
* ``difficulty``: one of :data:`DIFFICULTIES`, the paper's five levels ("elementary" ...
  "graduate"; the synthetic generator uses the first four).
* ``repetitive``: the trace loops (``lib.metrics.is_repetitive``; one detector in the project).
* ``length``: response length in tokens (``n_tokens``) or, where no token counts exist, characters.

Two taggers share one interface, ``tag(problem_text) -> Tags``:

* :class:`RuleTagger` (synthetic data, offline, deterministic): reads the problem TEXT only. A
  table of rules, one per problem form of ``lib.problems``, gives domain and level from the form
  and from counts in the text (operations in an arithmetic chain, factors in a remainder). Text
  no rule knows falls back to keyword votes for the domain and a crude size heuristic for the
  difficulty (``Tags.rule == "fallback"``); use :class:`LLMTagger` for real data.
  :func:`tagger_accuracy` scores any tagger against the generator's ground truth.
* :class:`LLMTagger` (real data): asks a model (:data:`TAG_PROMPT`) for one line of JSON. A
  reply that cannot be parsed, or a call that raises, gives ``None`` tags and is counted in
  ``LLMTagger.counts``; nothing is silently defaulted.

Decontamination of training data against the evaluation sets lives in :mod:`lib.decontamination`.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd

from lib.metrics import is_repetitive
from lib.problems import DIFFICULTY_NAMES, DOMAINS

TAG_DOMAINS = DOMAINS + ("calculus", "other")
DIFFICULTIES = tuple(DIFFICULTY_NAMES[k] for k in sorted(DIFFICULTY_NAMES))  # elementary ... graduate


def _key(s: str) -> str:
    """Lowercase, '_' and '-' as spaces, spaces collapsed: ``Middle_School`` -> ``middle school``."""
    return " ".join(str(s).lower().replace("_", " ").replace("-", " ").split())


# Words a reply (or a params file) may use for each domain / difficulty; keys pass through _key.
DOMAIN_ALIASES: dict[str, str] = {
    **{_key(d): d for d in TAG_DOMAINS},
    "number theory": "number_theory",
    "probability/combinatorics": "counting_probability",
    "probability / combinatorics": "counting_probability",
    "combinatorics/probability": "counting_probability",
    "counting & probability": "counting_probability",
    "counting and probability": "counting_probability",
    "probability": "counting_probability",
    "combinatorics": "counting_probability",
}
DIFFICULTY_ALIASES: dict[str, str] = {
    **{_key(d): d for d in DIFFICULTIES},
    "middleschool": "middle school",
    "highschool": "high school",
}


def canonical_domain(value) -> str | None:
    """A domain label in :data:`TAG_DOMAINS`, or None if ``value`` is not one (or an alias)."""
    return None if value is None else DOMAIN_ALIASES.get(_key(value))


def canonical_difficulty(value) -> str | None:
    """A difficulty label in :data:`DIFFICULTIES`, or None if ``value`` is not one (or an alias)."""
    return None if value is None else DIFFICULTY_ALIASES.get(_key(value))


@dataclass(frozen=True)
class Tags:
    """Tags of one problem. ``None`` means "could not tag", never a default.

    ``rule`` says where the tags came from: a :class:`RuleTagger` rule name (``"fallback"`` when
    no form rule matched), ``"llm"``, or for a failed LLM call ``"llm:unparseable"`` /
    ``"llm:partial"`` / ``"llm:error"``; ``error`` holds the reason of a failure.
    """

    domain: str | None
    difficulty: str | None
    rule: str = ""
    error: str | None = None


def _level_name(level: int) -> str:
    return DIFFICULTY_NAMES[min(max(int(level), 1), len(DIFFICULTIES))]


# ---------------------------------------------------------------------------------------------
# Rule tagger (synthetic problems)
# ---------------------------------------------------------------------------------------------

_NUM = r"-?\d+"


def _arith_level(m: re.Match, text: str) -> int:
    # level = operations - 1 (lib.problems._ARITH: 2, 3, 4, 5 operations for levels 1-4)
    n_ops = len(re.findall(r"\b(?:add|subtract|multiply by|divide by)\s+\d+", text, re.I))
    return n_ops - 1


def _remainder_level(m: re.Match, text: str) -> int:
    # level = factors - 1 (lib.problems._NT: 2, 3, 4, 5 factors for levels 1-4): one
    # multiply-and-reduce step per factor after the first
    return len(re.findall(r"\d+", m["factors"])) - 1


def _both_sides_level(m: re.Match, text: str) -> int:
    # one linear equation: x on one side -> 1, x on both sides -> 2
    lhs, _, rhs = m["eq"].partition("=")
    return 2 if ("x" in lhs and "x" in rhs) else 1


def _fixed(level: int) -> Callable[[re.Match, str], int]:
    return lambda m, text: level


@dataclass(frozen=True)
class Rule:
    """One problem form: a regex on the text, its domain, and its level (fixed or computed)."""

    name: str
    pattern: re.Pattern
    domain: str
    level: Callable[[re.Match, str], int]


def _rule(name: str, pattern: str, domain: str, level) -> Rule:
    return Rule(name, re.compile(pattern, re.I | re.S), domain, level if callable(level) else _fixed(level))


# The synthetic forms of lib.problems, most specific first. Difficulty follows the form: how
# many steps the working takes (chain length, factors to reduce) and which method it needs.
RULES: tuple[Rule, ...] = (
    # arithmetic: a chain of operations; level from the number of operations
    _rule("arith_chain", rf"^Start with {_NUM}\.\s.*What is the result\?", "arithmetic", _arith_level),
    # algebra: one linear equation (x on one or both sides), substitution, elimination
    _rule("alg_substitute", r"^Solve for x and y:\s*y\s*=.*\band\b", "algebra", 3),
    _rule("alg_system", r"^Solve for x and y:", "algebra", 4),
    _rule("alg_linear", r"^Solve for x:\s*(?P<eq>[^=]*=[^=]*?)\.?$", "algebra", _both_sides_level),
    # number theory: remainder of a product; level from the number of factors
    _rule("nt_remainder", r"remainder when (?P<factors>\d+(?:\s*\*\s*\d+)+) is divided by \d+", "number_theory",
          _remainder_level),
    # counting / probability: product rule and pairs; one draw; two draws (one colour / same-different)
    _rule("count_choose2", r"In how many ways can 2 .* be chosen from", "counting_probability", 1),
    _rule("count_product", r"How many \w+ (?:of one of each|are possible)", "counting_probability", 1),
    _rule("prob_one", r"One ball is drawn at random.*probability", "counting_probability", 2),
    _rule("count_neither", r"^Of \d+ \w+, \d+ .+ and \d+ do both\. How many do neither\?", "counting_probability", 3),
    _rule("prob_both", r"Two are drawn without replacement.*probability that both are", "counting_probability", 4),
    _rule("prob_same_diff", r"Two are drawn without replacement.*(?:the same|different) colou?rs?",
          "counting_probability", 4),
    # geometry: one-shape perimeter; one area or two shapes; composite with a triangle or a
    # trapezoid; three shapes, a box's surface, Pythagoras
    _rule("geom_rect_perimeter", r"rectangle is \d+ long and \d+ wide.*perimeter", "geometry", 1),
    _rule("geom_tri_perimeter", r"triangle has sides \d+, \d+ and \d+.*perimeter", "geometry", 1),
    _rule("geom_garden", r"rectangle, a square of side \d+ and a right triangle with legs \d+ and \d+", "geometry", 4),
    _rule("geom_right_area", r"^A right triangle has legs \d+ and \d+\. What is its area", "geometry", 2),
    _rule("geom_cut_square", r"square of side \d+ is cut from", "geometry", 2),
    _rule("geom_square_rect", r"square of side \d+ and an? \d+ by \d+ rectangle are put side by side", "geometry", 2),
    _rule("geom_house", r"rectangle with a triangle of base \d+ and height \d+ on top", "geometry", 3),
    _rule("geom_trapezoid", r"trapezoid has parallel sides", "geometry", 3),
    _rule("geom_box", r"box is \d+ by \d+ by \d+.*surface area", "geometry", 4),
    _rule("geom_pythagoras", r"right triangle has legs \d+ and \d+.*perimeter", "geometry", 4),
)

# Fallback: keyword votes per domain for text no rule knows; ties go to the earlier domain here.
DOMAIN_KEYWORDS: dict[str, tuple[str, ...]] = {
    "calculus": (r"\bderivative", r"\bintegra(?:l|te)", r"\\int\b", r"\blimit\b", r"\\lim\b", r"\bdifferentiat",
                 r"\bd/dx\b", r"\bconverge", r"\btangent line", r"\bantiderivative"),
    "counting_probability": (r"\bprobabilit", r"\bhow many ways", r"\bin how many\b", r"\bchoose\b",
                             r"\bpermutation", r"\bcombination", r"\bdice\b", r"\bdie\b", r"\bcoins?\b",
                             r"\bat random\b", r"\bexpected value", r"\barrangements?\b", r"\bbinom"),
    "number_theory": (r"\bgreatest common divisor", r"\bgcd\b", r"\blcm\b", r"\bleast common multiple",
                      r"\bprimes?\b", r"\bdivisors?\b", r"\bdivisible\b", r"\bremainder\b", r"\bmod(?:ulo)?\b",
                      r"\\pmod", r"\bdigits?\b", r"\bbase \d+\b", r"\bintegers? n\b", r"\bfactors?\b"),
    "geometry": (r"\btriangle", r"\bcircle", r"\brectangle", r"\bsquare of side", r"\bpolygon", r"\bangle",
                 r"\bperimeter", r"\barea\b", r"\bvolume", r"\bradius", r"\bdiameter", r"\btrapezoid",
                 r"\bcube\b", r"\bsphere", r"\bcylinder", r"\bhypotenuse", r"\bparallel", r"\bperpendicular",
                 r"\\triangle", r"\\angle", r"\[asy\]"),
    "algebra": (r"\bsolve\b", r"\bequations?\b", r"\bpolynomial", r"\broots?\b", r"\bf\(x\)", r"\bvariable",
                r"\binequalit", r"\bsystem\b", r"\bquadratic", r"\bfunction", r"\b[xy]\s*[=+\-^]", r"\bx\^",
                r"\bsimplify", r"\bevaluate", r"\bexpression", r"\bvalue of\b", r"\bsequence", r"\breal numbers?",
                r"\$[^$]*\b[a-z]\b\s*[=<>+\-^][^$]*\$"),
    "arithmetic": (r"\bstart with\b", r"\badd\b", r"\bsubtract\b", r"\bmultiply\b", r"\bdivide\b",
                   r"\bsum of\b", r"\bproduct of\b", r"\bhow much\b", r"\btotal\b", r"\bresult\b",
                   r"\bpercent", r"\baverage\b", r"\bdollars?\b", r"\bcosts?\b", r"\bfractions?\b"),
}
_DOMAIN_KEYWORDS_RE = {d: [re.compile(p, re.I) for p in ps] for d, ps in DOMAIN_KEYWORDS.items()}
# Words that put a problem above high school whatever its size (fallback difficulty only).
_ADVANCED_RE = re.compile(r"\b(?:integra|derivative|limit|matri|eigen|vector space|complex number|"
                          r"series|group|field|topolog|manifold|measure)\w*", re.I)


# A hit for a specialised domain outweighs generic algebra/arithmetic vocabulary: a calculus or
# probability problem is written in algebra too.
DOMAIN_KEYWORD_WEIGHTS = {"calculus": 3.0, "counting_probability": 2.0, "number_theory": 2.0, "geometry": 1.5,
                          "algebra": 1.0, "arithmetic": 1.0}


def fallback_domain(text: str) -> str:
    """The domain with the highest weighted keyword count (:data:`DOMAIN_KEYWORDS` x
    :data:`DOMAIN_KEYWORD_WEIGHTS`; ties: keyword-table order); "other" if no keyword matches."""
    votes = {d: DOMAIN_KEYWORD_WEIGHTS[d] * sum(bool(r.search(text)) for r in rs)
             for d, rs in _DOMAIN_KEYWORDS_RE.items()}
    best = max(votes.values())
    if best == 0:
        return "other"
    return next(d for d, v in votes.items() if v == best)


def fallback_difficulty(text: str) -> str:
    """A crude size heuristic: words, numbers and their magnitude, advanced vocabulary.

    Not calibrated on real data (there is no ground truth offline); the embedded run never needs
    it (every synthetic form has a rule). Points: 1 per 25 words, 1 per 4 numbers, 1 if a number
    has 3+ digits, 2 for advanced vocabulary; level = 1 + points // 2, capped at 5.
    """
    words = len(text.split())
    numbers = re.findall(r"\d+", text)
    points = words // 25 + len(numbers) // 4 + int(any(len(n) >= 3 for n in numbers))
    points += 2 * bool(_ADVANCED_RE.search(text))
    return _level_name(1 + points // 2)


class RuleTagger:
    """Domain and difficulty from the problem text alone, by the rules in :data:`RULES`.

    ``tag(text)`` tries the rules in order; the first match gives the domain and the level (a
    computed level is clamped to 1..5). No match: :func:`fallback_domain` and
    :func:`fallback_difficulty`, with ``rule="fallback"``. Empty text: ``Tags(None, None)``.
    """

    def __init__(self, rules: Sequence[Rule] = RULES):
        self.rules = tuple(rules)

    def tag(self, problem_text: str) -> Tags:
        text = (problem_text or "").strip()
        if not text:
            return Tags(None, None, rule="empty", error="empty problem text")
        for r in self.rules:
            m = r.pattern.search(text)
            if m:
                return Tags(r.domain, _level_name(r.level(m, text)), rule=r.name)
        return Tags(fallback_domain(text), fallback_difficulty(text), rule="fallback")

    def tag_many(self, texts: Iterable[str]) -> list[Tags]:
        return [self.tag(t) for t in texts]


def _truth_frame(problems) -> pd.DataFrame:
    """``problem``, ``domain``, ``difficulty`` from Problems, dicts or a DataFrame."""
    if isinstance(problems, pd.DataFrame):
        missing = [c for c in ("problem", "domain", "difficulty") if c not in problems.columns]
        if missing:
            raise ValueError(f"tagger_accuracy: missing required column(s) {missing}")
        return problems[["problem", "domain", "difficulty"]].reset_index(drop=True)
    rows = []
    for p in problems:
        get = p.get if isinstance(p, Mapping) else lambda k, p=p: getattr(p, k)
        rows.append({"problem": get("problem"), "domain": get("domain"), "difficulty": get("difficulty")})
    return pd.DataFrame(rows, columns=["problem", "domain", "difficulty"])


def tagger_accuracy(tagger, problems) -> dict:
    """Score a tagger against ground truth (``lib.problems.Problem`` list, dicts or a DataFrame).

    Returns ``n``, ``domain_accuracy``, ``difficulty_accuracy``, ``both_accuracy``, ``untagged``
    (problems with a None tag; they count as wrong), ``rules`` (how often each rule fired),
    ``domain_confusion`` and ``difficulty_confusion`` (DataFrames, truth in rows, tag in columns,
    ``"(none)"`` for None).
    """
    truth = _truth_frame(problems)
    if truth.empty:
        raise ValueError("tagger_accuracy: no problems given")
    tags = [tagger.tag(t) for t in truth["problem"]]
    pred_dom = pd.Series([t.domain for t in tags])
    pred_dif = pd.Series([t.difficulty for t in tags])
    dom_ok = pred_dom.eq(truth["domain"])
    dif_ok = pred_dif.eq(truth["difficulty"])

    def confusion(true: pd.Series, pred: pd.Series, order: Sequence[str]) -> pd.DataFrame:
        cm = pd.crosstab(true.rename("truth"), pred.fillna("(none)").rename("tag"))
        cols = [c for c in order if c in cm.columns] + [c for c in cm.columns if c not in order]
        rows = [r for r in order if r in cm.index] + [r for r in cm.index if r not in order]
        return cm.loc[rows, cols]

    return {
        "n": len(truth),
        "domain_accuracy": float(dom_ok.mean()),
        "difficulty_accuracy": float(dif_ok.mean()),
        "both_accuracy": float((dom_ok & dif_ok).mean()),
        "untagged": int((pred_dom.isna() | pred_dif.isna()).sum()),
        "rules": dict(Counter(t.rule for t in tags).most_common()),
        "domain_confusion": confusion(truth["domain"], pred_dom, TAG_DOMAINS),
        "difficulty_confusion": confusion(truth["difficulty"], pred_dif, DIFFICULTIES),
    }


# ---------------------------------------------------------------------------------------------
# LLM tagger (real data)
# ---------------------------------------------------------------------------------------------

# The placeholder is replaced with str.replace (not str.format: the JSON braces stay literal).
# The reply is one line of JSON so that parsing is strict; parse_tag_reply also finds that JSON
# inside code fences or prose, since chat models add them despite instructions.
TAG_PROMPT = """\
You label math problems for a training-data pipeline. Read the problem below and classify it.

domain: the main area of mathematics needed, exactly one of
  "algebra", "geometry", "number theory", "probability/combinatorics", "calculus", "arithmetic", "other"
difficulty: the level at which a student would normally be able to solve it, exactly one of
  "elementary", "middle school", "high school", "college", "graduate"

Reply with one line of JSON and nothing else, for example:
{"domain": "algebra", "difficulty": "high school"}

Problem:
{problem}
"""
PROMPT_PLACEHOLDER = "{problem}"


class TagParseError(ValueError):
    """A tagger reply holds no usable domain or difficulty; the message says what is wrong."""


_JSON_OBJECT_RE = re.compile(r"\{[^{}]*\}", re.S)
_FIELD_RE = {k: re.compile(rf"\b{k}\b\s*[:=]\s*[\"']?([^\"'\n,}}]+)", re.I) for k in ("domain", "difficulty")}


def parse_tag_reply(reply: str) -> tuple[str | None, str | None]:
    """``(domain, difficulty)`` from a reply; a field that is missing or not a known label is None.

    Looks for the first flat JSON object having a ``domain`` or ``difficulty`` key (inside code
    fences or prose too); failing that, ``domain: ...`` / ``difficulty: ...`` lines. Labels
    are matched through :data:`DOMAIN_ALIASES` / :data:`DIFFICULTY_ALIASES` (case, ``_`` and
    ``-`` ignored). Raises :class:`TagParseError` when neither field gives a known label.
    """
    if not isinstance(reply, str) or not reply.strip():
        raise TagParseError("empty reply")
    raw: dict[str, object] | None = None
    for m in _JSON_OBJECT_RE.finditer(reply):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            lowered = {str(k).strip().lower(): v for k, v in obj.items()}
            if "domain" in lowered or "difficulty" in lowered:
                raw = lowered
                break
    if raw is None:
        raw = {}
        for k, rx in _FIELD_RE.items():
            m = rx.search(reply)
            if m:
                raw[k] = m.group(1).strip()
    dom_raw, dif_raw = raw.get("domain"), raw.get("difficulty")
    domain = canonical_domain(dom_raw) if isinstance(dom_raw, str) else None
    difficulty = canonical_difficulty(dif_raw) if isinstance(dif_raw, str) else None
    if domain is None and difficulty is None:
        what = "no domain/difficulty fields" if not raw else f"unknown labels domain={dom_raw!r} difficulty={dif_raw!r}"
        raise TagParseError(f"{what} in reply {reply[:120]!r}")
    return domain, difficulty


class LLMTagger:
    """Tags from a language model: ``complete(prompt) -> reply`` is any text-completion callable.

    ``tag(text)`` fills :data:`TAG_PROMPT` (or ``prompt``), calls ``complete`` (``1 + retries``
    tries while the reply fails to parse or the call raises) and parses the reply with
    :func:`parse_tag_reply`. Outcomes are counted in ``counts``: ``ok`` (both tags), ``partial``
    (one tag; the other None), ``unparseable`` (no tag), ``error`` (``complete`` raised on every
    try). Failures keep ``None`` tags and are listed in ``failures`` (first ``keep_failures``).
    """

    def __init__(self, complete: Callable[[str], str], prompt: str = TAG_PROMPT, retries: int = 0,
                 keep_failures: int = 20, max_concurrency: int = 1, max_failure_share: float = 1.0):
        if PROMPT_PLACEHOLDER not in prompt:
            raise ValueError(f"prompt must contain the placeholder {PROMPT_PLACEHOLDER!r}")
        if retries < 0 or max_concurrency < 1 or not 0.0 <= max_failure_share <= 1.0:
            raise ValueError(f"need retries >= 0, max_concurrency >= 1, max_failure_share in [0, 1]; got "
                             f"{retries}, {max_concurrency}, {max_failure_share}")
        self.max_concurrency, self.max_failure_share = int(max_concurrency), float(max_failure_share)
        self._lock = threading.Lock()
        self.complete = complete
        self.prompt = prompt
        self.retries = retries
        self.keep_failures = keep_failures
        self.counts: Counter = Counter({"ok": 0, "partial": 0, "unparseable": 0, "error": 0})
        self.failures: list[dict] = []

    def render(self, problem_text: str) -> str:
        return self.prompt.replace(PROMPT_PLACEHOLDER, problem_text)

    def _fail(self, kind: str, problem_text: str, reason: str, reply: str | None = None) -> None:
        with self._lock:
            self._record_failure(kind, problem_text, reason, reply)

    def _record_failure(self, kind: str, problem_text: str, reason: str, reply: str | None) -> None:
        self.counts[kind] += 1
        if len(self.failures) < self.keep_failures:
            self.failures.append({"kind": kind, "problem": problem_text[:200], "reason": reason,
                                  "reply": None if reply is None else reply[:200]})

    def tag(self, problem_text: str) -> Tags:
        prompt = self.render(problem_text)
        last_kind, last_reason, last_reply = "error", "no attempt", None
        for _ in range(1 + self.retries):
            try:
                reply = self.complete(prompt)
            except Exception as e:  # noqa: BLE001 - any client failure is one counted outcome
                last_kind, last_reason, last_reply = "error", f"{type(e).__name__}: {e}", None
                continue
            try:
                domain, difficulty = parse_tag_reply(reply)
            except TagParseError as e:
                last_kind, last_reason, last_reply = "unparseable", str(e), reply if isinstance(reply, str) else None
                continue
            if domain is None or difficulty is None:
                missing = "domain" if domain is None else "difficulty"
                self._fail("partial", problem_text, f"no valid {missing}", reply)
                return Tags(domain, difficulty, rule="llm:partial", error=f"no valid {missing}")
            with self._lock:
                self.counts["ok"] += 1
            return Tags(domain, difficulty, rule="llm")
        self._fail(last_kind, problem_text, last_reason, last_reply)
        return Tags(None, None, rule=f"llm:{last_kind}", error=last_reason)

    def tag_many(self, texts: Iterable[str]) -> list[Tags]:
        """Tags for many texts, ``max_concurrency`` requests at a time, in input order. When more than
        ``max_failure_share`` of them got no answer at all (``complete`` raised on every try: the
        server is down), raise :class:`TaggerOutageError` rather than return a table of empty tags."""
        texts = list(texts)
        errors_before = self.counts["error"]
        if self.max_concurrency > 1 and len(texts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(texts)), thread_name_prefix="tagger") as pool:
                out = list(pool.map(self.tag, texts))
        else:
            out = [self.tag(t) for t in texts]
        failed = self.counts["error"] - errors_before
        if failed and failed > self.max_failure_share * len(texts):
            example = next((f["reason"] for f in reversed(self.failures) if f["kind"] == "error"), "")
            raise TaggerOutageError(
                f"the LLM tagger got no answer for {failed} of {len(texts)} problems (more than "
                f"{self.max_failure_share:.0%}, tagging.max_failure_share); last error: {example[:200]}. "
                "Is the server up? Fix it and rerun the stage")
        return out


class TaggerOutageError(RuntimeError):
    """Too many LLM tagger calls got no answer: the server behind it is down or failing."""


def from_params(tagging_section, teacher_section, seed: int):
    """The tagger params ``tagging.tagger`` names: the rule tagger, or the LLM tagger through the
    teacher's client with the teacher's concurrency and ``tagging.max_failure_share``."""
    if tagging_section.tagger == "rule":
        return RuleTagger()
    from lib import teachers

    t = teachers.from_params(teacher_section, seed=seed, progress=False)
    return LLMTagger(t.complete, max_concurrency=teacher_section.max_concurrency,
                     max_failure_share=tagging_section.max_failure_share)


# ---------------------------------------------------------------------------------------------
# Tagging a rollouts table
# ---------------------------------------------------------------------------------------------

def _require(df: pd.DataFrame, cols: Iterable[str], fn: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{fn}: missing required column(s) {', '.join(map(repr, missing))}; "
                         f"columns present: {', '.join(map(str, df.columns))}")


def tag_rollouts(df: pd.DataFrame, tagger, length: str = "auto", problem_col: str = "problem",
                 text_col: str = "text") -> pd.DataFrame:
    """A copy of ``df`` with ``tag_domain``, ``tag_difficulty``, ``repetitive``, ``length`` columns.

    Domain and difficulty are computed once per distinct problem text (a problem has ~8
    rollouts; an LLM tagger is called once per problem) and are None where the tagger failed.
    ``repetitive`` is ``lib.metrics.is_repetitive`` on each rollout's full text (a missing text
    counts as not repetitive). ``length`` is ``n_tokens`` (``length="tokens"``; every row must have
    it), the text's characters (``"chars"``), or ``"auto"``: tokens if ``n_tokens`` is present on
    every row, else characters for every row (never a mix). The unit is in ``out.attrs["length_unit"]``.
    """
    fn = "tag_rollouts"
    if length not in ("auto", "tokens", "chars"):
        raise ValueError(f"{fn}: length must be 'auto', 'tokens' or 'chars', got {length!r}")
    _require(df, [problem_col, text_col] + (["n_tokens"] if length == "tokens" else []), fn)
    out = df.copy()
    problems = out[problem_col].astype(str)
    unique = list(pd.unique(problems))
    tags = dict(zip(unique, tagger.tag_many(unique)))
    out["tag_domain"] = problems.map(lambda p: tags[p].domain).astype(object)
    out["tag_difficulty"] = problems.map(lambda p: tags[p].difficulty).astype(object)
    out["repetitive"] = [bool(isinstance(t, str) and is_repetitive(t)) for t in out[text_col]]
    has_tokens = "n_tokens" in out.columns and out["n_tokens"].notna().all()
    if length == "tokens" and not has_tokens:
        raise ValueError(f"{fn}: length='tokens' but {int(out['n_tokens'].isna().sum())} rows have no n_tokens")
    unit = "tokens" if (length == "tokens" or (length == "auto" and has_tokens)) else "chars"
    if unit == "tokens":
        out["length"] = out["n_tokens"].astype("int64")
    else:
        out["length"] = [len(t) if isinstance(t, str) else 0 for t in out[text_col]]
    out.attrs["length_unit"] = unit
    return out


def tag_summary(df: pd.DataFrame, problem_col: str = "problem") -> dict:
    """Counts for ``metrics.json`` from a :func:`tag_rollouts` table.

    Per distinct problem: ``by_domain``, ``by_difficulty`` (``"(none)"`` for untagged),
    ``untagged_domain``, ``untagged_difficulty``; per row: ``repetitive_share``, ``length`` stats.
    Where the table also holds reference ``domain`` / ``difficulty`` columns (the synthetic
    generator's ground truth, or a source dataset's labels), their agreement with the tags.
    """
    _require(df, [problem_col, "tag_domain", "tag_difficulty", "repetitive", "length"], "tag_summary")
    per_problem = df.drop_duplicates(problem_col)
    out: dict = {
        "n_rows": int(len(df)),
        "n_problems": int(len(per_problem)),
        "by_domain": {str(k): int(v) for k, v in per_problem["tag_domain"].fillna("(none)").value_counts().items()},
        "by_difficulty": {str(k): int(v) for k, v in
                          per_problem["tag_difficulty"].fillna("(none)").value_counts().items()},
        "untagged_domain": int(per_problem["tag_domain"].isna().sum()),
        "untagged_difficulty": int(per_problem["tag_difficulty"].isna().sum()),
        "repetitive_share": float(df["repetitive"].mean()) if len(df) else float("nan"),
        "length_unit": df.attrs.get("length_unit", "unknown"),
    }
    if len(df):
        q = df["length"].astype(float)
        out["length"] = {"mean": float(q.mean()), "median": float(q.median()),
                         "p90": float(q.quantile(0.9)), "max": float(q.max())}
    for ref, tag, canon in (("domain", "tag_domain", canonical_domain),
                            ("difficulty", "tag_difficulty", canonical_difficulty)):
        if ref in per_problem.columns and per_problem[ref].notna().any():
            known = per_problem[per_problem[ref].notna()]
            truth = known[ref].map(canon)
            out[f"{ref}_agreement"] = float((truth == known[tag]).mean())
    return out
