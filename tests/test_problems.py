"""Tests for lib.problems: determinism, splits, exact answers, correct local steps, slips, storage.

Answers are checked against oracles that read the *question text* (not the spec)
and brute-force it, so the text, the steps and the answer must all agree.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import random
import re
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from math_verify import parse, verify

from lib.problems import (DIFFICULTY_NAMES, DOMAINS, LEVELS, Problem, SlipError, Step, arithmetic_slips,
                          cot_solution, direct_solution, generate, latex, make_problem, random_slip, solve,
                          split_of)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample() -> list[Problem]:
    return generate(600, seed=7)  # 30 per domain x level cell


# ----------------------------------------------------------------------------- worked examples

@pytest.mark.parametrize("domain,level,spec,steps,answer", [
    ("arithmetic", 2, {"start": 7, "ops": [["+", 5], ["*", 3], ["-", 4]]},
     ["7 + 5 = 12", "12 * 3 = 36", "36 - 4 = 32"], "32"),
    ("algebra", 1, {"form": "linear", "a": 3, "x": 5, "b": -4}, ["11 + 4 = 15", "15 / 3 = 5"], "5"),
    ("algebra", 2, {"form": "both_sides", "a": 7, "c": 4, "x": -2, "b": 3},
     ["7 - 4 = 3", "-3 - 3 = -6", "-6 / 3 = -2"], "-2"),
    ("algebra", 3, {"form": "substitute", "a": 2, "b": 6, "c": 1, "x": 1},
     ["1 + 2 = 3", "9 - 6 = 3", "3 / 3 = 1", "2 * 1 = 2", "2 + 6 = 8"], "(1, 8)"),
    ("algebra", 4, {"form": "system", "a": 4, "b": 1, "x": 4, "y": 3},  # 4x + y = 19 and x - y = 1
     ["4 + 1 = 5", "19 + 1 = 20", "20 / 5 = 4", "4 * 4 = 16", "19 - 16 = 3"], "(4, 3)"),
    ("number_theory", 2, {"factors": [9, 7, 9], "m": 6},
     ["9 * 7 = 63", "63 mod 6 = 3", "3 * 9 = 27", "27 mod 6 = 3"], "3"),
    ("counting_probability", 3, {"form": "neither", "kind": "sport", "n": 30, "a": 12, "b": 15, "both": 5},
     ["12 + 15 = 27", "27 - 5 = 22", "30 - 22 = 8"], "8"),
    ("counting_probability", 4, {"form": "both", "colors": ["red", "blue", "green"], "counts": [3, 4, 1], "ask": 0},
     ["3 + 4 = 7", "7 + 1 = 8", "3 * 2 = 6", "8 * 7 = 56", "gcd(6, 56) = 2", "6 / 2 = 3", "56 / 2 = 28"],
     "\\frac{3}{28}"),
    ("counting_probability", 2, {"form": "one", "counts": [8, 1, 4], "ask": 2},
     ["8 + 1 = 9", "9 + 4 = 13", "gcd(4, 13) = 1"], "\\frac{4}{13}"),
    ("geometry", 2, {"form": "tri_area", "a": 7, "b": 5, "swap": False}, ["7 * 5 = 35", "35 / 2 = 35/2"],
     "\\frac{35}{2}"),
    ("geometry", 4, {"form": "garden", "w": 8, "h": 2, "s": 4, "a": 8, "b": 7},
     ["8 * 2 = 16", "4 * 4 = 16", "8 * 7 = 56", "56 / 2 = 28", "16 + 16 = 32", "32 + 28 = 60"], "60"),
])
def test_worked_examples(domain, level, spec, steps, answer):
    p = make_problem(domain, level, spec)
    assert list(p.step_texts) == steps
    assert p.answer == answer
    assert p.difficulty == DIFFICULTY_NAMES[level]
    assert direct_solution(p) == f"\\boxed{{{answer}}}"
    assert cot_solution(p) == "<think>\n" + "\n".join(steps) + f"\n</think>\n\\boxed{{{answer}}}"


@pytest.mark.parametrize("value,text", [(12, "12"), (-4, "-4"), (Fraction(3, 28), "\\frac{3}{28}"),
                                        (Fraction(-3, 4), "\\frac{-3}{4}"), (Fraction(8, 2), "4"),
                                        ((2, -1), "(2, -1)"), ((Fraction(1, 2), 3), "(\\frac{1}{2}, 3)")])
def test_latex(value, text):
    assert latex(value) == text


# ----------------------------------------------------------------------------- determinism and splits

def _digest(problems) -> str:
    return hashlib.sha256(json.dumps([p.to_dict() for p in problems]).encode()).hexdigest()


def test_same_seed_same_problems_different_seed_different():
    a, b, c = generate(200, seed=3), generate(200, seed=3), generate(200, seed=4)
    assert a == b
    assert _digest(a) == _digest(b)
    assert {p.problem for p in a} != {p.problem for p in c}


def test_deterministic_across_processes():
    """Python's salted hash() must play no part: a fresh interpreter gives the same list."""
    code = ("import hashlib, json; from lib.problems import generate; "
            "print(hashlib.sha256(json.dumps([p.to_dict() for p in generate(200, seed=3)]).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert out.stdout.strip() == _digest(generate(200, seed=3))


def test_splits_never_overlap():
    train = generate(4000, seed=1, split="train")
    test = generate(1000, seed=2, split="test")
    assert not {p.problem for p in train} & {p.problem for p in test}
    assert all(split_of(p.problem) == "train" for p in train)
    assert all(split_of(p.problem) == "test" for p in test)


def test_no_duplicates_and_stable_ids(sample):
    assert len({p.problem for p in sample}) == len(sample)
    assert len({p.id for p in sample}) == len(sample)
    prefix = {"arithmetic": "arith", "algebra": "alg", "number_theory": "nt", "counting_probability": "count",
              "geometry": "geom"}
    for p in sample:
        assert p.id == f"{prefix[p.domain]}-L{p.level}-{hashlib.sha1(p.problem.encode()).hexdigest()[:8]}"


def test_balanced_over_domains_and_levels():
    counts = Counter((p.domain, p.level) for p in generate(203, seed=0))
    assert set(counts) == {(d, lv) for d in DOMAINS for lv in LEVELS}
    assert set(counts.values()) == {10, 11} and sum(counts.values()) == 203
    sub = Counter((p.domain, p.level) for p in generate(40, seed=0, domains=["algebra", "geometry"], levels=[2, 3]))
    assert sub == {(d, lv): 10 for d in ("algebra", "geometry") for lv in (2, 3)}


@pytest.mark.parametrize("kwargs,match", [
    (dict(domains=["calculus"]), r"'calculus'.*arithmetic, algebra"),
    (dict(levels=[5]), r"level 5 .*1, 2, 3, 4"),
    (dict(levels=[0]), r"level 0 "),
    (dict(split="valid"), r"'valid'.*train, test"),
])
def test_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate(10, seed=0, **kwargs)


def test_make_problem_and_solve_validate():
    with pytest.raises(ValueError, match="'topology'"):
        solve("topology", {})
    with pytest.raises(ValueError, match="level 9"):
        make_problem("arithmetic", 9, {"start": 1, "ops": [["+", 1]]})


# ----------------------------------------------------------------------------- answers and steps

_NUM = r"-?\d+(?:/\d+)?"
_STEP_PATTERNS = [
    (re.compile(rf"^({_NUM}) ([-+*/]) \(?({_NUM})\)? = ({_NUM})$"), "binary"),
    (re.compile(r"^(-?\d+) mod (\d+) = (-?\d+)$"), "mod"),
    (re.compile(r"^gcd\((\d+), (\d+)\) = (\d+)$"), "gcd"),
]


def _check_step_text(text: str) -> bool:
    """Recompute one step from its text alone (independent of Step.expected)."""
    for pat, kind in _STEP_PATTERNS:
        m = pat.match(text)
        if not m:
            continue
        g = m.groups()
        if kind == "binary":
            a, op, b, c = Fraction(g[0]), g[1], Fraction(g[2]), Fraction(g[3])
            return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op] == c
        if kind == "mod":
            return int(g[0]) % int(g[1]) == int(g[2])
        return math.gcd(int(g[0]), int(g[1])) == int(g[2])
    raise AssertionError(f"step text in no known form: {text!r}")


def _ints(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"-?\d+", text)]


def _linear(side: str) -> tuple[Fraction, Fraction, Fraction]:
    """Coefficients (x, y, const) of a side like ``3x - y + 5``."""
    cx = cy = c = Fraction(0)
    for sign, num, var in re.findall(r"([+-]?)\s*(\d*)\s*([xy]?)", side.replace(" ", "")):
        if not num and not var:
            continue
        v = Fraction(int(num) if num else 1) * (-1 if sign == "-" else 1)
        if var == "x":
            cx += v
        elif var == "y":
            cy += v
        else:
            c += v
    return cx, cy, c


def _oracle(p: Problem):
    """The answer brute-forced from the question text alone."""
    t, n = p.problem, _ints(p.problem)
    if p.domain == "arithmetic":
        v = Fraction(n[0])
        for word, k in re.findall(r"(add|subtract|multiply by|divide by) (\d+)", t.lower()):
            v = {"add": v + int(k), "subtract": v - int(k), "multiply by": v * int(k), "divide by": v / int(k)}[word]
        return v
    if p.domain == "algebra":
        eqs = [e.split("=") for e in t.split(":")[1].rstrip(".").split(" and ")]
        rows = []
        for lhs, rhs in eqs:
            (ax, ay, ac), (bx, by, bc) = _linear(lhs), _linear(rhs)
            rows.append((ax - bx, ay - by, bc - ac))
        if len(rows) == 1:
            return rows[0][2] / rows[0][0]
        (a1, b1, c1), (a2, b2, c2) = rows
        det = a1 * b2 - a2 * b1
        return ((c1 * b2 - c2 * b1) / det, (a1 * c2 - a2 * c1) / det)
    if p.domain == "number_theory":
        return math.prod(n[:-1]) % n[-1]
    if p.domain == "counting_probability":
        if "do neither" in t:
            return n[0] - (n[1] + n[2] - n[3])
        if "chosen from" in t:
            return len(list(itertools.combinations(range(n[1]), 2)))
        if t.split(". ")[-1].startswith("How many"):  # product rule: one from each group
            return len(list(itertools.product(*(range(k) for k in n))))
        colors = re.findall(r"(\d+) (red|blue|green|white|black)", t)
        balls = [c for k, c in colors for _ in range(int(k))]
        asked = re.search(r"(it is|both are) (\w+)\?", t)
        if "One ball" in t:
            return Fraction(sum(b == asked.group(2) for b in balls), len(balls))
        pairs = list(itertools.permutations(range(len(balls)), 2))
        if asked:
            good = [q for q in pairs if balls[q[0]] == balls[q[1]] == asked.group(2)]
        elif "the same color" in t:
            good = [q for q in pairs if balls[q[0]] == balls[q[1]]]
        else:
            good = [q for q in pairs if balls[q[0]] != balls[q[1]]]
        return Fraction(len(good), len(pairs))
    if "rectangle is" in t:
        return 2 * (n[0] + n[1])
    if "triangle has sides" in t:
        return sum(n)
    if "garden" in t:
        return n[0] * n[1] + n[2] ** 2 + Fraction(n[3] * n[4], 2)
    if "legs" in t:
        return Fraction(n[0] * n[1], 2)
    if "is cut from" in t:
        return n[1] * n[2] - n[0] ** 2
    if "side by side" in t:
        return n[0] ** 2 + n[1] * n[2]
    if "triangle of base" in t:
        return n[0] * n[1] + Fraction(n[2] * n[3], 2)
    if "trapezoid" in t:
        return Fraction((n[0] + n[1]) * n[2], 2)
    raise AssertionError(f"no oracle for {t!r}")


def test_answers_parse_and_match_oracle(sample):
    for p in sample:
        gold = parse(f"${p.answer}$")
        assert gold, f"{p.id}: math-verify cannot parse {p.answer!r}"
        expected = _oracle(p)
        assert p.answer == latex(expected), f"{p.id}: {p.problem} -> {p.answer}, oracle {expected}"
        assert verify(gold, parse(f"${latex(expected)}$")), p.id


def _answer_from_trace(p: Problem) -> str:
    """Read the final answer off the step values alone (how a reader of the trace would)."""
    s = p.steps
    if p.domain == "algebra" and p.level >= 3:  # x is the division line, y the last line
        return latex((next(st for st in s if st.op == "/").value, s[-1].value))
    gcd = [k for k, st in enumerate(s) if st.op == "gcd"]
    if gcd:  # a fraction: the gcd line's arguments, divided by it in the two lines after (if it is not 1)
        k = gcd[0]
        if k == len(s) - 1:
            return latex(Fraction(*s[k].args))
        return latex(Fraction(s[k + 1].value) / Fraction(s[k + 2].value))
    return latex(s[-1].value)


def test_answer_equals_trace_value_by_math_verify(sample):
    for p in sample:
        from_steps = _answer_from_trace(p)
        assert verify(parse(f"${p.answer}$"), parse(f"${from_steps}$")), (p.id, p.answer, from_steps)


def test_every_step_is_correct_and_local(sample):
    for p in sample:
        assert 1 <= len(p.steps) <= 8, p.id
        for st in p.steps:
            assert st.is_correct, (p.id, st.text)
            assert _check_step_text(st.text), (p.id, st.text)
            assert len(st.text) <= 24, (p.id, st.text)  # one short line each


def test_small_consistent_character_set(sample):
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?:+-*/=()<>{}\\\n")
    for p in sample:
        assert set(p.problem + cot_solution(p)) <= allowed, p.id


def test_steps_grow_with_level(sample):
    mean = {lv: sum(len(p.steps) for p in sample if p.level == lv) / sum(p.level == lv for p in sample)
            for lv in LEVELS}
    assert all(mean[a] < mean[b] for a, b in zip(LEVELS, LEVELS[1:])), mean


# ----------------------------------------------------------------------------- slips and storage

def test_slip_gives_consistent_wrong_trace(sample):
    rng = random.Random(0)
    n_slipped = 0
    for p in sample:
        got = random_slip(p, rng)
        if got is None:
            continue
        (i, delta), steps, answer = got
        n_slipped += 1
        wrong = [k for k, st in enumerate(steps) if not st.is_correct]
        assert wrong == [i], (p.id, i, [st.text for st in steps])  # only the slipped line is wrong ...
        assert steps[:i] == p.steps[:i]  # ... everything before it is unchanged ...
        assert answer != p.answer  # ... and the error reaches the final answer,
        assert parse(f"${answer}$"), answer
        assert _answer_from_trace(dataclasses.replace(p, steps=steps)) == answer  # which the wrong trace implies
        if i + 1 < len(steps):  # the wrong value is used by a later line
            assert any(steps[i].value in st.args for st in steps[i + 1:]) or steps[i].op == "/", (p.id, i)
    assert n_slipped >= 0.9 * len(sample)


def test_arithmetic_slips_finds_exactly_the_slipped_line(sample):
    rng = random.Random(1)
    n_checked = 0
    for p in sample:
        n, bad = arithmetic_slips(cot_solution(p))
        assert (n, bad) == (len(p.steps), 0), (p.id, cot_solution(p))  # every step line read, all true
        got = random_slip(p, rng)
        if got is None:
            continue
        (i, _), steps, _ = got
        n, bad = arithmetic_slips("\n".join(st.text for st in steps))
        assert (n, bad) == (len(steps), 1), (p.id, i, [st.text for st in steps])
        n_checked += 1
    assert n_checked >= 0.9 * len(sample)


@pytest.mark.parametrize("text,expected", [
    ("7 * 9 = 810\n81 mod 10 = 3", (2, 2)),       # a model's lucky answer: both statements false
    ("7 * 9 = 63\n63 mod 10 = 3", (2, 0)),
    ("7 - (-3) = 10 and 3/4 * 2 = 3/2", (2, 0)),   # negative operand in parentheses, fraction operand
    ("6 / 4 = 3/2, gcd(6, 57) = 3", (2, 0)),
    ("12 / 0 = 4; 5 mod 0 = 1", (2, 2)),           # undefined is false, not a crash
    ("x = 6, so the answer is \\boxed{6}", (0, 0)),
    ("Check: 28 / 2 = 14, so 14 * 2 = 29", (2, 1)),
])
def test_arithmetic_slips_examples(text, expected):
    assert arithmetic_slips(text) == expected


def test_slip_example_is_propagated():
    p = make_problem("arithmetic", 2, {"start": 7, "ops": [["+", 5], ["*", 3], ["-", 4]]})
    steps, answer = p.resolve(slip=(0, 1))
    assert [s.text for s in steps] == ["7 + 5 = 13", "13 * 3 = 39", "39 - 4 = 35"]
    assert answer == "35"
    with pytest.raises(ValueError, match="slip step 3"):
        p.resolve(slip=(3, 1))
    q = make_problem("counting_probability", 4, {"form": "both", "colors": ["red", "blue", "green"],
                                                 "counts": [3, 4, 1], "ask": 0})
    steps, answer = q.resolve(slip=(3, 1))  # 8 * 7 = 57: the gcd and the answer follow the slip
    assert [s.text for s in steps] == ["3 + 4 = 7", "7 + 1 = 8", "3 * 2 = 6", "8 * 7 = 57", "gcd(6, 57) = 3",
                                       "6 / 3 = 2", "57 / 3 = 19"] and answer == "\\frac{2}{19}"
    with pytest.raises(SlipError):
        q.resolve(slip=(1, -8))  # no balls left: 0 * (-1) = 0 is a zero denominator


def test_cot_solution_with_slip():
    p = make_problem("arithmetic", 2, {"start": 7, "ops": [["+", 5], ["*", 3], ["-", 4]]})
    assert cot_solution(p, slip=(1, -1)) == "<think>\n7 + 5 = 12\n12 * 3 = 35\n35 - 4 = 31\n</think>\n\\boxed{31}"


def test_to_dict_from_dict_round_trip(sample):
    for p in sample[:100]:
        d = json.loads(json.dumps(p.to_dict()))
        assert all(isinstance(v, (str, int, list)) for v in d.values())
        assert Problem.from_dict(d) == p
    d = sample[0].to_dict()
    d["steps"] = d["steps"][:-1]
    with pytest.raises(ValueError, match="do not match"):
        Problem.from_dict(d)


def test_step_is_frozen_and_prints_its_text():
    st = Step("*", (12, 3), 36)
    assert str(st) == "12 * 3 = 36" and st.is_correct
    assert not Step("*", (12, 3), 35).is_correct
    with pytest.raises(AttributeError):
        st.value = 1


def test_no_reordered_twin_across_splits():
    """Train and test never share a problem up to the order of its numbers or words."""
    from lib import problems as P

    train = P.generate(8000, seed=0, split="train")
    test = P.generate(500, seed=0, split="test")
    test_keys = {P.split_key(p.problem) for p in test}
    assert not [p.problem for p in train if P.split_key(p.problem) in test_keys]
    assert P.split_key("remainder when 2 * 9 is divided by 12") == P.split_key("remainder when 9 * 2 is divided by 12")
