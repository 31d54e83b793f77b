"""The embedded teacher: long, varied, sometimes wrong reasoning for the synthetic problems.

At tiny scale there is no DeepSeek-R1 to distill from; :class:`EmbeddedTeacher` writes traces
from each :mod:`lib.problems` problem's exact steps, wrong on purpose at a rate per level, so
the verified-correct / incorrect split that feeds SFT and rollout DPO exists without a GPU.
"""
from __future__ import annotations

import json
import random
import re
from fractions import Fraction
from typing import Any, Mapping, Sequence

from lib.chat import THINK_CLOSE, THINK_OPEN

from lib.judges import RuleJudge
from lib.teachers.base import Rollout, _check_n



DEFAULT_ERROR_RATE = {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}
VERBOSITIES = ("compact", "normal", "long")

# Probabilities of the optional parts per verbosity; the lengths they give are in the
# EmbeddedTeacher docstring.
_VERBOSITY = {
    # restate: problem restated; givens: numbers listed; plan: method named; lead: phrase before a
    # step; check: chance a step is verified (at most max_checks); muse: asides per trace;
    # second: all steps redone; recheck: last step re-stated; reflect: "did I answer the question?"
    "compact": dict(restate=0.0, givens=0.0, plan=0.5, lead=0.25, check=0.3, max_checks=1, muse=0.0,
                    second=0.0, recheck=0.2, reflect=0.0),
    "normal": dict(restate=1.0, givens=0.3, plan=1.0, lead=0.8, check=0.35, max_checks=3, muse=0.2,
                   second=0.2, recheck=0.5, reflect=0.3),
    "long": dict(restate=1.0, givens=0.8, plan=1.0, lead=1.0, check=0.6, max_checks=8, muse=0.8,
                 second=0.7, recheck=0.8, reflect=0.8),
}

_OPENERS_COMPACT = ("Let me solve this step by step.", "Let me work it out.", "Step by step:", "")
_RESTATE = (
    "Okay, so the problem says: {problem}",
    "Let me restate the problem. {problem}",
    "We are told: {problem}",
    "Alright, let me read this carefully. {problem}",
    "The problem: {problem}",
)
# Plans: by problem form where the form is known (lib.problems specs carry "form"), else by the
# operations the steps use, else by domain, else generic, so a problem family added or changed
# in lib.problems still gets a sensible (if plainer) plan instead of a KeyError.
_PLANS = {
    "arithmetic": (
        "I'll apply the operations one at a time, in the order given, keeping track of the running value.",
        "The plan: do each operation in order and write down the value after each one.",
        "So this is a chain of operations. I need to go through them in order.",
    ),
    "algebra:linear": (
        "To isolate x, move the constant to the other side, then divide by the coefficient of x.",
        "Plan: undo the constant on both sides, then divide by the coefficient.",
    ),
    "algebra:both_sides": (
        "I'll collect the x terms on one side and the constants on the other, then divide.",
        "Plan: bring the x terms together, bring the constants together, then divide by the coefficient.",
    ),
    "algebra:substitute": (
        "y is already given in terms of x, so I can substitute it into the second equation, solve for x, then find y.",
        "Plan: substitute the expression for y, collect the x terms, solve for x, then compute y.",
    ),
    "algebra:system": (
        "I'll eliminate y: subtract a multiple of the first equation from the second, solve for x, then find y.",
        "Plan: eliminate one variable, solve for the other, then back-substitute.",
    ),
    "op:mod": (
        "I'll multiply step by step and take the remainder after each product, so the numbers stay small.",
        "Plan: reduce modulo after every multiplication; the remainder of the product is the remainder of the reduced product.",
        "Working modulo the divisor the whole way keeps every number small.",
    ),
    "op:divmod": (
        "I'll use the Euclidean algorithm: divide, keep the remainder, repeat until the remainder is 0.",
        "Plan: Euclid's algorithm, one division per line.",
    ),
    "counting_probability:product": (
        "By the product rule, the number of combinations is the product of the number of choices in each group.",
        "One choice from each group, so I multiply the counts together.",
    ),
    "counting_probability:choose2": (
        "Choosing 2 from n without order gives n(n - 1)/2 ways.",
        "Ordered pairs are n(n - 1); each unordered pair is counted twice, so divide by 2.",
    ),
    "counting_probability:one": (
        "The probability is the number of favourable balls over the total number of balls, reduced.",
        "First the total number of balls, then favourable over total, then reduce the fraction.",
    ),
    "counting_probability:two": (
        "I'll count ordered draws: the total is n(n - 1), the favourable count comes from the colours, then I reduce.",
        "Two draws without replacement: count the favourable ordered pairs and all ordered pairs, then reduce the fraction.",
    ),
    "geometry": (
        "I'll use the formula for this shape and compute it piece by piece.",
        "Let me set up the formula first, then plug in the numbers.",
        "Break it into simple pieces and compute each one.",
    ),
    "any": (
        "Let me break this into small computations and do them one at a time.",
        "I'll work it out step by step, writing down each intermediate result.",
    ),
}
_LEADS = {
    "+": ("Add {a} and {b}:", "Next, {a} plus {b}:", "Adding {b}:", "Now the sum:", "Then add:"),
    "-": ("Subtract {b} from {a}:", "Next, {a} minus {b}:", "Taking away {b}:", "Now the difference:", "Then subtract:"),
    "*": ("Multiply {a} by {b}:", "Next, {a} times {b}:", "Now the product:", "Then multiply:"),
    "/": ("Divide {a} by {b}:", "Next, {a} divided by {b}:", "Now divide:", "Then the quotient:"),
    "divmod": ("Divide {a} by {b} with remainder:", "Next division:", "Now {a} by {b}:", "Euclid step:"),
    "mod": ("The remainder of {a} divided by {b}:", "Next, {a} mod {b}:", "Now the remainder:", "Reduce mod {b}:"),
    "gcd": ("The gcd of {a} and {b}:", "Find the common factor of {a} and {b}:", "Reduce: the gcd is"),
    "sqrt": ("Take the square root:", "Now the square root of {a}:", "The hypotenuse is the square root:"),
}
_LEADS_ANY = ("Next:", "Then:", "Now:")  # an op added to lib.problems later still gets lead-ins
_CHECK_RESTATE = (
    "Wait, let me verify: {line}. Yes.",
    "Let me double-check that: {line}. Correct.",
    "Hmm, is that right? {line}. Yes, that's right.",
    "Checking: {line}. Good.",
    "Let me make sure: {line}. Yes.",
)
_MUSINGS = (
    "Hmm, the numbers are small, so I can do this carefully by hand.",
    "I need to be careful with the signs here.",
    "Let me not rush this.",
    "Okay, so far so good.",
    "That looks reasonable so far.",
)
_SECOND_PASS = (
    "Let me go through the whole calculation once more to be sure.",
    "Actually, let me redo it from the start to make sure I didn't slip.",
    "Let me recompute everything in one pass as a check.",
)
_RECHECK = (
    "Let me recheck the last step: {line}. So the final value is {ans}.",
    "One more look at the final step: {line}. That gives {ans}.",
    "Rechecking the end: {line}, so {ans}.",
)
_WRAP = ("So the answer is {ans}.", "Therefore the answer is {ans}.", "So I get {ans}.", "That gives {ans}.")
_CONCLUDE = (
    "The {qty} is \\boxed{{{box}}}.",
    "Therefore, the {qty} is \\boxed{{{box}}}.",
    "**Answer:** \\boxed{{{box}}}",
    "So the final answer is \\boxed{{{box}}}.",
    "\\boxed{{{box}}}",
)
_GIVENS = ("The numbers given are {nums}.", "Let me list what is given: {nums}.", "Given: {nums}.")
_N_STEPS = ("This should take {n} steps.", "There will be {n} computations.", "I expect {n} steps.")
_REFLECT = (
    "Let me make sure I answered the right question: it asks for the {qty}, and I found {ans}. Good.",
    "Does this answer the question? The question wants the {qty}, which is {ans}. Yes.",
    "Before I finish: the {qty} is what was asked, and it is {ans}.",
)
_LOOP_INTRO = "Wait, let me verify this again."


def _plain_answer(answer_latex: str) -> str:
    """``\\frac{3}{4}`` -> ``3/4`` (the form used inside the step lines)."""
    return re.sub(r"\\frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", answer_latex)


def _form(p) -> str:
    try:
        return json.loads(p.spec).get("form", "")
    except (ValueError, AttributeError):
        return ""


def _plan_key(p, steps) -> str:
    form = _form(p)
    if p.domain == "counting_probability" and form in ("both", "same", "different"):
        form = "two"
    ops = {st.op for st in steps}
    for key in (f"{p.domain}:{form}", *(f"op:{op}" for op in ("mod", "divmod") if op in ops), p.domain):
        if key in _PLANS:
            return key
    return "any"


# What the boxed value is, in words, read off the question ("What is its area?" -> "area").
_QUANTITY_PATTERNS = (
    (r"\bSolve for\b", "solution"),
    (r"\bWhat area is left\b", "remaining area"),
    (r"\bWhat is (?:its|their|the) ([a-z ]+?)(?: when| that| of| if|\?)", "{0}"),
    (r"\b[Hh]ow many ([a-z]+)", "number of {0}"),
    (r"\bFind the ([a-z ]+?) (?:of|when)\b", "{0}"),
)


def _quantity(p) -> str:
    for pattern, fmt in _QUANTITY_PATTERNS:
        m = re.search(pattern, p.problem)
        if m:
            return fmt.format(*m.groups())
    return "answer"


def _final_words(p, answer_latex: str) -> str:
    """The answer as said inside the reasoning: ``x = -3 and y = 8``, ``36/55``, ``12``."""
    plain = _plain_answer(answer_latex)
    if p.domain == "algebra":
        if plain.startswith("("):
            x, y = (s.strip() for s in plain[1:-1].split(",", 1))
            return f"x = {x} and y = {y}"
        return f"x = {plain}"
    return plain


def _inverse_check(step) -> str | None:
    """A check of a CORRECT step by the inverse operation ("36 / 3 = 12, so 12 * 3 = 36 holds").

    Only ever used on steps that are right: the inverse of a slipped step would expose it, and
    a teacher that makes a slip does not notice it (the wrong value is restated instead).
    """
    from lib.problems import Step

    op, a, v = step.op, step.args, step.value
    try:
        if op == "+":
            inv = Step("-", (v, a[1]), a[0])
        elif op == "-":
            inv = Step("+", (v, a[1]), a[0])
        elif op == "*" and a[1] != 0:
            inv = Step("/", (v, a[1]), a[0])
        elif op == "/":
            inv = Step("*", (v, a[1]), a[0])
        elif op == "sqrt":
            inv = Step("*", (v, v), a[0])
        elif op == "mod" and step.is_correct and a[1] > 0:  # 32 mod 12 = 8: 2 * 12 = 24, 24 + 8 = 32
            prod = Step("*", ((a[0] - v) // a[1], a[1]), a[0] - v)
            return f"Check: {prod.text}, and {Step('+', (prod.value, v), a[0]).text}. Yes."
        elif op == "divmod":
            prod = Step("*", (v[0], a[1]), v[0] * a[1])
            return f"Check: {prod.text}, and {Step('+', (prod.value, v[1]), a[0]).text}. Yes."
        else:
            return None
        if not inv.is_correct:
            return None
    except (TypeError, ZeroDivisionError):
        return None
    return f"Check: {inv.text}, so {step.text} is right."


class EmbeddedTeacher:
    """Writes long, varied, sometimes wrong reasoning for :mod:`lib.problems` problems.

    Why: at tiny scale there is no R1 to distill from, but the recipe still needs what a real
    teacher gives - long traces whose *local* computations a small model can learn (every
    ``Step.text`` appears verbatim on its own line), variety between the ~8 samples of one
    problem (wording, optional parts, which steps are verified), and wrong answers that are
    more frequent on harder problems (the "incorrect" rollouts that rollout DPO uses as
    *rejected*; the paper's stage 3).

    A trace is: optional restatement of the problem, a plan, the steps (each possibly after a
    lead-in phrase), self-checks of a random subset of steps (restated, or by the inverse
    operation), optional musings, an optional second pass over all steps, an optional recheck
    of the final step, a wrap-up line, then ``</think>``, a short conclusion and ``\\boxed{}``.

    Slips: with probability ``error_rate[level]`` the sample gets a slip from
    :func:`lib.problems.random_slip` (one step off by -10/-2/-1/+1/+2/+10, carried through every
    later step): the trace stays internally consistent and ends in a wrong boxed answer; a
    self-check on the slipped step restates the wrong value (the teacher does not notice).

    Loops: with probability ``repeat_rate`` the trace starts repeating one paragraph until it
    exceeds ``max_chars``, never closes ``</think>`` and has ``finished=False`` - like a real
    model that loops until its length limit (something for the repetition tagger to find).

    Determinism: every choice is drawn from ``random.Random`` seeded with
    ``(teacher seed, generate seed, problem id, sample index)``; the slip decision has its own
    stream, so changing ``verbosity`` changes the wording but not which samples are wrong.

    Lengths, from ``benchmarks/trace_lengths.py`` (1,600 traces = 200 problems x 8, levels 1-4 balanced;
    tokens of a byte-level BPE of 1,024 tokens with one token per digit, trained on such traces
    as :mod:`lib.tokenizer` does; measured with lib.problems as of this writing):

    ==========  ================  =========================  ==========================
    verbosity   chars mean / max  tokens mean (p90) / max    tokens by level 1 / 2 / 3 / 4
    ==========  ================  =========================  ==========================
    compact     233 / 499         105 (152) / 221            73 / 93 / 117 / 138
    normal      513 / 1,036       209 (299) / 450            146 / 182 / 234 / 273
    long        738 / 1,392       306 (425) / 601            216 / 270 / 338 / 399
    ==========  ================  =========================  ==========================

    For scale: the bare step list (:func:`lib.problems.cot_solution`) is 77 chars / 49 tokens
    on average. Every token costs CPU time at tiny scale, hence the ``verbosity`` knob; "long"
    still fits a 1,024-position model with its prompt. A looping trace is ``max_chars`` long.
    """

    def __init__(self, error_rate: Mapping[int, float] | float | None = None, seed: int = 0,
                 verbosity: str = "normal", repeat_rate: float = 0.0, max_chars: int = 6000):
        self.error_rate = self._check_rates(DEFAULT_ERROR_RATE if error_rate is None else error_rate)
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity must be one of {VERBOSITIES}, got {verbosity!r}")
        if not 0.0 <= repeat_rate <= 1.0:
            raise ValueError(f"repeat_rate must be in [0, 1], got {repeat_rate}")
        if max_chars < 200:
            raise ValueError(f"max_chars must be >= 200 (a looping trace is cut there), got {max_chars}")
        self.seed = int(seed)
        self.verbosity = verbosity
        self.repeat_rate = float(repeat_rate)
        self.max_chars = int(max_chars)
        self.name = f"embedded-{verbosity}"

    @staticmethod
    def _check_rates(rate) -> dict[int, float] | float:
        if isinstance(rate, Mapping):
            rates = {int(k): float(v) for k, v in rate.items()}
        else:
            rates = float(rate)
        for lv, r in (rates.items() if isinstance(rates, dict) else [("all", rates)]):
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"error_rate for level {lv} must be in [0, 1], got {r}")
        return rates

    @property
    def config(self) -> dict:
        """What decides the output (recorded by lib.rollouts to refuse mixing configurations)."""
        rate = self.error_rate if isinstance(self.error_rate, float) else {str(k): v for k, v in sorted(self.error_rate.items())}
        return {"kind": "embedded", "seed": self.seed, "verbosity": self.verbosity, "error_rate": rate,
                "repeat_rate": self.repeat_rate, "max_chars": self.max_chars}

    def rate_for(self, level: int) -> float:
        if isinstance(self.error_rate, float):
            return self.error_rate
        if level not in self.error_rate:
            raise ValueError(f"error_rate has no entry for level {level} (levels given: "
                             f"{sorted(self.error_rate)}); add it or pass a single float")
        return self.error_rate[level]

    # -- generation ---------------------------------------------------------------------------

    def generate(self, problems: Sequence, n: int, seed: int = 0) -> list[list[Rollout]]:
        _check_n(n)
        return [[self.rollout(p, k, seed) for k in range(n)] for p in map(as_problem, problems)]

    def rollout(self, p, index: int, seed: int = 0) -> Rollout:
        """Sample ``index`` for problem ``p``: depends on (teacher seed, seed, p.id, index) only."""
        p = as_problem(p)
        key = f"{self.seed}/{seed}/{p.id}/{index}"
        slip_rng, style_rng = random.Random(key + "/slip"), random.Random(key + "/style")
        slip, steps, answer = None, p.steps, p.answer
        if slip_rng.random() < self.rate_for(p.level):
            from lib.problems import random_slip

            found = random_slip(p, slip_rng)
            if found is not None:
                slip, steps, answer = found
        loop = style_rng.random() < self.repeat_rate
        text, style = _write_trace(p, steps, answer, slip, style_rng, _VERBOSITY[self.verbosity])
        finished = True
        if loop:
            text, finished = _make_loop(text, steps, style_rng, self.max_chars), False
        meta = {"slip": list(slip) if slip else None, "wrong_answer": answer if slip else None,
                "verbosity": self.verbosity, "loop": loop, "style": style}
        return Rollout(text=text, reasoning=None, finished=finished, n_tokens=None, meta=meta)

    def complete(self, prompt: str) -> str:
        """An offline stand-in for an LLM: answers the answer-equivalence judge prompt.

        Recognises :data:`lib.judges.JUDGE_PROMPT` (reference and student answers) and replies
        YES/NO with :class:`lib.judges.RuleJudge`; anything else gets a fixed "cannot answer"
        reply, which an LLM judge or tagger parses as "no verdict" and counts (never a guess).
        """
        m = re.search(r"Reference answer:\s*\n(.*?)\n\s*\nStudent's final answer:\s*\n(.*?)\n\s*\n", prompt, re.S)
        if m:
            verdict = RuleJudge().judge(None, m.group(1).strip(), m.group(2).strip())
            return {True: "YES", False: "NO", None: "UNSURE"}[verdict]
        return "I cannot answer this offline (embedded teacher)."


def as_problem(p):
    """A :class:`lib.problems.Problem` from a Problem, its ``to_dict()`` or a row with domain/level/spec."""
    from lib.problems import Problem, make_problem

    if isinstance(p, Problem):
        return p
    d = p if isinstance(p, Mapping) else getattr(p, "__dict__", {})
    if all(k in d for k in ("domain", "level", "spec")):
        if "steps" in d and "answer" in d and "id" in d:
            return Problem.from_dict(dict(d))
        spec = d["spec"] if isinstance(d["spec"], dict) else json.loads(d["spec"])
        return make_problem(d["domain"], int(d["level"]), spec)
    raise TypeError("EmbeddedTeacher writes traces from a problem's exact steps, so it needs "
                    "lib.problems.Problem objects (or their to_dict() rows with domain, level, spec); "
                    f"got {type(p).__name__}. For other problems use the 'local' or 'endpoint' teacher.")


def _pick(rng: random.Random, options: Sequence[str]) -> tuple[int, str]:
    i = rng.randrange(len(options))
    return i, options[i]


def _num(v) -> str:
    """A step operand as lib.problems writes it: ``12``, ``-3``, ``35/2``."""
    if isinstance(v, Fraction):
        return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"
    return str(v)


def _fmt_args(step) -> dict:
    a = tuple(step.args) + ("", "")
    return {"a": _num(a[0]), "b": _num(a[1])}


def _write_trace(p, steps, answer: str, slip, rng: random.Random, knobs: dict) -> tuple[str, dict]:
    """The full completion text and a JSON-able record of the choices made."""
    style: dict[str, Any] = {}
    lines: list[str] = []
    if rng.random() < knobs["restate"]:
        style["restate"], s = _pick(rng, _RESTATE)
        lines.append(s.format(problem=p.problem))
    elif knobs["restate"] == 0.0:
        style["opener"], s = _pick(rng, _OPENERS_COMPACT)
        if s:
            lines.append(s)
    if rng.random() < knobs["givens"]:
        nums = re.findall(r"-?\d+", p.problem)
        if len(nums) > 1:
            lines.append(_pick(rng, _GIVENS)[1].format(nums=", ".join(nums[:-1]) + " and " + nums[-1]))
    if rng.random() < knobs["plan"]:
        style["plan"], s = _pick(rng, _PLANS[_plan_key(p, steps)])
        lines.append(s)
        if rng.random() < knobs["givens"]:
            lines.append(_pick(rng, _N_STEPS)[1].format(n=len(steps)))
    slipped = slip[0] if slip else None
    n_checks = 0
    checked = []
    for i, step in enumerate(steps):
        if rng.random() < knobs["lead"]:
            _, lead = _pick(rng, _LEADS.get(step.op, _LEADS_ANY))
            lines.append(lead.format(**_fmt_args(step)))
        lines.append(step.text)
        if n_checks < knobs["max_checks"] and rng.random() < knobs["check"]:
            lines.append(_check_line(step, i == slipped, rng))
            checked.append(i)
            n_checks += 1
        if i < len(steps) - 1 and rng.random() < knobs["muse"] / max(1, len(steps)):
            lines.append(_pick(rng, _MUSINGS)[1])
    style["checked"] = checked
    ans_words = _final_words(p, answer)
    style["second_pass"] = rng.random() < knobs["second"]
    if style["second_pass"]:
        lines.append("")
        lines.append(_pick(rng, _SECOND_PASS)[1])
        lines.extend(s.text for s in steps)
        lines.append(f"Same result: {ans_words}.")
    style["recheck"] = rng.random() < knobs["recheck"]
    if style["recheck"]:
        lines.append(_pick(rng, _RECHECK)[1].format(line=steps[-1].text, ans=ans_words))
    if rng.random() < knobs["reflect"]:
        lines.append(_pick(rng, _REFLECT)[1].format(qty=_quantity(p), ans=ans_words))
    lines.append(_pick(rng, _WRAP)[1].format(ans=ans_words))
    style["conclusion"], conclusion = _pick(rng, _CONCLUDE)
    body = "\n".join(lines)
    tail = conclusion.format(qty=_quantity(p), box=answer)
    return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n{tail}", style


def _check_line(step, is_slipped: bool, rng: random.Random) -> str:
    """A self-check; on the slipped step only a restatement (the slip goes unnoticed)."""
    if not is_slipped and rng.random() < 0.5:
        inv = _inverse_check(step)
        if inv:
            return inv
    return _pick(rng, _CHECK_RESTATE)[1].format(line=step.text)


def _make_loop(text: str, steps, rng: random.Random, max_chars: int) -> str:
    """Cut the trace inside ``<think>`` and repeat one paragraph past ``max_chars`` (never closed)."""
    head = text.split(THINK_CLOSE, 1)[0]
    step = steps[rng.randrange(len(steps))]
    para = f"\n{_LOOP_INTRO}\n{step.text}\n" + _CHECK_RESTATE[0].format(line=step.text)
    out = head
    while len(out) < max_chars:
        out += para
    return out[:max_chars]

