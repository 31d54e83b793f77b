"""Evaluation metrics: pass@k, pass@1 over runs, cons@k (majority vote), bootstrap CIs,
per-group breakdowns, and response statistics (length, truncation, repetition).

Conventions follow the Phi-4-Mini-Reasoning evaluation (Xu et al. 2025, arXiv 2504.21233):
pass@1 is the mean over 3 independent runs at temperature 0.6, top-p 0.95; pass@k and cons@16
track what sampling can reach and how stable training is.

* `pass_at_k` is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models
  Trained on Code", arXiv 2107.03374, eq. 1): with n samples of which c are correct,
  pass@k = 1 - C(n-c, k) / C(n, k), computed as the product 1 - prod_{i=n-c+1}^{n} (1 - k/i)
  so that n = 64, k = 32 does not overflow or cancel.
* `cons_at_k` (alias `maj_at_k`): the most frequent answer among the first k samples is
  graded. Answers written differently but equal (`\\frac{1}{2}`, `0.5`, `1/2`) are one vote
  group (see `majority_votes` for how groups are formed and ties broken).
* `bootstrap_ci`: percentile bootstrap of the mean (resampling items with replacement).
* Correctness values may be True / False / None (None = "could not verify", see lib.verify);
  metrics count only True as correct, and say so where it matters.

Repetition (`repetition_score`, `is_repetitive`) is also used by the data tagger, so it is pure
and documented in its own section below.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from lib.answers import MAX_ANSWER_CHARS
from lib.judges import exact_number, normalize_answer

# ---------------------------------------------------------------------------------------------
# pass@k
# ---------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples, `c` of them correct (Chen et al. 2021)."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n} (pass@k needs at least k samples), got k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _as_correct(x) -> bool:
    """True / 1 count as correct; False / 0 and None (unverifiable) do not."""
    return x is not None and bool(x)


def pass_at_k_curve(per_problem_correct: Sequence[Sequence[bool | None]], ks: Iterable[int] | None = None) -> dict[int, float]:
    """Mean pass@k over problems for each k (default: every k from 1 to the smallest n)."""
    if not per_problem_correct:
        raise ValueError("per_problem_correct is empty: need at least one problem")
    ns = [len(row) for row in per_problem_correct]
    n_min = min(ns)
    if n_min < 1:
        raise ValueError(f"problem {ns.index(n_min)} has no samples")
    ks = list(range(1, n_min + 1)) if ks is None else sorted(set(ks))
    if ks and ks[-1] > n_min:
        raise ValueError(f"k={ks[-1]} is larger than the fewest samples per problem ({n_min})")
    counts = [(len(row), sum(_as_correct(x) for x in row)) for row in per_problem_correct]
    return {k: float(np.mean([pass_at_k(n, c, k) for n, c in counts])) for k in ks}


# ---------------------------------------------------------------------------------------------
# Bootstrap and pass@1 over runs
# ---------------------------------------------------------------------------------------------


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of the mean; the same seed gives the same interval."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {x.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    # Draw in chunks of at most ~4M indices (32 MB) so 1,000 resamples of 100k items stay small.
    chunk = max(1, 4_000_000 // x.size)
    means = np.concatenate(
        [x[rng.integers(0, x.size, size=(min(chunk, n_boot - s), x.size))].mean(axis=1) for s in range(0, n_boot, chunk)]
    )
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class RunsSummary:
    """pass@1 as the mean over runs, with a bootstrap CI over problems."""

    mean: float
    lo: float
    hi: float
    per_run: tuple[float, ...]
    n_runs: int
    n_problems: int
    unverifiable: int  # None values, counted as not correct

    def to_dict(self) -> dict:
        return asdict(self)


def mean_pass1_over_runs(
    correct_by_run: Sequence[Sequence[bool | None]], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> RunsSummary:
    """pass@1 = mean over R runs (paper: R = 3, T = 0.6, top-p 0.95); `correct_by_run[r][p]`.

    The CI resamples problems (each problem's score is its mean over runs), so it reflects
    benchmark-size uncertainty, the dominant one on AIME's 30 problems.
    """
    if not correct_by_run:
        raise ValueError("correct_by_run is empty: need at least one run")
    sizes = {len(run) for run in correct_by_run}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"every run must grade the same non-zero number of problems, got sizes {sorted(sizes)}")
    m = np.array([[_as_correct(x) for x in run] for run in correct_by_run], dtype=float)
    per_problem = m.mean(axis=0)
    lo, hi = bootstrap_ci(per_problem, n_boot=n_boot, alpha=alpha, seed=seed)
    return RunsSummary(
        mean=float(per_problem.mean()),
        lo=lo,
        hi=hi,
        per_run=tuple(float(v) for v in m.mean(axis=1)),
        n_runs=m.shape[0],
        n_problems=m.shape[1],
        unverifiable=sum(x is None for run in correct_by_run for x in run),
    )


@dataclass(frozen=True)
class PairedDifference:
    """``after - before`` on the same problems: the mean per-problem difference with its interval."""

    mean: float
    lo: float
    hi: float
    n_problems: int
    better: int  # problems whose score rose
    worse: int   # problems whose score fell

    def to_dict(self) -> dict:
        return asdict(self)


def paired_difference(after: Mapping[str, float], before: Mapping[str, float], n_boot: int = 1000,
                      alpha: float = 0.05, seed: int = 0) -> PairedDifference:
    """The change of pass@1 between two evaluations of the same problems, paired by problem.

    ``after`` and ``before`` map a problem id to its score (its mean correctness over runs). The
    interval is a percentile bootstrap over problems of the per-problem differences: resampling a
    problem keeps both of its scores together, so the spread between problems (hard ones are hard
    for every stage) cancels, and the interval is much narrower than two unpaired intervals would
    suggest. Both must cover exactly the same problems.
    """
    missing_after, missing_before = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    if missing_after or missing_before:
        raise ValueError(f"a paired difference needs the same problems on both sides: {len(missing_after)} only in "
                         f"'before' (e.g. {missing_after[:3]}), {len(missing_before)} only in 'after' "
                         f"(e.g. {missing_before[:3]}); evaluate both on the same set and seed")
    if not after:
        raise ValueError("no problems to compare")
    keys = sorted(after)
    d = np.array([float(after[k]) - float(before[k]) for k in keys])
    lo, hi = bootstrap_ci(d, n_boot=n_boot, alpha=alpha, seed=seed)
    return PairedDifference(mean=float(d.mean()), lo=lo, hi=hi, n_problems=len(keys),
                            better=int((d > 0).sum()), worse=int((d < 0).sum()))


# ---------------------------------------------------------------------------------------------
# cons@k / maj@k
# ---------------------------------------------------------------------------------------------


def canonical_key(answer: str) -> str:
    """Cheap grouping key: `normalize_answer`, then exact numbers as `num:<fraction>`.

    `\\frac{1}{2}`, `0.5`, `1/2` and `\\dfrac12` share the key `num:1/2`; two different `num:`
    keys are different numbers, so voting never needs the checker for them.
    """
    if len(answer) > MAX_ANSWER_CHARS:
        return "raw:" + answer
    norm = normalize_answer(answer)
    value = exact_number(norm)
    return f"num:{value}" if value is not None else "str:" + norm.replace(" ", "")


@dataclass(frozen=True)
class Vote:
    """Winner of a majority vote: a representative answer (None if all were None) and its votes."""

    answer: str | None
    votes: int
    k: int


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # keep the earliest group as root


def _batch(pairwise: Callable | None, batch: Callable | None, what: str) -> Callable | None:
    if pairwise is not None and batch is not None:
        raise ValueError(f"give either {what} or {what}_batch, not both")
    if batch is not None:
        return batch
    if pairwise is not None:
        return lambda pairs: [bool(pairwise(a, b)) for a, b in pairs]
    return None


def majority_votes(
    answers_per_problem: Sequence[Sequence[str | None]],
    k: int,
    same_answer: Callable[[str, str], bool] | None = None,
    *,
    same_answer_batch: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
    key: Callable[[str], str] = canonical_key,
) -> list[Vote]:
    """Majority vote over the first k answers of each problem.

    1. Answers are grouped by `key` (cheap string normaliser; exact numbers compared exactly).
    2. Groups whose keys are not both exact numbers are merged when the checker says they are
       the same (`same_answer(a, b)`, the earlier group's representative playing gold). All
       such pairs of ALL problems go to `same_answer_batch` in one call, so a process-pool
       checker (`Verifier.equivalent_many`) pays one round of IPC, not k^2 per problem.
       Merging is transitive (union-find).
    3. The group with most votes wins; a tie goes to the group whose first answer came first
       in sample order. Its representative is that first answer.
    4. None (no answer extracted) never votes; the winner is None only if all k are None.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    check = _batch(same_answer, same_answer_batch, "same_answer")
    groups_per_problem: list[list[tuple[str, list[int]]]] = []  # (representative, sample indices)
    for p, answers in enumerate(answers_per_problem):
        if len(answers) < k:
            raise ValueError(f"problem {p} has {len(answers)} answers, fewer than k={k}")
        by_key: dict[str, tuple[str, list[int]]] = {}
        for i, a in enumerate(answers[:k]):
            if a is None:
                continue
            by_key.setdefault(key(a), (a, []))[1].append(i)
        groups_per_problem.append(list(by_key.values()))  # dicts keep first-seen order

    pairs, where = [], []
    if check is not None:
        for p, groups in enumerate(groups_per_problem):
            keys = [key(rep) for rep, _ in groups]
            for i in range(len(groups)):
                for j in range(i + 1, len(groups)):
                    if keys[i].startswith("num:") and keys[j].startswith("num:"):
                        continue  # different exact numbers: no checker call needed
                    pairs.append((groups[i][0], groups[j][0]))
                    where.append((p, i, j))
    verdicts = check(pairs) if pairs else []
    if len(verdicts) != len(pairs):
        raise ValueError(f"same_answer_batch returned {len(verdicts)} verdicts for {len(pairs)} pairs")
    finders = [_UnionFind(len(g)) for g in groups_per_problem]
    for (p, i, j), same in zip(where, verdicts):
        if same:
            finders[p].union(i, j)

    votes = []
    for groups, uf in zip(groups_per_problem, finders):
        merged: dict[int, list[int]] = {}
        for g, (_, idx) in enumerate(groups):
            merged.setdefault(uf.find(g), []).extend(idx)
        if not merged:
            votes.append(Vote(None, 0, k))
            continue
        # most votes, then earliest first sample; roots are the earliest group of each cluster
        root, idx = min(merged.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
        votes.append(Vote(groups[root][0], len(idx), k))
    return votes


def cons_per_problem(
    answers_per_problem: Sequence[Sequence[str | None]],
    golds: Sequence[str],
    k: int,
    same_answer: Callable[[str, str], bool] | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    *,
    same_answer_batch: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
    is_correct_batch: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
    key: Callable[[str], str] = canonical_key,
) -> list[bool]:
    """Per problem: is its majority answer over the first k samples correct? (See :func:`cons_at_k`;
    a problem whose k samples give no answer is not correct.) What a paired cons@k comparison of two
    models on the same problems needs."""
    if len(golds) != len(answers_per_problem):
        raise ValueError(f"{len(answers_per_problem)} problems but {len(golds)} golds")
    votes = majority_votes(answers_per_problem, k, same_answer, same_answer_batch=same_answer_batch, key=key)
    grade = _batch(is_correct, is_correct_batch, "is_correct") or (
        lambda pairs: [key(g) == key(a) for g, a in pairs]
    )
    graded = [(p, (golds[p], v.answer)) for p, v in enumerate(votes) if v.answer is not None]
    results = grade([pair for _, pair in graded]) if graded else []
    if len(results) != len(graded):
        raise ValueError(f"is_correct_batch returned {len(results)} verdicts for {len(graded)} pairs")
    hits = [False] * len(votes)
    for (p, _), r in zip(graded, results):
        hits[p] = bool(r)
    return hits


def cons_at_k(
    answers_per_problem: Sequence[Sequence[str | None]],
    golds: Sequence[str],
    k: int,
    same_answer: Callable[[str, str], bool] | None = None,
    is_correct: Callable[[str, str], bool] | None = None,
    *,
    same_answer_batch: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
    is_correct_batch: Callable[[list[tuple[str, str]]], list[bool]] | None = None,
    key: Callable[[str], str] = canonical_key,
) -> float:
    """cons@k: share of problems whose majority answer over the first k samples is correct.

    Without checkers, answers are grouped and graded by `key` only (exact, conservative). For
    real use back both by the Verifier:

        cons_at_k(answers, golds, 16, same_answer_batch=v.equivalent_many,
                  is_correct_batch=lambda pairs: [c.correct for c in v.check_many(pairs)])
    """
    hits = cons_per_problem(answers_per_problem, golds, k, same_answer, is_correct,
                            same_answer_batch=same_answer_batch, is_correct_batch=is_correct_batch, key=key)
    return sum(hits) / len(hits) if hits else float("nan")


maj_at_k = cons_at_k


# ---------------------------------------------------------------------------------------------
# Breakdowns
# ---------------------------------------------------------------------------------------------


def breakdown(
    records: Sequence[Mapping],
    by: str | Sequence[str] = ("domain", "level"),
    metric: str | Callable[[Mapping], float] = "correct",
    ci: bool = False,
    seed: int = 0,
):
    """Per-group mean of `metric` with counts, one row per combination of the `by` fields.

    `metric` is a field name (True -> 1, False/None -> 0) or a function of a record. Returns a
    pandas DataFrame with the `by` columns, `mean`, `count` (and `lo`, `hi` if `ci`).
    """
    import pandas as pd

    by = (by,) if isinstance(by, str) else tuple(by)
    rows = []
    for i, r in enumerate(records):
        missing = [f for f in by if f not in r]
        if missing:
            raise KeyError(f"record {i} has no field(s) {missing}; fields present: {sorted(r)}")
        if callable(metric):
            value = float(metric(r))
        else:
            if metric not in r:
                raise KeyError(f"record {i} has no metric field '{metric}'; fields present: {sorted(r)}")
            v = r[metric]
            value = 0.0 if v is None else float(v)
        rows.append({**{f: r[f] for f in by}, "_value": value})
    if not rows:
        raise ValueError("no records to break down")
    df = pd.DataFrame(rows)
    out = df.groupby(list(by), sort=True, dropna=False)["_value"].agg(mean="mean", count="size").reset_index()
    if ci:
        bounds = [
            bootstrap_ci(g["_value"].to_numpy(), seed=seed) for _, g in df.groupby(list(by), sort=True, dropna=False)
        ]
        out["lo"] = [b[0] for b in bounds]
        out["hi"] = [b[1] for b in bounds]
    return out


# ---------------------------------------------------------------------------------------------
# Response statistics: length, truncation, repetition
# ---------------------------------------------------------------------------------------------


def length_stats(lengths: Sequence[int | float]) -> dict[str, float]:
    """n, mean, median, p90, max of response lengths (tokens or characters: the caller's unit)."""
    x = np.asarray(lengths, dtype=float)
    if x.size == 0:
        raise ValueError("no lengths given")
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "p90": float(np.quantile(x, 0.9)),
        "max": float(x.max()),
    }


def truncation_rate(finished: Sequence[bool]) -> float:
    """Share of responses that did not finish (no EOS before the length limit: finished=False)."""
    if len(finished) == 0:
        raise ValueError("no responses given")
    return sum(not f for f in finished) / len(finished)


# Repetition -----------------------------------------------------------------------------------
#
# A looping generation repeats a span over and over, usually until the length limit. Measured
# on words (whitespace tokens), a loop shows up as word n-grams that occur many times. Normal
# step-by-step math also repeats itself, less often: symbols ("=", "\\frac{1}{2}"), phrases
# ("Let me check"), and whole LaTeX fragments (MATH-500 test/precalculus/826 rewrites the same
# product of cosines line after line; AIME 2024-I-11 draws the same [asy] diagram 7 times).
#
# repetition_score(text) = share of words covered by some 10-word n-gram occurring >= 8 times.
# Measured on the 1,849 reference solutions of MATH-500, AIME 2024 and GSM8K: with >= 4
# occurrences the worst scored 0.45 and 0.29 (the two cases above); with >= 8 every one scores
# 0.0, while hand-built loops score 0.5-1.0 (tests/test_metrics.py). A text is repetitive at
# score >= 0.2, or when one line of 3+ characters repeats 5+ times in a row (short lines such as
# "x = 2" are too short for 10-word n-grams); no reference solution repeats a line even twice.
# Loops of fewer than 8 copies are not flagged: a deliberate choice for few false positives.

REPETITION_NGRAM = 10
REPETITION_MIN_COUNT = 8
REPETITION_THRESHOLD = 0.2
MAX_LINE_REPEATS = 5


def repetition_score(text: str, n: int = REPETITION_NGRAM, min_count: int = REPETITION_MIN_COUNT) -> float:
    """Fraction (0-1) of words covered by a word n-gram that occurs at least `min_count` times."""
    words = text.split()
    if len(words) < n * min_count:
        return 0.0  # too short to hold min_count copies of an n-gram
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    if counts.most_common(1)[0][1] < min_count:
        return 0.0
    # difference array: +1 where a frequent n-gram starts, -1 where it ends
    delta = np.zeros(len(words) + 1, dtype=np.int64)
    for i, g in enumerate(grams):
        if counts[g] >= min_count:
            delta[i] += 1
            delta[i + n] -= 1
    return float((np.cumsum(delta[:-1]) > 0).mean())


def max_consecutive_line_repeats(text: str, min_chars: int = 3) -> int:
    """Longest run of identical consecutive non-blank lines with at least `min_chars` characters."""
    best = run = 0
    prev = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue  # blank lines between repeats do not break a loop
        if len(line) >= min_chars and line == prev:
            run += 1
        else:
            run = 1 if len(line) >= min_chars else 0
        prev = line
        best = max(best, run)
    return best


def is_repetitive(
    text: str, threshold: float = REPETITION_THRESHOLD, max_line_repeats: int = MAX_LINE_REPEATS
) -> bool:
    """True if the text loops: repetition_score >= threshold or a line repeats >= max_line_repeats times."""
    return repetition_score(text) >= threshold or max_consecutive_line_repeats(text) >= max_line_repeats


def response_stats(
    lengths: Sequence[int | float] | None = None,
    finished: Sequence[bool] | None = None,
    texts: Sequence[str] | None = None,
) -> dict[str, float | dict]:
    """One dict for a report: length stats, truncated share, repetitive share (whatever is given)."""
    out: dict[str, float | dict] = {}
    if lengths is not None:
        out["length"] = length_stats(lengths)
    if finished is not None:
        out["truncated_share"] = truncation_rate(finished)
    if texts is not None:
        if len(texts) == 0:
            raise ValueError("no texts given")
        out["repetitive_share"] = sum(is_repetitive(t) for t in texts) / len(texts)
    return out


__all__ = [
    "pass_at_k",
    "pass_at_k_curve",
    "bootstrap_ci",
    "mean_pass1_over_runs",
    "RunsSummary",
    "paired_difference",
    "PairedDifference",
    "canonical_key",
    "Vote",
    "majority_votes",
    "cons_at_k",
    "cons_per_problem",
    "maj_at_k",
    "breakdown",
    "length_stats",
    "truncation_rate",
    "repetition_score",
    "max_consecutive_line_repeats",
    "is_repetitive",
    "response_stats",
]
