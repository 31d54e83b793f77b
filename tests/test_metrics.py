"""lib.metrics: pass@k against brute force, pass@1 over runs, cons@k, bootstrap, breakdowns,
response statistics and the repetition detector."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lib import metrics as M
from lib import verify as V

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


# ---------------------------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------------------------


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert M.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (1000, 1, 500, 0.5),  # = k/n for c = 1; large n must not overflow
        (64, 8, 60, 1.0),  # n - c < k
        (200, 100, 100, 1 - math.comb(100, 100) / math.comb(200, 100)),
    ],
)
def test_pass_at_k_values(n, c, k, expected):
    assert M.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "n,c,k,error",
    [(4, 2, 5, ValueError), (4, 5, 1, ValueError), (4, 2, 0, ValueError), (0, 0, 1, ValueError), (4, 2, 1.0, TypeError)],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k, error):
    with pytest.raises(error):
        M.pass_at_k(n, c, k)


def test_pass_at_k_curve():
    per_problem = [[True, False, False, False], [False] * 4, [True, True, None, False]]
    curve = M.pass_at_k_curve(per_problem)
    assert list(curve) == [1, 2, 3, 4]
    assert curve[1] == pytest.approx((1 / 4 + 0 + 2 / 4) / 3)  # None counts as not correct
    assert curve[4] == pytest.approx(2 / 3)
    assert all(a <= b for a, b in zip(curve.values(), list(curve.values())[1:]))
    assert M.pass_at_k_curve(per_problem, ks=[2]) == {2: pytest.approx(curve[2])}
    with pytest.raises(ValueError, match="larger than the fewest"):
        M.pass_at_k_curve(per_problem, ks=[5])
    with pytest.raises(ValueError):
        M.pass_at_k_curve([])


# ---------------------------------------------------------------------------------------------
# Bootstrap and pass@1 over runs
# ---------------------------------------------------------------------------------------------


def test_bootstrap_ci_is_deterministic_and_sensible():
    rng = np.random.default_rng(1)
    values = rng.random(200) < 0.3
    a = M.bootstrap_ci(values, seed=0)
    assert a == M.bootstrap_ci(values, seed=0)
    assert a != M.bootstrap_ci(values, seed=1)
    lo, hi = a
    assert lo < values.mean() < hi
    # normal approximation of the 95% interval of a mean of 200 Bernoulli(0.3): +-0.064
    assert 0.09 < hi - lo < 0.16
    assert M.bootstrap_ci([0.5] * 10) == (0.5, 0.5)
    narrow = M.bootstrap_ci(values, alpha=0.5)
    assert lo < narrow[0] < narrow[1] < hi


def test_bootstrap_ci_large_input_is_chunked_but_same_distribution():
    values = np.arange(50_000) % 2  # mean 0.5, sd of the mean ~0.0022
    lo, hi = M.bootstrap_ci(values, n_boot=200)
    assert 0.49 < lo < 0.5 < hi < 0.51


@pytest.mark.parametrize("bad", [[], [[1, 2], [3, 4]]])
def test_bootstrap_ci_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        M.bootstrap_ci(bad)


def test_mean_pass1_over_runs():
    runs = [[True, False, True, False], [True, True, False, None], [True, False, False, False]]
    s = M.mean_pass1_over_runs(runs)
    assert s.per_run == (0.5, 0.5, 0.25)
    assert s.mean == pytest.approx(np.mean([0.5, 0.5, 0.25]))
    assert s.lo <= s.mean <= s.hi
    assert (s.n_runs, s.n_problems, s.unverifiable) == (3, 4, 1)
    assert s == M.mean_pass1_over_runs(runs)  # deterministic
    assert s.to_dict()["mean"] == s.mean
    with pytest.raises(ValueError, match="same non-zero number"):
        M.mean_pass1_over_runs([[True], [True, False]])


# ---------------------------------------------------------------------------------------------
# cons@k
# ---------------------------------------------------------------------------------------------


def test_canonical_key_groups_equal_numbers():
    keys = {M.canonical_key(a) for a in ["\\frac{1}{2}", "0.5", "1/2", "\\dfrac12", " 0.50 ", "$\\frac{1}{2}$"]}
    assert keys == {"num:1/2"}
    assert M.canonical_key("0.5") != M.canonical_key("0.51")
    assert M.canonical_key("\\sqrt{2}") != M.canonical_key("2")


def test_cons_at_k_groups_differently_written_answers():
    answers = [
        ["\\frac{1}{2}", "3", "0.5", "3", "1/2"],  # 1/2 x3 beats 3 x2
        ["7", "8", "8", "7", "9"],  # tie 7 vs 8: 7 came first
        [None, None, "4", None, None],  # None never wins while a real answer exists
        [None, None, None, None, None],  # all None: no answer, wrong
    ]
    golds = ["0.5", "7", "4", "1"]
    assert M.cons_at_k(answers, golds, 5) == 0.75
    votes = M.majority_votes(answers, 5)
    assert [v.answer for v in votes] == ["\\frac{1}{2}", "7", "4", None]
    assert [v.votes for v in votes] == [3, 2, 1, 0]
    # only the first k samples count
    assert [v.answer for v in M.majority_votes(answers, 2)][:2] == ["\\frac{1}{2}", "7"]
    assert M.maj_at_k is M.cons_at_k
    # per problem: which majorities are right (the all-None problem is not)
    assert M.cons_per_problem(answers, golds, 5) == [True, True, True, False]
    # k = 1: the first samples alone: 1/2 right, 7 right, None (no answer) wrong, None wrong
    assert M.cons_per_problem(answers, golds, 1) == [True, True, False, False]


def test_cons_at_k_with_the_verifier_batches_checks():
    # \sqrt{18}, 3\sqrt{2} and \sqrt{2}\cdot 3 are one answer only the checker can group.
    answers = [["\\sqrt{18}", "4", "3\\sqrt{2}", "4", "\\sqrt{2} \\cdot 3"], ["1", "2", "3", "3", "x"]]
    golds = ["3\\sqrt{2}", "3"]
    v = V.Verifier(workers=0)
    calls = []

    def batch(pairs):
        calls.append(len(pairs))
        return v.equivalent_many(pairs)

    score = M.cons_at_k(
        answers, golds, 5, same_answer_batch=batch, is_correct_batch=lambda ps: [c.correct for c in v.check_many(ps)]
    )
    assert score == 1.0
    # one batched call; numeric pairs (4 vs 1, 1 vs 2, ...) skipped: 3 pairs in problem 0
    # (the three surd forms are all non-numeric vs each other and vs "4") plus 3 with "x"
    assert len(calls) == 1
    assert calls[0] == 6 + 3
    # without the checker, "4" (2 votes) would win problem 0
    assert M.majority_votes(answers, 5)[0].answer == "4"


def test_cons_at_k_pairwise_callable_and_errors():
    same = lambda a, b: a.strip() == b.strip()  # noqa: E731
    assert M.cons_at_k([["a ", "a", "b"]], ["a"], 3, same_answer=same, is_correct=lambda g, a: g == a.strip()) == 1.0
    with pytest.raises(ValueError, match="fewer than k"):
        M.cons_at_k([["1"]], ["1"], 2)
    with pytest.raises(ValueError, match="golds"):
        M.cons_at_k([["1"]], [], 1)
    with pytest.raises(ValueError, match="either"):
        M.cons_at_k([["1"]], ["1"], 1, same_answer=same, same_answer_batch=lambda p: [])


# ---------------------------------------------------------------------------------------------
# Breakdowns and response statistics
# ---------------------------------------------------------------------------------------------


def test_breakdown():
    records = [
        {"domain": "algebra", "level": 1, "correct": True},
        {"domain": "algebra", "level": 1, "correct": False},
        {"domain": "algebra", "level": 2, "correct": True},
        {"domain": "geometry", "level": 1, "correct": None},
    ]
    df = M.breakdown(records)
    assert df.to_dict("records") == [
        {"domain": "algebra", "level": 1, "mean": 0.5, "count": 2},
        {"domain": "algebra", "level": 2, "mean": 1.0, "count": 1},
        {"domain": "geometry", "level": 1, "mean": 0.0, "count": 1},
    ]
    by_domain = M.breakdown(records, by="domain", metric=lambda r: r["level"], ci=True)
    assert list(by_domain["mean"]) == [pytest.approx(4 / 3), 1.0]
    assert {"lo", "hi"} <= set(by_domain.columns)
    with pytest.raises(KeyError, match="record 0 has no field"):
        M.breakdown(records, by="subject")


def test_length_and_truncation_stats():
    s = M.length_stats([10, 20, 30, 40, 100])
    assert s == {"n": 5, "mean": 40.0, "median": 30.0, "p90": pytest.approx(76.0), "max": 100.0}
    assert M.truncation_rate([True, False, True, True]) == 0.25
    out = M.response_stats(lengths=[1, 2], finished=[True, False], texts=["fine", "x = 2\n" * 6])
    assert out["truncated_share"] == 0.5 and out["repetitive_share"] == 0.5
    with pytest.raises(ValueError):
        M.length_stats([])


# Realistic traces. NORMAL_TRACE repeats "=", numbers, "Let me check" and a formula, as
# step-by-step math does; the loops are the shapes seen when small models degenerate.
NORMAL_TRACE = """<think>
Okay, so I need to find the sum of all positive divisors of 36. Let me start by factoring 36.
36 = 2^2 * 3^2. The sum of divisors function is multiplicative, so sigma(36) = sigma(2^2) * sigma(3^2).
sigma(2^2) = 1 + 2 + 4 = 7.
sigma(3^2) = 1 + 3 + 9 = 13.
So sigma(36) = 7 * 13 = 91.
Wait, let me check this by listing the divisors: 1, 2, 3, 4, 6, 9, 12, 18, 36.
Adding them: 1 + 2 = 3, 3 + 3 = 6, 6 + 4 = 10, 10 + 6 = 16, 16 + 9 = 25, 25 + 12 = 37, 37 + 18 = 55, 55 + 36 = 91.
Yes, 91. Let me check the formula once more: for p^a the sum is (p^(a+1) - 1)/(p - 1).
For 2^2: (2^3 - 1)/(2 - 1) = 7. For 3^2: (3^3 - 1)/(3 - 1) = 26/2 = 13. So 7 * 13 = 91 again.
Now the question also asks for the number of divisors: d(36) = (2 + 1)(2 + 1) = 9, which matches the list.
Let me check the list once more: 1, 2, 3, 4, 6, 9, 12, 18, 36. That is 9 numbers. Good.
So the sum is 91 and there are 9 divisors.
</think>

The divisors of 36 are 1, 2, 3, 4, 6, 9, 12, 18, 36, and their sum is $\\boxed{91}$."""

LOOP_PARAGRAPH = (
    "Wait, let me recompute the sum of the divisors. The divisors are 1, 2, 3, 4, 6, 9, 12, 18, 36 "
    "and adding them gives 91, but I should double check whether I missed a divisor of 36. "
)
LOOPING_TRACES = {
    "paragraph-loop-to-limit": NORMAL_TRACE.split("</think>")[0] + LOOP_PARAGRAPH * 30,
    "short-phrase-loop": NORMAL_TRACE.split("Now the question")[0] + "Wait, no. " * 300,
    "loop-after-long-reasoning": NORMAL_TRACE * 3 + LOOP_PARAGRAPH * 12,
    "line-loop": "Let me try x = 2.\n" + "f(2) = 4\n" * 6 + "So f(2) = 4.",
    "counting-in-circles": "Let me count again: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10. " * 40,
}
NON_LOOPING = {
    "normal-trace": NORMAL_TRACE,
    "long-normal": "\n".join(
        f"Step {i}: we compute {i} * {i + 1} = {i * (i + 1)}, then add {i} to get {i * (i + 1) + i}. Let me check: yes." for i in range(300)
    ),
    "short": "The answer is 5.",
    "empty": "",
    "repeated-equals-sign": " = ".join(str(i) for i in range(2000)),
    "a-phrase-seven-times": NORMAL_TRACE + ("Let me double check the list of divisors of 36 one more time to be sure. " * 7),
}


@pytest.mark.parametrize("name", sorted(LOOPING_TRACES))
def test_looping_traces_are_flagged(name):
    assert M.is_repetitive(LOOPING_TRACES[name])


@pytest.mark.parametrize("name", sorted(NON_LOOPING))
def test_normal_traces_are_not_flagged(name):
    text = NON_LOOPING[name]
    assert not M.is_repetitive(text)
    assert M.repetition_score(text) == 0.0


def test_repetition_score_measures_the_looping_share():
    assert M.repetition_score(LOOPING_TRACES["paragraph-loop-to-limit"]) > 0.8
    assert 0.2 < M.repetition_score(LOOPING_TRACES["loop-after-long-reasoning"]) < 0.8
    assert M.repetition_score("a " * 1000) == 1.0
    assert M.max_consecutive_line_repeats("a\nxyz\nxyz\n\nxyz\nb") == 3  # blank lines do not break a run


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark copies not found at {SHARED} (not part of a user's clone)")
def test_no_reference_solution_is_flagged():
    # 1,849 human-written solutions (MATH-500, AIME 2024, GSM8K) contain no loops.
    flagged = []
    for name in ("math500", "aime24", "gsm8k_test"):
        for line in (SHARED / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if M.is_repetitive(row["solution"]):
                flagged.append(row["id"])
    assert flagged == []


# ---------------------------------------------------------------------------------------------
# Values, not shapes: each test below pins a result that a plausible slip in lib/metrics.py would
# change (found by mutation testing, `make mutation`; docs/mutation.md). Expected values come from
# hand-worked numbers or a reference computation written here, never from the code under test.
# ---------------------------------------------------------------------------------------------


def reference_bootstrap(values, n_boot=1000, alpha=0.05, seed=0):
    """The percentile bootstrap written out: n_boot resamples of the items (one row each) from one
    generator, interval = the alpha/2 and 1 - alpha/2 quantiles of the resample means."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].sum(axis=1) / len(x)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


@pytest.mark.parametrize(
    "n,c,k,message",
    [
        (4.0, 2, 1, "n must be an int, got float"),
        (4, True, 1, "c must be an int, got bool"),
        (4, 2, 1.0, "k must be an int, got float"),
        (0, 0, 1, r"need n >= 1 and 0 <= c <= n, got n=0, c=0"),
        (4, 5, 1, r"got n=4, c=5"),
        (4, 2, 5, r"k must be between 1 and n=4 .*got k=5"),
    ],
)
def test_pass_at_k_errors_name_the_argument(n, c, k, message):
    with pytest.raises((TypeError, ValueError), match=message):
        M.pass_at_k(n, c, k)


def test_pass_at_k_curve_with_one_sample_per_problem():
    # pass@1 with one sample per problem (the common case): the share of problems solved
    assert M.pass_at_k_curve([[True], [False], [None], [True]]) == {1: 0.5}
    with pytest.raises(ValueError, match="problem 1 has no samples"):
        M.pass_at_k_curve([[True], [], []])
    with pytest.raises(ValueError, match="per_problem_correct is empty"):
        M.pass_at_k_curve([])


def test_bootstrap_ci_equals_a_reference_computation():
    values = np.array([1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1], dtype=bool)
    # defaults: 1,000 resamples, 95%, seed 0
    assert M.bootstrap_ci(values) == pytest.approx(reference_bootstrap(values), abs=1e-12)
    for kw in ({"n_boot": 50, "alpha": 0.2, "seed": 3}, {"n_boot": 1, "alpha": 0.5, "seed": 7}):
        assert M.bootstrap_ci(values, **kw) == pytest.approx(reference_bootstrap(values, **kw), abs=1e-12), kw


def test_bootstrap_ci_chunked_draws_equal_one_draw():
    # 100k items: drawn in chunks of 40 resamples (4M indices); the interval must be the one of
    # 100 resamples drawn at once from the same generator, not of more or fewer resamples
    values = (np.arange(100_000) % 7 == 0).astype(float)
    assert M.bootstrap_ci(values, n_boot=100, seed=1) == pytest.approx(
        reference_bootstrap(values, n_boot=100, seed=1), abs=1e-12
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"alpha": 0.0}, r"alpha must be in \(0, 1\), got 0.0"),
        ({"alpha": 1.0}, r"alpha must be in \(0, 1\), got 1.0"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"),
        ({"n_boot": 0}, "n_boot must be >= 1, got 0"),
    ],
)
def test_bootstrap_ci_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        M.bootstrap_ci([0.0, 1.0], **kwargs)
    with pytest.raises(ValueError, match=r"non-empty 1-D sequence, got shape \(0,\)"):
        M.bootstrap_ci([])


def test_mean_pass1_interval_resamples_problems_with_the_given_settings():
    # 3 runs x 6 problems; per-problem scores (mean over runs) are 1, 2/3, 1/3, 0, 1, 0
    runs = [
        [True, True, False, False, True, False],
        [True, False, True, False, True, None],
        [True, True, False, False, True, False],
    ]
    per_problem = [1, 2 / 3, 1 / 3, 0, 1, 0]
    s = M.mean_pass1_over_runs(runs)
    assert s.mean == pytest.approx(sum(per_problem) / 6)
    assert s.per_run == pytest.approx((0.5, 0.5, 0.5))
    assert (s.lo, s.hi) == pytest.approx(reference_bootstrap(per_problem), abs=1e-12)  # defaults 1000, 0.05, 0
    t = M.mean_pass1_over_runs(runs, n_boot=40, alpha=0.3, seed=5)
    assert (t.lo, t.hi) == pytest.approx(reference_bootstrap(per_problem, n_boot=40, alpha=0.3, seed=5), abs=1e-12)
    # one problem per run is fine; an empty run is not
    one = M.mean_pass1_over_runs([[True], [False]])
    assert (one.mean, one.n_problems, one.per_run) == (0.5, 1, (1.0, 0.0))
    with pytest.raises(ValueError, match=r"same non-zero number of problems, got sizes \[0\]"):
        M.mean_pass1_over_runs([[], []])
    with pytest.raises(ValueError, match="correct_by_run is empty"):
        M.mean_pass1_over_runs([])


def test_canonical_key_prefixes_and_the_length_limit():
    assert M.canonical_key("x + 1") == "str:x+1"  # spaces removed inside the key
    assert M.canonical_key("0.25") == "num:1/4"
    at_limit = "1" * V.MAX_ANSWER_CHARS
    assert M.canonical_key(at_limit) == "num:" + at_limit  # at the limit: still parsed
    over = "y" * (V.MAX_ANSWER_CHARS + 1)
    assert M.canonical_key(over) == "raw:" + over  # past it: kept raw, never normalised


def test_majority_votes_problem_without_answers_in_the_middle():
    answers = [["1", "1", "2"], [None, None, None], ["3", "4", "4"]]
    votes = M.majority_votes(answers, 3)
    assert [(v.answer, v.votes, v.k) for v in votes] == [("1", 2, 3), (None, 0, 3), ("4", 2, 3)]
    assert M.cons_at_k(answers, ["1", "0", "4"], 3) == pytest.approx(2 / 3)


def test_majority_votes_and_cons_at_k_errors():
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        M.majority_votes([["1"]], 0)
    with pytest.raises(ValueError, match="give either same_answer or same_answer_batch, not both"):
        M.majority_votes([["a", "b"]], 2, lambda a, b: True, same_answer_batch=lambda p: [True])
    with pytest.raises(ValueError, match="returned 0 verdicts for 1 pairs"):
        M.majority_votes([["a", "b"]], 2, same_answer_batch=lambda p: [])
    with pytest.raises(ValueError, match="give either is_correct or is_correct_batch, not both"):
        M.cons_at_k([["a"]], ["a"], 1, is_correct=lambda g, a: True, is_correct_batch=lambda p: [True])
    with pytest.raises(ValueError, match="is_correct_batch returned 0 verdicts for 1 pairs"):
        M.cons_at_k([["a"]], ["a"], 1, is_correct_batch=lambda p: [])
    with pytest.raises(ValueError, match="2 problems but 1 golds"):
        M.cons_at_k([["a"], ["b"]], ["a"], 1)


def test_cons_at_k_uses_the_given_key_and_graders():
    lower = str.lower
    # with key=str.lower, "A" and "a" are one group (2 votes) and beat "b"; graded by the key too
    assert M.majority_votes([["b", "A", "a"]], 3, key=lower)[0].answer == "A"
    assert M.cons_at_k([["b", "A", "a"]], ["a"], 3, key=lower) == 1.0
    assert M.cons_at_k([["b", "A", "a"]], ["a"], 3) == 0.0  # default key: "b" wins the 1-1-1 tie
    # a pairwise grader is used when given (here it accepts anything)
    assert M.cons_at_k([["y"]], ["x"], 1, is_correct=lambda g, a: True) == 1.0
    # nothing to grade (all None): the grader is not called; no problems at all: nan
    calls = []
    assert M.cons_at_k([[None]], ["1"], 1, is_correct_batch=lambda p: calls.append(p) or []) == 0.0
    assert calls == []
    assert math.isnan(M.cons_at_k([], [], 1))


def test_breakdown_sorts_groups_keeps_missing_keys_and_bootstraps_each_group():
    records = [
        {"domain": "geometry", "correct": True},
        {"domain": None, "correct": True},
        {"domain": "algebra", "correct": False},
        {"domain": "geometry", "correct": False},
        {"domain": "algebra", "correct": True},
        {"domain": "algebra", "correct": True},
        {"domain": "geometry", "correct": True},
    ]
    df = M.breakdown(records, by="domain", ci=True)
    # sorted by key, the missing key kept as its own group (last)
    assert df["domain"].iloc[:2].tolist() == ["algebra", "geometry"] and df["domain"].isna().iloc[2]
    assert df["mean"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert df["count"].tolist() == [3, 3, 1]
    algebra, geometry = [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]
    for row, values in zip(df.itertuples(), (algebra, geometry, [1.0])):
        assert (row.lo, row.hi) == pytest.approx(reference_bootstrap(values), abs=1e-12)
    assert (df["lo"] < df["hi"]).iloc[:2].all()
    seeded = M.breakdown(records, by="domain", ci=True, seed=4)
    assert (seeded["lo"][0], seeded["hi"][0]) == pytest.approx(reference_bootstrap(algebra, seed=4), abs=1e-12)
    with pytest.raises(KeyError, match=r"record 0 has no metric field 'score'; fields present: \['correct', 'domain'\]"):
        M.breakdown(records, by="domain", metric="score")
    with pytest.raises(ValueError, match="no records to break down"):
        M.breakdown([])


def test_response_stats_values_and_single_items():
    assert M.response_stats(lengths=[3, 1, 2]) == {
        "length": {"n": 3, "mean": 2.0, "median": 2.0, "p90": pytest.approx(2.8), "max": 3.0}
    }
    assert M.response_stats() == {}
    assert M.response_stats(finished=[False], texts=["fine"]) == {"truncated_share": 1.0, "repetitive_share": 0.0}
    assert M.truncation_rate([False]) == 1.0
    with pytest.raises(ValueError, match="no responses given"):
        M.truncation_rate([])
    with pytest.raises(ValueError, match="no texts given"):
        M.response_stats(texts=[])
    with pytest.raises(ValueError, match="no lengths given"):
        M.length_stats([])


@pytest.mark.parametrize(
    "text,n,min_count,expected",
    [
        # "a b" occurs 3 times (starts 0, 2, 4) and covers words 0-5 of 7: 6/7
        ("a b a b a b c", 2, 3, 6 / 7),
        ("a b a b a b c", 2, 4, 0.0),  # most frequent n-gram 3 < 4 times
        ("a b a b c", 2, 2, 4 / 5),
        ("p q r", 2, 1, 1.0),  # every n-gram occurs once >= 1: every word covered
        ("a " * 80, 10, 8, 1.0),  # exactly n * min_count words: long enough
        ("a " * 79, 10, 8, 0.0),  # one word short
    ],
)
def test_repetition_score_hand_worked(text, n, min_count, expected):
    assert M.repetition_score(text, n=n, min_count=min_count) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text,expected",
    [("", 0), ("ab\nab\nab", 0), ("abc", 1), ("abc\nabc\nxy\nabc", 2), ("ab\nabc\nabc", 2)],
)
def test_max_consecutive_line_repeats_hand_worked(text, expected):
    assert M.max_consecutive_line_repeats(text) == expected


def test_is_repetitive_thresholds_are_inclusive():
    loop = "a " * 80  # repetition_score 1.0
    assert M.is_repetitive(loop, threshold=1.0)
    assert not M.is_repetitive("abc\n" * 4, max_line_repeats=5)
    assert M.is_repetitive("abc\n" * 5, max_line_repeats=5)


def test_paired_difference_hand_worked():
    from lib.metrics import paired_difference

    before = {"p1": 0.0, "p2": 0.5, "p3": 1.0, "p4": 1.0}
    after = {"p4": 1.0, "p3": 0.0, "p2": 1.0, "p1": 1.0}  # order does not matter: paired by id
    d = paired_difference(after, before, n_boot=2000, seed=1)
    # differences +1, +0.5, -1, 0: mean 0.125; 2 rose, 1 fell
    assert d.mean == pytest.approx(0.125) and (d.better, d.worse, d.n_problems) == (2, 1, 4)
    assert -1.0 <= d.lo < 0.125 < d.hi <= 1.0
    same = paired_difference(before, before)
    assert (same.mean, same.lo, same.hi) == (0.0, 0.0, 0.0)  # no change, no spread


def test_paired_interval_is_narrower_than_the_unpaired_spread():
    """Problems differ a lot in difficulty, the stages little: pairing removes the first."""
    import numpy as np

    from lib.metrics import bootstrap_ci, paired_difference

    rng = np.random.default_rng(0)
    hard = rng.random(300)
    before = {str(i): float(h > 0.5) for i, h in enumerate(hard)}
    after = {str(i): float(h > 0.45) for i, h in enumerate(hard)}  # a few more solved, none lost
    d = paired_difference(after, before)
    lo_b, hi_b = bootstrap_ci(list(before.values()))
    assert d.worse == 0 and d.lo > 0  # the change is visible paired
    assert (d.hi - d.lo) < (hi_b - lo_b) / 2


@pytest.mark.parametrize("after,before,match", [
    ({"a": 1.0}, {"a": 0.0, "b": 1.0}, "1 only in 'before'"),
    ({"a": 1.0, "c": 1.0}, {"a": 0.0}, "1 only in 'after'"),
    ({}, {}, "no problems"),
])
def test_paired_difference_needs_the_same_problems(after, before, match):
    from lib.metrics import paired_difference

    with pytest.raises(ValueError, match=match):
        paired_difference(after, before)
