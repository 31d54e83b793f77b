"""Seeded synthetic math problems with exact, local, step-by-step working.

This is the task family of the miniature (see ``LOG.md``, 2026-11-22): five
domains x four difficulty levels, each problem solved by a short chain of
*local* steps (the operands of a step are on the line above or in the
question, numbers stay small) whose composition a tiny model cannot do in one
pass, so chain of thought has something to win.

Every problem is defined by a *spec* (plain JSON) and re-solved from it by
:func:`solve`; ``solve(domain, spec, slip=(i, delta))`` adds ``delta`` to the
result of step ``i`` and carries the wrong value through every later step, so
a teacher can write a plausible, internally consistent, wrong trace.

Step text uses ASCII only: ``+ - * /``, ``mod``, ``=``, ``gcd(a, b)``; a
fraction inside a step is ``a/b``; a remainder is ``56 mod 5 = 1``.
Answers are LaTeX that math-verify parses: ``32``, ``-4``, ``\\frac{3}{28}``
(reduced, sign in the numerator), ``(4, 3)``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable

DOMAINS = ("arithmetic", "algebra", "number_theory", "counting_probability", "geometry")
LEVELS = (1, 2, 3, 4)
DIFFICULTY_NAMES = {1: "elementary", 2: "middle school", 3: "high school", 4: "college", 5: "graduate"}
SPLITS = ("train", "test")
TEST_BUCKETS = 10  # a problem is in "test" iff sha1(split_key(text)) % TEST_BUCKETS == 0 (10% of the space)

_ID_PREFIX = {"arithmetic": "arith", "algebra": "alg", "number_theory": "nt",
              "counting_probability": "count", "geometry": "geom"}


class SlipError(ValueError):
    """The requested slip makes the procedure undefined (e.g. a division by zero)."""


# ----------------------------------------------------------------------------- values and steps

Value = int | Fraction


def _norm(v):
    """Fractions with denominator 1 become ints, so ``12`` never prints as ``12/1``."""
    if isinstance(v, Fraction) and v.denominator == 1:
        return int(v)
    return v


def _plain(v) -> str:
    """A value as it appears inside a step: ``12``, ``-3``, ``35/2``."""
    v = _norm(v)
    if isinstance(v, Fraction):
        return f"{v.numerator}/{v.denominator}"
    return str(v)


def _operand(v) -> str:
    """A right-hand operand: negatives in parentheses (``5 - (-3)``) so signs never touch."""
    s = _plain(v)
    return f"({s})" if s.startswith("-") else s


def latex(v) -> str:
    """An answer value in LaTeX: ``12``, ``\\frac{-3}{4}`` (reduced, sign on top), ``(4, 3)``."""
    if isinstance(v, tuple):
        return "(" + ", ".join(latex(x) for x in v) + ")"
    v = _norm(v)
    if isinstance(v, Fraction):
        return f"\\frac{{{v.numerator}}}{{{v.denominator}}}"
    return str(int(v))


@dataclass(frozen=True)
class Step:
    """One line of working: an operation on operands and its (possibly slipped) result.

    ``op`` is one of ``+ - * /`` (binary arithmetic, ``/`` may give a fraction),
    ``mod`` (remainder), ``gcd``. ``value`` is what the trace *says*; :meth:`expected` is
    what the operands really give, so ``is_correct`` spots an injected slip.
    """

    op: str
    args: tuple
    value: Value

    def expected(self) -> Value:
        a = self.args
        if self.op == "+":
            return _norm(a[0] + a[1])
        if self.op == "-":
            return _norm(a[0] - a[1])
        if self.op == "*":
            return _norm(a[0] * a[1])
        if self.op == "/":
            return _norm(Fraction(a[0]) / Fraction(a[1]))
        if self.op == "mod":
            return a[0] % a[1]
        if self.op == "gcd":
            return math.gcd(a[0], a[1])
        raise ValueError(f"unknown step op {self.op!r}")

    @property
    def is_correct(self) -> bool:
        return self.expected() == self.value

    @property
    def text(self) -> str:
        a, v = self.args, self.value
        if self.op in "+-*/":
            return f"{_plain(a[0])} {self.op} {_operand(a[1])} = {_plain(v)}"
        if self.op == "mod":
            return f"{a[0]} mod {a[1]} = {v}"
        if self.op == "gcd":
            return f"gcd({a[0]}, {a[1]}) = {v}"
        raise ValueError(f"unknown step op {self.op!r}")

    def __str__(self) -> str:
        return self.text


_NUM = r"-?\d+(?:/\d+)?"
_STATEMENT = re.compile(  # a step line as Step.text writes it: "a op b = v", "a mod m = r", "gcd(a, b) = g"
    rf"(?<![\d/.])(?:(?P<a>{_NUM})\s*(?P<op>[-+*/])\s*(?P<b>{_NUM}|\({_NUM}\))"
    rf"|(?P<ma>-?\d+)\s+mod\s+(?P<mm>\d+)|gcd\((?P<ga>-?\d+),\s*(?P<gb>-?\d+)\))"
    rf"\s*=\s*(?P<v>{_NUM})(?![\d/])")


def arithmetic_slips(text: str) -> tuple[int, int]:
    """``(statements, false ones)`` over the arithmetic statements written in ``text``.

    Reads every ``a op b = v`` (``+ - * /``, fractions ``a/b``, a negative right operand in
    parentheses), ``a mod m = r`` and ``gcd(a, b) = g`` the way :class:`Step` writes them and
    checks each as a :class:`Step` (a division or remainder by zero is false). A model's
    completion can reach the right final answer through false steps ("7 * 9 = 810", then
    "81 mod 10 = 3"): with answers as small as this domain's, a verified answer is often a
    lucky guess (LOG.md, 2026-11-29), which this measures.
    """
    n = bad = 0
    for m in _STATEMENT.finditer(text):
        value = _norm(Fraction(m["v"]))
        if m["op"]:
            args = (_norm(Fraction(m["a"])), _norm(Fraction(m["b"].strip("()"))))
            step = Step(m["op"], args, value)
        elif m["mm"] is not None:
            step = Step("mod", (int(m["ma"]), int(m["mm"])), value)
        else:
            step = Step("gcd", (int(m["ga"]), int(m["gb"])), value)
        n += 1
        try:
            bad += not step.is_correct
        except ZeroDivisionError:
            bad += 1
    return n, bad


class _Tape:
    """Records steps while a solver runs; applies the slip, if any, to one step's result."""

    def __init__(self, slip: tuple[int, int] | None):
        self.steps: list[Step] = []
        self.slip = slip

    def _emit(self, op: str, args: tuple, value):
        if self.slip is not None and self.slip[0] == len(self.steps):
            delta = self.slip[1]
            value = _norm(value + delta)
        self.steps.append(Step(op, tuple(_norm(x) for x in args), value))
        return value

    def add(self, a, b):
        return self._emit("+", (a, b), _norm(a + b))

    def sub(self, a, b):
        return self._emit("-", (a, b), _norm(a - b))

    def mul(self, a, b):
        return self._emit("*", (a, b), _norm(a * b))

    def div(self, a, b):
        if b == 0:
            raise SlipError("division by zero")
        return self._emit("/", (a, b), _norm(Fraction(a) / Fraction(b)))

    def mod(self, a, b):
        if not (isinstance(a, int) and isinstance(b, int)) or b <= 0:
            raise SlipError(f"remainder undefined for {a} mod {b}")
        return self._emit("mod", (a, b), a % b)

    def gcd(self, a, b):
        if not (isinstance(a, int) and isinstance(b, int)):
            raise SlipError(f"gcd undefined for {a}, {b}")
        return self._emit("gcd", (a, b), math.gcd(a, b))


def _signed_shift(t: _Tape, c, b):
    """``c - b`` written the way a person moves ``+ b`` / ``- |b|`` across the equals sign."""
    return t.add(c, -b) if b < 0 else t.sub(c, b)


# ----------------------------------------------------------------------------- text helpers

def _term(coef: int, var: str, first: bool) -> str:
    """``3x``, ``x``, ``-x``, ``+ 2y``, ``- y`` (coefficient 1 dropped)."""
    mag = "" if abs(coef) == 1 else str(abs(coef))
    if first:
        return f"{'-' if coef < 0 else ''}{mag}{var}"
    return f"{'-' if coef < 0 else '+'} {mag}{var}"


def _a(n: int) -> str:
    """The article before a number read aloud: ``an 8``, ``an 11``, ``a 7``."""
    return "an" if str(n).startswith("8") or n in (11, 18) else "a"


def _const(c: int) -> str:
    """`` + 5`` / `` - 5`` after a term; nothing for 0."""
    if c == 0:
        return ""
    return f" {'-' if c < 0 else '+'} {abs(c)}"


# ----------------------------------------------------------------------------- domains
# Each domain: sample(rng, level) -> spec (plain JSON dict); text(spec) -> question;
# solve(spec, tape) -> answer value. Every line is one small operation whose
# operands sit in the line above or in the question: sums and differences
# mostly under 50 (two-digit carries are what a 4-layer model gets wrong most),
# products inside the times tables (a factor <= 12, the other <= 9), exact
# divisions, remainders by a modulus <= 13, gcds of numbers <= 132. Operands
# are found by position in a fixed template (content-dependent lookups were not
# learned). Difficulty = number of lines and size of numbers. LOG.md has the
# measurements behind each range (2026-11-22).

# --- arithmetic: a chain of operations, each line restates the current value.
_ARITH = {  # n_ops, ops allowed, max operand for + and -, max factor/divisor, max start, max running value
    1: dict(n_ops=2, ops="+-", add_max=9, mul_max=0, start_max=12, value_max=20),
    2: dict(n_ops=3, ops="+-*", add_max=9, mul_max=5, start_max=9, value_max=30),
    3: dict(n_ops=4, ops="+-*/", add_max=9, mul_max=6, start_max=12, value_max=40),
    4: dict(n_ops=5, ops="+-*/", add_max=12, mul_max=9, start_max=15, value_max=50),
}
_ARITH_WORDS = {"+": "add {}", "-": "subtract {}", "*": "multiply by {}", "/": "divide by {}"}


def _arith_sample(rng: random.Random, level: int) -> dict:
    k = _ARITH[level]
    cur = start = rng.randint(1, k["start_max"])
    ops: list = []
    while len(ops) < k["n_ops"]:
        op = rng.choice(k["ops"])
        if op in "+-":
            n = rng.randint(1, k["add_max"])
            new = cur + n if op == "+" else cur - n
        elif op == "*":
            if cur > 12:  # keep products inside the times tables
                continue
            n = rng.randint(2, k["mul_max"])
            new = cur * n
        else:
            divisors = [d for d in range(2, k["mul_max"] + 1) if cur % d == 0 and cur // d <= 12]
            if not divisors:
                continue
            n = rng.choice(divisors)
            new = cur // n
        if 0 <= new <= k["value_max"]:
            ops.append([op, n])
            cur = new
    return {"start": start, "ops": ops}


def _arith_text(s: dict) -> str:
    words = [_ARITH_WORDS[op].format(n) for op, n in s["ops"]]
    words[0] = words[0].capitalize()
    return f"Start with {s['start']}. " + ", ".join(words[:-1]) + f", then {words[-1]}. What is the result?"


def _arith_solve(s: dict, t: _Tape):
    cur = s["start"]
    for op, n in s["ops"]:
        cur = {"+": t.add, "-": t.sub, "*": t.mul, "/": t.div}[op](cur, n)
    return cur


# --- algebra: a*x + b = c; unknown on both sides; 2x2 systems (tuple answers).
def _alg_sample(rng: random.Random, level: int) -> dict:
    while True:
        if level == 1:  # a x +- b = c
            s = {"form": "linear", "a": rng.randint(2, 9), "x": rng.randint(1, 9),
                 "b": rng.choice([-1, 1]) * rng.randint(1, 12)}
            ok = 1 <= s["a"] * s["x"] + s["b"] <= 36
        elif level == 2:  # a x + b = c x + d, a > c
            c = rng.randint(1, 6)
            s = {"form": "both_sides", "a": c + rng.randint(1, 5), "c": c, "x": rng.randint(1, 9),
                 "b": rng.randint(0, 9)}
            ok = (s["a"] - c) * s["x"] + s["b"] <= 36
        elif level == 3:  # y = a x + b ; c x + y = d
            s = {"form": "substitute", "a": rng.randint(1, 5), "b": rng.randint(1, 9), "c": rng.randint(1, 5),
                 "x": rng.randint(1, 9)}
            ok = (s["c"] + s["a"]) * s["x"] + s["b"] <= 50
        else:  # a x + y = c ; b x - y = d  (add the equations: y drops out). Always in this order:
            # with a random order the model could not find its coefficients (LOG.md, runs 5-7).
            s = {"form": "system", "a": rng.randint(1, 5), "b": rng.randint(1, 5), "x": rng.randint(1, 7),
                 "y": rng.randint(1, 12)}
            c, d = s["a"] * s["x"] + s["y"], s["b"] * s["x"] - s["y"]
            ok = d >= 1 and c + d <= 45
        if ok:
            return s


def _alg_text(s: dict) -> str:
    f = s["form"]
    if f == "linear":
        c = s["a"] * s["x"] + s["b"]
        return f"Solve for x: {_term(s['a'], 'x', True)}{_const(s['b'])} = {c}."
    if f == "both_sides":
        d = (s["a"] - s["c"]) * s["x"] + s["b"]
        return f"Solve for x: {_term(s['a'], 'x', True)}{_const(s['b'])} = {_term(s['c'], 'x', True)}{_const(d)}."
    if f == "substitute":
        d = (s["c"] + s["a"]) * s["x"] + s["b"]
        return (f"Solve for x and y: y = {_term(s['a'], 'x', True)}{_const(s['b'])} "
                f"and {_term(s['c'], 'x', True)} + y = {d}.")
    c, d = s["a"] * s["x"] + s["y"], s["b"] * s["x"] - s["y"]
    return f"Solve for x and y: {_term(s['a'], 'x', True)} + y = {c} and {_term(s['b'], 'x', True)} - y = {d}."


def _alg_solve(s: dict, t: _Tape):
    f = s["form"]
    if f == "linear":  # a x = c - b ; x = (c - b) / a
        c = s["a"] * s["x"] + s["b"]
        return t.div(_signed_shift(t, c, s["b"]), s["a"])
    if f == "both_sides":  # (a - c) x = d - b
        d = (s["a"] - s["c"]) * s["x"] + s["b"]
        k = t.sub(s["a"], s["c"])
        return t.div(t.sub(d, s["b"]), k)
    if f == "substitute":  # c x + a x + b = d  ->  (c + a) x = d - b ; y = a x + b
        d = (s["c"] + s["a"]) * s["x"] + s["b"]
        k = t.add(s["c"], s["a"])
        x = t.div(t.sub(d, s["b"]), k)
        y = t.add(t.mul(s["a"], x), s["b"])
        return (x, y)
    # system: adding the equations gives (a + b) x = c + d ; then y = c - a x
    c, d = s["a"] * s["x"] + s["y"], s["b"] * s["x"] - s["y"]
    k = t.add(s["a"], s["b"])
    x = t.div(t.add(c, d), k)
    return (x, t.sub(c, t.mul(s["a"], x)))


# --- number theory: remainder of a product, reducing after every multiplication.
_NT = {  # number of factors (each 2..9; 2..12 at level 1, to keep that cell large), moduli
    1: dict(n_factors=2, moduli=range(3, 14)),
    2: dict(n_factors=3, moduli=range(3, 14)),
    3: dict(n_factors=4, moduli=range(5, 14)),
    4: dict(n_factors=5, moduli=range(7, 14)),
}


def _nt_sample(rng: random.Random, level: int) -> dict:
    k = _NT[level]
    while True:
        m = rng.choice(list(k["moduli"]))
        factors = [rng.randint(2, 12 if level == 1 else 9) for _ in range(k["n_factors"])]
        # no running remainder of 0 (it would stay 0): the answer is never 0, so guessing 0 does not pay
        if all(math.prod(factors[:i]) % m for i in range(2, len(factors) + 1)):
            return {"factors": factors, "m": m}


def _nt_text(s: dict) -> str:
    return f"What is the remainder when {' * '.join(map(str, s['factors']))} is divided by {s['m']}?"


def _nt_solve(s: dict, t: _Tape):
    f, m = s["factors"], s["m"]
    r = t.mod(t.mul(f[0], f[1]), m)
    for x in f[2:]:
        r = t.mod(t.mul(r, x), m)
    return r


# --- counting and probability: product rule, choose(n, 2), drawing balls; fractions reduced by gcd.
_COLORS = ("red", "blue", "green", "white", "black")
_CLUBS = {  # inclusion-exclusion: group, first activity, second activity
    "sport": ("students", "play chess", "play soccer"),
    "drink": ("guests", "drink tea", "drink coffee"),
    "pets": ("families", "have a dog", "have a cat"),
}
_CHOICE_SETS = {  # product rule: three groups of options, one taken from each
    "outfit": "A closet has {} shirts, {} pants and {} hats. How many outfits of one of each are there?",
    "meal": "A menu has {} starters, {} mains and {} desserts. How many meals of one of each are there?",
    "pizza": "A pizza has one of {} crusts, {} sauces and {} toppings. How many pizzas are possible?",
    "trip": "A trip uses one of {} buses, {} trains and {} boats. How many trips are possible?",
}


def _reduce(t: _Tape, num, den):
    """``num/den`` in lowest terms: a gcd line, then both divided by it (skipped when it is 1)."""
    g = t.gcd(num, den)
    if g == 0 or den == 0:
        raise SlipError("zero denominator")
    if g == 1:
        return Fraction(num, den)
    top, bottom = t.div(num, g), t.div(den, g)
    if bottom == 0:  # a slip on the division line itself
        raise SlipError("zero denominator after reduction")
    return _norm(Fraction(top) / Fraction(bottom))


def _count_sample(rng: random.Random, level: int) -> dict:
    if level == 1:
        if rng.random() < 0.05:
            return {"form": "choose2", "n": rng.randint(3, 12)}
        return {"form": "product", "kind": rng.choice(sorted(_CHOICE_SETS)),
                "counts": [rng.randint(2, 7) for _ in range(3)]}
    if level == 2:  # one ball from three colours
        return {"form": "one", "counts": [rng.randint(1, 8) for _ in range(3)], "ask": rng.randrange(3)}
    if level == 3:  # inclusion-exclusion
        while True:
            a, b = rng.randint(3, 12), rng.randint(3, 12)
            both = rng.randint(1, min(a, b) - 1)
            total = rng.randint(a + b - both + 1, 30) if a + b - both < 30 else 0
            if total:
                return {"form": "neither", "kind": rng.choice(sorted(_CLUBS)), "n": total, "a": a, "b": b,
                        "both": both}
    while True:  # two balls without replacement, both of the asked colour
        colors = rng.sample(_COLORS, 3)
        counts = [rng.randint(1, 6) for _ in range(3)]
        ask = rng.randrange(3)
        if sum(counts) <= 12 and counts[ask] >= 2:  # n (n - 1) stays inside the times tables
            return {"form": "both", "colors": colors, "counts": counts, "ask": ask}


def _count_text(s: dict) -> str:
    f = s["form"]
    if f == "choose2":
        return f"In how many ways can 2 people be chosen from a group of {s['n']}?"
    if f == "product":
        return _CHOICE_SETS[s["kind"]].format(*s["counts"])
    if f == "one":
        r, b, g = s["counts"]
        return (f"A bag has {r} red, {b} blue and {g} green balls. One ball is drawn at random. "
                f"What is the probability that it is {_COLORS[s['ask']]}?")
    if f == "neither":
        group, x, y = _CLUBS[s["kind"]]
        return (f"Of {s['n']} {group}, {s['a']} {x}, {s['b']} {y} and {s['both']} do both. "
                f"How many do neither?")
    (c1, c2, c3), (n1, n2, n3) = s["colors"], s["counts"]
    return (f"A bag has {n1} {c1}, {n2} {c2} and {n3} {c3} balls. Two are drawn without replacement. "
            f"What is the probability that both are {s['colors'][s['ask']]}?")


def _count_solve(s: dict, t: _Tape):
    f = s["form"]
    if f == "choose2":
        return t.div(t.mul(s["n"], s["n"] - 1), 2)
    if f == "product":
        a, b, c = s["counts"]
        return t.mul(t.mul(a, b), c)
    if f == "one":
        r, b, g = s["counts"]
        n = t.add(t.add(r, b), g)
        return _reduce(t, s["counts"][s["ask"]], n)
    if f == "neither":
        return t.sub(s["n"], t.sub(t.add(s["a"], s["b"]), s["both"]))
    n1, n2, n3 = s["counts"]
    n = t.add(t.add(n1, n2), n3)
    k = s["counts"][s["ask"]]
    num = t.mul(k, k - 1)  # ordered draws: k choices, then k - 1
    return _reduce(t, num, t.mul(n, n - 1))


# --- geometry: perimeters, areas (half-integers as fractions), composite shapes.
def _geom_sample(rng: random.Random, level: int) -> dict:
    if level == 1:
        if rng.random() < 0.3:
            return {"form": "rect_perimeter", "w": rng.randint(2, 12), "h": rng.randint(2, 12)}
        while True:
            a, b, c = (rng.randint(2, 12) for _ in range(3))
            if a + b > c and a + c > b and b + c > a and a + b + c <= 30:
                return {"form": "tri_perimeter", "sides": [a, b, c]}
    if level == 2:
        u = rng.random()
        if u < 0.3:
            return {"form": "tri_area", "a": rng.randint(2, 12), "b": rng.randint(2, 9), "swap": rng.random() < 0.5}
        if u < 0.5:
            w, h = rng.randint(3, 12), rng.randint(3, 9)
            return {"form": "cut_square", "w": w, "h": h, "s": rng.randint(2, min(w, h) - 1)}
        return {"form": "square_rect", "s": rng.randint(2, 9), "w": rng.randint(2, 12), "h": rng.randint(2, 9)}
    if level == 3:
        if rng.random() < 0.5:
            while True:
                w, h, th = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
                if w * th % 2 == 0:
                    return {"form": "house_area", "w": w, "h": h, "t": th}
        return {"form": "trapezoid", "a": rng.randint(2, 9), "b": rng.randint(2, 9), "h": rng.randint(2, 9)}
    while True:  # level 4: rectangle + square + right triangle
        s = {"form": "garden", "w": rng.randint(2, 6), "h": rng.randint(2, 6), "s": rng.randint(2, 6),
             "a": rng.randint(2, 6), "b": rng.randint(2, 6)}
        if s["a"] * s["b"] % 2 == 0 and s["w"] * s["h"] + s["s"] ** 2 + s["a"] * s["b"] // 2 <= 45:
            return s


def _geom_text(s: dict) -> str:
    f = s["form"]
    if f == "rect_perimeter":
        return f"A rectangle is {s['w']} long and {s['h']} wide. What is its perimeter?"
    if f == "tri_perimeter":
        a, b, c = s["sides"]
        return f"A triangle has sides {a}, {b} and {c}. What is its perimeter?"
    if f == "tri_area":
        a, b = (s["b"], s["a"]) if s["swap"] else (s["a"], s["b"])
        return f"A right triangle has legs {a} and {b}. What is its area?"
    if f == "cut_square":
        return f"A square of side {s['s']} is cut from {_a(s['w'])} {s['w']} by {s['h']} rectangle. What area is left?"
    if f == "square_rect":
        return (f"A square of side {s['s']} and {_a(s['w'])} {s['w']} by {s['h']} rectangle are put side by side. "
                f"What is their total area?")
    if f == "house_area":
        return (f"A shape is {_a(s['w'])} {s['w']} by {s['h']} rectangle with a triangle of base {s['w']} "
                f"and height {s['t']} on top. What is its area?")
    if f == "trapezoid":
        return f"A trapezoid has parallel sides {s['a']} and {s['b']} and height {s['h']}. What is its area?"
    return (f"A garden is {_a(s['w'])} {s['w']} by {s['h']} rectangle, a square of side {s['s']} and a right triangle "
            f"with legs {s['a']} and {s['b']}. What is its total area?")


def _geom_solve(s: dict, t: _Tape):
    f = s["form"]
    if f == "rect_perimeter":
        return t.mul(2, t.add(s["w"], s["h"]))
    if f == "tri_perimeter":
        a, b, c = s["sides"]
        return t.add(t.add(a, b), c)
    if f == "tri_area":
        a, b = (s["b"], s["a"]) if s["swap"] else (s["a"], s["b"])
        return t.div(t.mul(a, b), 2)
    if f == "cut_square":
        return t.sub(t.mul(s["w"], s["h"]), t.mul(s["s"], s["s"]))
    if f == "square_rect":
        return t.add(t.mul(s["s"], s["s"]), t.mul(s["w"], s["h"]))
    if f == "house_area":
        rect = t.mul(s["w"], s["h"])
        tri = t.div(t.mul(s["w"], s["t"]), 2)
        return t.add(rect, tri)
    if f == "trapezoid":
        return t.div(t.mul(t.add(s["a"], s["b"]), s["h"]), 2)
    rect, square = t.mul(s["w"], s["h"]), t.mul(s["s"], s["s"])
    tri = t.div(t.mul(s["a"], s["b"]), 2)
    return t.add(t.add(rect, square), tri)


@dataclass(frozen=True)
class _Domain:
    sample: Callable[[random.Random, int], dict]
    text: Callable[[dict], str]
    solve: Callable[[dict, _Tape], Value]


_DOMAIN_IMPL = {
    "arithmetic": _Domain(_arith_sample, _arith_text, _arith_solve),
    "algebra": _Domain(_alg_sample, _alg_text, _alg_solve),
    "number_theory": _Domain(_nt_sample, _nt_text, _nt_solve),
    "counting_probability": _Domain(_count_sample, _count_text, _count_solve),
    "geometry": _Domain(_geom_sample, _geom_text, _geom_solve),
}


# ----------------------------------------------------------------------------- problems

@dataclass(frozen=True)
class Problem:
    """One problem: question text, reference answer (LaTeX) and exact working.

    ``spec`` is the canonical JSON of the parameters the problem was drawn from;
    :meth:`resolve` re-derives the steps from it, optionally with a slip.
    """

    id: str
    domain: str
    level: int
    difficulty: str
    problem: str
    answer: str
    steps: tuple[Step, ...]
    spec: str = "{}"

    @property
    def step_texts(self) -> tuple[str, ...]:
        return tuple(s.text for s in self.steps)

    def resolve(self, slip: tuple[int, int] | None = None) -> tuple[tuple[Step, ...], str]:
        """Steps and answer re-derived from the spec; ``slip=(i, delta)`` corrupts step ``i``."""
        return solve(self.domain, json.loads(self.spec), slip)

    def to_dict(self) -> dict:
        """Plain types only (JSON / Parquet): steps are stored as their text, the spec as JSON."""
        return {"id": self.id, "domain": self.domain, "level": self.level, "difficulty": self.difficulty,
                "problem": self.problem, "answer": self.answer, "steps": list(self.step_texts),
                "spec": self.spec}

    @classmethod
    def from_dict(cls, d: dict) -> "Problem":
        """Rebuild from :meth:`to_dict`; the structured steps are re-derived from the spec and checked."""
        steps, answer = solve(d["domain"], json.loads(d["spec"]))
        if [s.text for s in steps] != list(d["steps"]) or answer != d["answer"]:
            raise ValueError(f"problem {d['id']}: stored steps/answer do not match its spec")
        return cls(id=d["id"], domain=d["domain"], level=int(d["level"]), difficulty=d["difficulty"],
                   problem=d["problem"], answer=d["answer"], steps=steps, spec=d["spec"])


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; allowed: {', '.join(DOMAINS)}")


def _check_level(level: int) -> None:
    if level not in LEVELS:
        raise ValueError(f"level {level!r} out of range; allowed: {', '.join(map(str, LEVELS))}")


def solve(domain: str, spec: dict, slip: tuple[int, int] | None = None) -> tuple[tuple[Step, ...], str]:
    """Solve a problem spec step by step; returns ``(steps, answer_latex)``.

    ``slip=(i, delta)`` adds ``delta`` to the result of step ``i`` and carries the wrong value forward: every other
    step is computed correctly from what the trace says, so the trace is
    internally consistent and (usually) ends in a wrong answer. Raises
    :class:`SlipError` when the slip makes the procedure undefined and
    ``ValueError`` when ``i`` is past the last step.
    """
    _check_domain(domain)
    tape = _Tape(slip)
    value = _DOMAIN_IMPL[domain].solve(spec, tape)
    if slip is not None and not 0 <= slip[0] < len(tape.steps):
        raise ValueError(f"slip step {slip[0]} out of range 0..{len(tape.steps) - 1}")
    return tuple(tape.steps), latex(value)


def random_slip(p: Problem, rng: random.Random, deltas: Iterable[int] = (-10, -2, -1, 1, 2, 10),
                tries: int = 50) -> tuple[tuple[int, int], tuple[Step, ...], str] | None:
    """A random slip that yields a well-defined trace with a wrong final answer, or None."""
    deltas = tuple(deltas)
    for _ in range(tries):
        slip = (rng.randrange(len(p.steps)), rng.choice(deltas))
        try:
            steps, answer = p.resolve(slip)
        except SlipError:
            continue
        if answer != p.answer:
            return slip, steps, answer
    return None


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def split_key(problem_text: str) -> str:
    """What decides a problem's split: its numbers and its words, each as a sorted multiset.

    Hashing the text itself let "the remainder when 2 * 9 is divided by 12" sit in train and
    "... 9 * 2 ..." in test (224 of 8,000 train problems had such a reordered twin in a 500-problem
    test set). With an order-free key every reordering of a problem lands in the same split.
    """
    numbers = sorted(re.findall(r"\d+", problem_text))
    words = sorted(re.sub(r"\d+", "#", problem_text).split())
    return " ".join(numbers) + " | " + " ".join(words)


def split_of(problem_text: str) -> str:
    """``"test"`` for hash bucket 0 of :data:`TEST_BUCKETS`, else ``"train"``; stable across runs."""
    return "test" if int(_sha1(split_key(problem_text))[:8], 16) % TEST_BUCKETS == 0 else "train"


def make_problem(domain: str, level: int, spec: dict) -> Problem:
    """Build a :class:`Problem` from a spec (text, steps, answer and id all derived)."""
    _check_domain(domain)
    _check_level(level)
    impl = _DOMAIN_IMPL[domain]
    text = impl.text(spec)
    steps, answer = solve(domain, spec)
    return Problem(id=f"{_ID_PREFIX[domain]}-L{level}-{_sha1(text)[:8]}", domain=domain, level=level,
                   difficulty=DIFFICULTY_NAMES[level], problem=text, answer=answer, steps=steps,
                   spec=json.dumps(spec, sort_keys=True, separators=(",", ":")))


def generate(n: int, seed: int, domains: Iterable[str] | None = None, levels: Iterable[int] | None = None,
             split: str = "train") -> list[Problem]:
    """``n`` distinct problems of one split, balanced over domains x levels, deterministic in ``seed``.

    Cells (domain, level) get ``n // cells`` problems each, the first ``n % cells``
    cells one more. Problems of the other split are rejected, so train and test
    never share a problem text whatever the seeds and sizes. The list is
    shuffled with the same seed. Raises ``ValueError`` if a cell's problem
    space is exhausted.
    """
    domains = tuple(DOMAINS if domains is None else domains)
    levels = tuple(LEVELS if levels is None else levels)
    for d in domains:
        _check_domain(d)
    for lv in levels:
        _check_level(lv)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    cells = [(d, lv) for d in domains for lv in levels]
    out: list[Problem] = []
    seen: set[str] = set()
    for i, (d, lv) in enumerate(cells):
        want = n // len(cells) + (1 if i < n % len(cells) else 0)
        # str seeds go through sha512 in random.seed: identical in every process
        rng = random.Random(f"{seed}/{d}/{lv}/{split}")
        got, misses = 0, 0
        while got < want:
            p = make_problem(d, lv, _DOMAIN_IMPL[d].sample(rng, lv))
            if p.problem in seen or split_of(p.problem) != split:
                misses += 1
                if misses > 200 * want + 10_000:
                    raise ValueError(f"cell {d} L{lv} ({split}): could not find {want} distinct problems")
                continue
            seen.add(p.problem)
            out.append(p)
            got += 1
    random.Random(f"{seed}/shuffle/{split}").shuffle(out)
    return out


# ----------------------------------------------------------------------------- training text

def direct_solution(p: Problem) -> str:
    """The answer alone: ``\\boxed{32}``."""
    return f"\\boxed{{{p.answer}}}"


def cot_solution(p: Problem, slip: tuple[int, int] | None = None) -> str:
    """Compact chain of thought: the step lines inside ``<think>``, then the boxed answer.

    ``<think>\\n7 + 5 = 12\\n12 * 3 = 36\\n36 - 4 = 32\\n</think>\\n\\boxed{32}``. With ``slip``
    the trace is re-derived with that slip (see :func:`solve`): consistent, and wrong.
    """
    steps, answer = (p.steps, p.answer) if slip is None else p.resolve(slip)
    return "<think>\n" + "\n".join(st.text for st in steps) + f"\n</think>\n\\boxed{{{answer}}}"
