"""Each training stage draws its own subset of the tagged rollouts (Xu et al. 2025, arXiv 2504.21233).

Input: the rollouts table (one row per teacher rollout, ~8 per problem; ``lib.rollouts``) after
``lib.tagging.tag_rollouts`` has added ``tag_domain``, ``tag_difficulty``, ``repetitive``,
``length``. Every function returns ``(subset, stats)``: a DataFrame and a small JSON-able dict
(sizes, counts by difficulty and domain, what was dropped and why), deterministic for a seed.

==================  ===========================================================================
stage               rule (Xu et al. 2025)
==================  ===========================================================================
1 mid-training      :func:`midtrain_subset`: every verified-correct rollout (the bulk distillation
                    set), optionally capped per problem.
2 SFT               :func:`sft_subset`: a compact subset: correct, finished, not repetitive,
                    balanced over difficulty (or domain), up to ``per_problem`` distinct rollouts.
3 rollout DPO       :func:`dpo_source` (problems with a correct AND an incorrect rollout) and
                    :func:`dpo_pairs` (chosen = correct, rejected = incorrect, optionally matched
                    in length).
4 RL                :func:`rl_pool`: prompts with their reference answers, preferring problems the
                    SFT stage did not use.
==================  ===========================================================================

Verdicts: ``correct`` is True, False or None (``lib.verify``: None = "cannot verify", e.g. the
reference does not parse or the check timed out). Only ``correct == True`` counts as correct and
only ``correct == False`` as incorrect; an unverifiable rollout is never chosen, never rejected,
never counted as either (a None read as wrong would teach DPO to push away correct answers).
Missing values (None, NaN, pandas NA) all mean unverifiable.

Difficulty and domain come from the tag columns by default (``difficulty_col="tag_difficulty"``,
``domain_col="tag_domain"``); pass ``difficulty_col="difficulty"`` to use the source's labels.
A function given a table without a column it needs raises ValueError naming the function and
the column.
"""

from __future__ import annotations

import random
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from lib.tagging import DIFFICULTIES, TAG_DOMAINS

DIFFICULTY_COL = "tag_difficulty"
DOMAIN_COL = "tag_domain"
NONE_LABEL = "(none)"  # how an untagged row is counted in stats


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _require(df: pd.DataFrame, cols: Iterable[str], fn: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{fn}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in dict.fromkeys(cols) if c not in df.columns]
    if missing:
        raise ValueError(f"{fn}: missing required column(s) {', '.join(map(repr, missing))}; "
                         f"columns present: {', '.join(map(str, df.columns))}")


def _flag(series: pd.Series, value: bool) -> np.ndarray:
    """Boolean mask of rows whose value is exactly True (``value=True``) or exactly False.

    None / NaN / pd.NA are neither; numpy bools count as bools; anything else raises.
    """
    out = np.zeros(len(series), dtype=bool)
    for i, v in enumerate(series.to_numpy(dtype=object)):
        if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, (bool, np.bool_)):
            out[i] = bool(v) is value
        elif isinstance(v, (int, np.integer)) and v in (0, 1):  # 0/1 from some storage layers
            out[i] = bool(v) is value
        else:
            raise ValueError(f"column {series.name!r}: expected True/False/None, found {v!r}")
    return out


def is_correct(df: pd.DataFrame) -> np.ndarray:
    """Rows verified correct (``correct`` is True)."""
    return _flag(df["correct"], True)


def is_incorrect(df: pd.DataFrame) -> np.ndarray:
    """Rows verified incorrect (``correct`` is False); unverifiable (None) rows are not."""
    return _flag(df["correct"], False)


def _order(labels: Iterable, canonical: Sequence[str]) -> list:
    labels = list(dict.fromkeys(labels))
    return [c for c in canonical if c in labels] + sorted((x for x in labels if x not in canonical), key=str)


def _counts(values: pd.Series, canonical: Sequence[str]) -> dict[str, int]:
    vc = values.astype(object).where(values.notna(), NONE_LABEL).value_counts()
    return {str(k): int(vc[k]) for k in _order(vc.index, canonical)}


def _describe(df: pd.DataFrame, difficulty_col: str | None, domain_col: str | None) -> dict:
    """Rows, problems, and per-row counts by difficulty and domain (where the columns exist)."""
    out = {"n_rows": int(len(df)), "n_problems": int(df["problem_id"].nunique()) if "problem_id" in df else None}
    if difficulty_col and difficulty_col in df.columns:
        out["by_difficulty"] = _counts(df[difficulty_col], DIFFICULTIES)
    if domain_col and domain_col in df.columns:
        out["by_domain"] = _counts(df[domain_col], TAG_DOMAINS)
    return out


class EmptySubsetError(ValueError):
    """A subset came out empty: names the filter that emptied it and the parameter to change."""


def _step(filters: list, name: str, before: int, after: int, param: str) -> None:
    """Record one filter's row counts (``stats["filters"]``): what it kept, and what to change if it kept nothing."""
    filters.append({"filter": name, "before": int(before), "after": int(after), "param": param})


def check_nonempty(subset: str, df: pd.DataFrame, stats: dict, allow_empty: Iterable[str] = ()) -> None:
    """Raise :class:`EmptySubsetError` if ``subset`` is empty and not listed in ``allow_empty``
    (params ``subsets.allow_empty``), naming the first filter that left nothing, its counts, and
    the parameter to change. ``stats`` is the subset function's (its ``filters`` list)."""
    if len(df) or subset in set(allow_empty):
        return
    steps = stats.get("filters", [])
    culprit = next((f for f in steps if f["after"] == 0), None)
    trail = " -> ".join(f"{f['filter']} {f['before']}->{f['after']}" for f in steps)
    if culprit is None:
        why = "its input was empty"
    elif culprit["before"] == 0:
        why = f"its input was already empty before the filter '{culprit['filter']}'"
    else:
        why = f"the filter '{culprit['filter']}' kept none of {culprit['before']} rows"
    hint = f"; change {culprit['param']}" if culprit and culprit.get("param") else ""
    raise EmptySubsetError(f"subset '{subset}' is empty: {why}{hint} (counts: {trail or 'none'}). "
                           f"If an empty '{subset}' is expected, add it to subsets.allow_empty.")


def _rng(seed: int, *parts) -> random.Random:
    """A stream per (seed, purpose): str seeds hash through sha512, identical in every process."""
    return random.Random("/".join(map(str, (seed, *parts))))


def _text_key(v) -> str:
    return " ".join(str(v).split())  # rollouts differing only in whitespace are the same rollout


# ---------------------------------------------------------------------------------------------
# Stage 1: mid-training
# ---------------------------------------------------------------------------------------------

def midtrain_subset(df: pd.DataFrame, max_per_problem: int | None = None, require_finished: bool = False,
                    exclude_repetitive: bool = False, seed: int = 0, difficulty_col: str = DIFFICULTY_COL,
                    domain_col: str = DOMAIN_COL) -> tuple[pd.DataFrame, dict]:
    """All verified-correct rollouts: the paper's bulk distillation set for mid-training.

    ``max_per_problem`` caps the rollouts kept per problem (a seeded random choice; None = all).
    The paper keeps every correct rollout, so the two quality filters are off by default.
    Rows keep their input order.
    """
    fn = "midtrain_subset"
    _require(df, ["problem_id", "correct", "text"] + (["finished"] if require_finished else [])
             + (["repetitive"] if exclude_repetitive else []), fn)
    if max_per_problem is not None and max_per_problem < 1:
        raise ValueError(f"{fn}: max_per_problem must be >= 1 or None, got {max_per_problem}")
    df = df.reset_index(drop=True)
    keep = is_correct(df)
    filters: list = []
    _step(filters, "verified correct", len(df), keep.sum(), "teacher.kind / teacher.error_rate (every rollout was wrong or unverifiable)")
    stats = {"input_rows": int(len(df)), "incorrect": int(is_incorrect(df).sum()),
             "unverifiable": int(len(df) - keep.sum() - is_incorrect(df).sum()), "filters": filters}
    if require_finished:
        unfinished = keep & ~_flag(df["finished"], True)
        stats["dropped_unfinished"] = int(unfinished.sum())
        _step(filters, "finished", keep.sum(), (keep & ~unfinished).sum(), "require_finished")
        keep &= ~unfinished
    if exclude_repetitive:
        rep = keep & _flag(df["repetitive"], True)
        stats["dropped_repetitive"] = int(rep.sum())
        _step(filters, "not repetitive", keep.sum(), (keep & ~rep).sum(), "exclude_repetitive")
        keep &= ~rep
    out = df[keep]
    if max_per_problem is not None:
        rng = _rng(seed, "midtrain")
        chosen: list = []
        for _, g in out.groupby("problem_id", sort=True):
            idx = list(g.index)
            chosen += idx if len(idx) <= max_per_problem else rng.sample(idx, max_per_problem)
        stats["dropped_cap"] = int(len(out) - len(chosen))
        _step(filters, "max_per_problem cap", len(out), len(chosen), "subsets.midtrain_max_per_problem")
        out = out.loc[sorted(chosen)]
    return out.reset_index(drop=True), {**_describe(out, difficulty_col, domain_col), **stats}


# ---------------------------------------------------------------------------------------------
# Stage 2: SFT
# ---------------------------------------------------------------------------------------------

def _balanced_quotas(available: dict, total: int) -> dict:
    """Equal shares of ``total`` over groups; a group with fewer than its share gives it all and
    the shortfall is spread over the others (water-filling). Leftover units go to groups in order."""
    quotas = {g: 0 for g in available}
    open_groups = [g for g in available if available[g] > 0]
    left = total
    while left > 0 and open_groups:
        share, extra = divmod(left, len(open_groups))
        if share == 0:  # fewer units than groups: one each to the first `extra` groups
            for g in open_groups[:extra]:
                quotas[g] += 1
            break
        still_open = []
        for g in open_groups:
            give = min(share, available[g] - quotas[g])
            quotas[g] += give
            left -= give
            if quotas[g] < available[g]:
                still_open.append(g)
        open_groups = still_open
    return quotas


def sft_subset(df: pd.DataFrame, n_problems: int, per_problem: int = 1, require_finished: bool = True,
               exclude_repetitive: bool = True, balance: str | None = "difficulty", seed: int = 0,
               difficulty_col: str = DIFFICULTY_COL, domain_col: str = DOMAIN_COL) -> tuple[pd.DataFrame, dict]:
    """A compact, high-quality, representative subset for SFT (the paper, stage 2).

    1. Eligible rollouts: ``correct`` is True, and (by default) ``finished`` is True and
       ``repetitive`` is not True.
    2. ``n_problems`` problems with at least one eligible rollout are drawn (seeded).
       ``balance="difficulty"`` (or ``"domain"``) gives each level present an equal share; a
       level with fewer eligible problems than its share gives all it has and the shortfall is
       spread evenly over the other levels (reported in ``stats["short_groups"]``). Problems whose
       label is missing (tagger failed) are left out of a balanced draw and counted
       (``stats["untagged_excluded"]``). ``balance=None``: a uniform draw from all eligible problems.
       If fewer than ``n_problems`` are eligible, all are taken (``stats["shortfall"]`` > 0).
    3. Per problem, up to ``per_problem`` rollouts with distinct texts (seeded choice).

    Rows come out grouped by problem in the order drawn.
    """
    fn = "sft_subset"
    group_col = {"difficulty": difficulty_col, "domain": domain_col, None: None}.get(balance, "?")
    if group_col == "?":
        raise ValueError(f"{fn}: balance must be 'difficulty', 'domain' or None, got {balance!r}")
    _require(df, ["problem_id", "correct", "text"] + (["finished"] if require_finished else [])
             + (["repetitive"] if exclude_repetitive else []) + ([group_col] if group_col else []), fn)
    if n_problems < 1:
        raise ValueError(f"{fn}: n_problems must be >= 1, got {n_problems}")
    if per_problem < 1:
        raise ValueError(f"{fn}: per_problem must be >= 1, got {per_problem}")

    df = df.reset_index(drop=True)
    filters: list = []
    ok = is_correct(df)
    _step(filters, "verified correct", len(df), ok.sum(), "teacher.kind / teacher.error_rate (every rollout was wrong or unverifiable)")
    if require_finished:
        before = ok.sum()
        ok &= _flag(df["finished"], True)
        _step(filters, "finished", before, ok.sum(), "teacher.max_tokens (every correct rollout was cut off)")
    if exclude_repetitive:
        before = ok.sum()
        ok &= ~_flag(df["repetitive"], True)
        _step(filters, "not repetitive", before, ok.sum(), "the repetition tagger (tagging.*)")
    eligible = df[ok]
    stats: dict = {"input_rows": int(len(df)), "input_problems": int(df["problem_id"].nunique()),
                   "eligible_rows": int(len(eligible)), "eligible_problems": int(eligible["problem_id"].nunique()),
                   "requested_problems": int(n_problems), "balance": balance, "filters": filters}

    # one label per problem (its first eligible row's), problems in sorted-id order before shuffling
    first = eligible.drop_duplicates("problem_id").sort_values("problem_id", kind="stable")
    rng = _rng(seed, "sft")
    if group_col:
        labels = first[group_col]
        untagged = first[labels.isna()]
        first = first[labels.notna()]
        stats["untagged_excluded"] = int(len(untagged))
        _step(filters, f"has a {balance} tag", int(ok.sum()),
              int(eligible["problem_id"].isin(first["problem_id"]).sum()),
              "subsets.sft_balance (the tagger labelled no eligible problem; 'none' draws without labels)")
        groups = {g: list(first.loc[first[group_col] == g, "problem_id"]) for g in
                  _order(first[group_col], DIFFICULTIES if balance == "difficulty" else TAG_DOMAINS)}
        quotas = _balanced_quotas({g: len(ids) for g, ids in groups.items()}, n_problems)
        even = n_problems // max(len(groups), 1)
        stats["short_groups"] = {str(g): len(ids) for g, ids in groups.items() if len(ids) < even}
        picked: list = []
        for g, ids in groups.items():
            picked += rng.sample(ids, quotas[g])
        rng.shuffle(picked)
    else:
        ids = list(first["problem_id"])
        picked = rng.sample(ids, min(n_problems, len(ids)))
    stats["shortfall"] = int(n_problems - len(picked))

    parts = []
    by_problem = {pid: g for pid, g in eligible.groupby("problem_id", sort=False)}
    for pid in picked:
        g = by_problem[pid]
        distinct = g.loc[~g["text"].map(_text_key).duplicated()]
        idx = list(distinct.index)
        take = idx if len(idx) <= per_problem else rng.sample(idx, per_problem)
        parts.append(g.loc[take])
    out = (pd.concat(parts) if parts else eligible.iloc[:0]).reset_index(drop=True)
    _step(filters, "draw of n_problems x per_problem", filters[-1]["after"], len(out),
          "subsets.sft_n_problems / subsets.sft_per_problem")
    return out, {**_describe(out, difficulty_col, domain_col), **stats}


# ---------------------------------------------------------------------------------------------
# Stage 3: rollout DPO
# ---------------------------------------------------------------------------------------------

def _problem_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """Per problem: number of correct, incorrect and unverifiable rollouts."""
    t = pd.DataFrame({"problem_id": df["problem_id"].to_numpy(), "c": is_correct(df), "w": is_incorrect(df)})
    g = t.groupby("problem_id", sort=True).agg(correct=("c", "sum"), incorrect=("w", "sum"), total=("c", "size"))
    g["unverifiable"] = g["total"] - g["correct"] - g["incorrect"]
    return g


def _no_pairs_reason(kinds: pd.DataFrame) -> str:
    n = len(kinds)
    if n == 0:
        return "the table has no rollouts"
    only_c = int(((kinds.correct > 0) & (kinds.incorrect == 0)).sum())
    only_w = int(((kinds.correct == 0) & (kinds.incorrect > 0)).sum())
    neither = int(((kinds.correct == 0) & (kinds.incorrect == 0)).sum())
    if only_c == n:
        return f"all {n} problems have only correct rollouts (no rejected candidate)"
    if only_w == n:
        return f"all {n} problems have only incorrect rollouts (no chosen candidate)"
    if neither == n:
        return f"all {n} problems have only unverifiable rollouts (correct is None; never used as rejected)"
    return (f"no problem has both a correct and an incorrect rollout ({n} problems: {only_c} only correct, "
            f"{only_w} only incorrect, {neither} without a verified rollout)")


def dpo_source(df: pd.DataFrame, difficulty_col: str = DIFFICULTY_COL,
               domain_col: str = DOMAIN_COL) -> tuple[pd.DataFrame, dict]:
    """Rollouts of problems having at least one correct AND one incorrect rollout (the paper, stage 3).

    Only verified rows are returned (correct is True or False): an unverifiable rollout is never
    a rejected candidate, since a None may well be a correct answer the checker could not parse.
    An empty result is not an error here (``stats["reason"]`` says why); :func:`dpo_pairs` raises.
    """
    _require(df, ["problem_id", "correct"], "dpo_source")
    df = df.reset_index(drop=True)
    kinds = _problem_kinds(df)
    both = kinds[(kinds.correct > 0) & (kinds.incorrect > 0)].index
    verified = is_correct(df) | is_incorrect(df)
    out = df[verified & df["problem_id"].isin(both).to_numpy()].reset_index(drop=True)
    stats = {**_describe(out, difficulty_col, domain_col),
             "input_problems": int(len(kinds)),
             "problems_only_correct": int(((kinds.correct > 0) & (kinds.incorrect == 0)).sum()),
             "problems_only_incorrect": int(((kinds.correct == 0) & (kinds.incorrect > 0)).sum()),
             "problems_unverifiable_only": int(((kinds.correct == 0) & (kinds.incorrect == 0)).sum()),
             "unverifiable_rows_dropped": int((df["problem_id"].isin(both).to_numpy() & ~verified).sum())}
    in_both = int(df["problem_id"].isin(both).sum())
    stats["filters"] = []
    _step(stats["filters"], "problem has a correct and an incorrect rollout", len(df), in_both,
          "teacher.error_rate / teacher.n_rollouts (no problem got both a right and a wrong answer)")
    _step(stats["filters"], "verified (correct is not None)", in_both, len(out), "verify.* (every verdict was 'cannot verify')")
    if out.empty:
        stats["reason"] = _no_pairs_reason(kinds)
    return out, stats


def dpo_pairs(df: pd.DataFrame, pairs_per_problem: int = 1, length_match: bool = True, seed: int = 0,
              length_col: str = "length", difficulty_col: str = DIFFICULTY_COL,
              domain_col: str = DOMAIN_COL) -> tuple[pd.DataFrame, dict]:
    """Preference pairs from the rollouts: chosen = a correct rollout, rejected = an incorrect one.

    Per problem (from :func:`dpo_source`), up to ``pairs_per_problem`` distinct (chosen, rejected)
    pairs: chosen rollouts are taken in a seeded random order, cycling when there are fewer than
    the pairs asked; each chosen is paired with an incorrect rollout it has not been paired with,
    preferring incorrect rollouts not used yet, and among those (``length_match=True``) the one
    closest in ``length_col`` to the chosen (ties: seeded order), else the next in seeded order.
    Length matching keeps DPO from learning "shorter/longer is better" instead of "correct is
    better". Returns ``prompt, chosen, rejected, problem_id, difficulty, domain, chosen_len,
    rejected_len`` (``difficulty``/``domain`` from ``difficulty_col``/``domain_col``, None where
    absent). Raises ValueError when no problem yields a pair, saying why.
    """
    fn = "dpo_pairs"
    _require(df, ["problem_id", "problem", "text", "correct", length_col], fn)
    if pairs_per_problem < 1:
        raise ValueError(f"{fn}: pairs_per_problem must be >= 1, got {pairs_per_problem}")
    source, src_stats = dpo_source(df, difficulty_col, domain_col)
    if source.empty:
        raise ValueError(f"{fn}: no usable pairs: {src_stats['reason']}")
    rng = _rng(seed, "dpo")
    rows = []
    for pid, g in source.groupby("problem_id", sort=True):
        good = g[is_correct(g)]
        bad = g[is_incorrect(g)]
        C = list(good.index)
        R = list(bad.index)
        rng.shuffle(C)
        rng.shuffle(R)
        rank = {r: i for i, r in enumerate(R)}
        use_count = {r: 0 for r in R}
        paired: set = set()
        for k in range(min(pairs_per_problem, len(C) * len(R))):
            c = C[k % len(C)]
            cands = [r for r in R if (c, r) not in paired]
            least = min(use_count[r] for r in cands)
            cands = [r for r in cands if use_count[r] == least]
            if length_match:
                c_len = float(g.at[c, length_col])
                r = min(cands, key=lambda r: (abs(float(g.at[r, length_col]) - c_len), rank[r]))
            else:
                r = cands[0]
            paired.add((c, r))
            use_count[r] += 1
            rows.append({
                "prompt": g.at[c, "problem"], "chosen": g.at[c, "text"], "rejected": g.at[r, "text"],
                "problem_id": pid,
                "difficulty": g.at[c, difficulty_col] if difficulty_col in g.columns else None,
                "domain": g.at[c, domain_col] if domain_col in g.columns else None,
                "chosen_len": g.at[c, length_col], "rejected_len": g.at[r, length_col],
            })
    pairs = pd.DataFrame(rows)
    gap = (pairs["chosen_len"].astype(float) - pairs["rejected_len"].astype(float)).abs()
    stats = {"n_pairs": int(len(pairs)), "n_problems": int(pairs["problem_id"].nunique()),
             "pairs_per_problem": int(pairs_per_problem), "length_match": bool(length_match),
             "mean_abs_length_gap": float(gap.mean()),
             "mean_chosen_len": float(pairs["chosen_len"].astype(float).mean()),
             "mean_rejected_len": float(pairs["rejected_len"].astype(float).mean()),
             "by_difficulty": _counts(pairs["difficulty"], DIFFICULTIES),
             "by_domain": _counts(pairs["domain"], TAG_DOMAINS),
             "source": src_stats}
    return pairs, stats


# ---------------------------------------------------------------------------------------------
# Stage 4: RL prompt pool
# ---------------------------------------------------------------------------------------------

def rl_pool(df: pd.DataFrame, exclude_ids: Iterable = (), n: int | None = None, seed: int = 0,
            require_verifiable: bool = True, difficulty_col: str = DIFFICULTY_COL,
            domain_col: str = DOMAIN_COL) -> tuple[pd.DataFrame, dict]:
    """RL prompts: one row per problem with its reference answer (the paper, stage 4).

    Problems in ``exclude_ids`` (those used for SFT) are used only when the others run short:
    ``n`` problems are drawn (seeded) from the rest first, then filled from the excluded ones
    (``stats["from_excluded"]``); ``n=None`` takes every problem that is not excluded.
    ``require_verifiable`` drops problems none of whose rollouts could be verified (all
    ``correct`` None): their reference answer is likely not checkable, so every RL reward would
    be "cannot verify". Columns: ``problem_id, problem, answer``, then ``domain, level,
    difficulty, tag_domain, tag_difficulty`` where present, and ``teacher_pass_rate`` (share of the
    problem's verified rollouts that are correct; NaN if none; for reporting: the paper's
    "drop prompts with pass rate > 50%" filter uses the policy's own samples, not the teacher's).
    """
    fn = "rl_pool"
    _require(df, ["problem_id", "problem", "answer"] + (["correct"] if require_verifiable else []), fn)
    if n is not None and n < 1:
        raise ValueError(f"{fn}: n must be >= 1 or None, got {n}")
    exclude = set(exclude_ids)
    extra = [c for c in ("domain", "level", "difficulty", domain_col, difficulty_col) if c in df.columns]
    cols = list(dict.fromkeys(["problem_id", "problem", "answer"] + extra))
    problems = (df.drop_duplicates("problem_id")[cols].sort_values("problem_id", kind="stable")
                .reset_index(drop=True))
    filters: list = []
    stats: dict = {"input_problems": int(len(problems)), "excluded_requested": int(len(exclude)), "filters": filters}
    if "correct" in df.columns:
        kinds = _problem_kinds(df)
        verified = (kinds.correct + kinds.incorrect).reindex(problems["problem_id"]).to_numpy()
        n_correct = kinds.correct.reindex(problems["problem_id"]).to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            problems["teacher_pass_rate"] = np.where(verified > 0, n_correct / np.maximum(verified, 1), np.nan)
        if require_verifiable:
            ok = verified > 0
            stats["dropped_unverifiable"] = int((~ok).sum())
            _step(filters, "verifiable (a rollout was verified)", len(problems), ok.sum(),
                  "verify.* (no rollout of any problem could be verified)")
            problems = problems[ok].reset_index(drop=True)
    is_excl = problems["problem_id"].isin(exclude).to_numpy()
    fresh = list(problems.index[~is_excl])
    used = list(problems.index[is_excl])
    rng = _rng(seed, "rl")
    rng.shuffle(fresh)
    rng.shuffle(used)
    if n is None:
        take = fresh
    else:
        take = fresh[:n] + used[:max(0, n - len(fresh))]
    out = problems.loc[take].reset_index(drop=True)
    _step(filters, "draw of n (problems not used for SFT first)", len(problems), len(out), "subsets.rl_n_problems")
    stats.update({"n_problems": int(len(out)), "requested": n, "available_not_excluded": int(len(fresh)),
                  "from_excluded": int(max(0, len(take) - len(fresh))) if n is not None else 0,
                  "shortfall": int(max(0, n - len(take))) if n is not None else 0})
    for key, col, canon in (("by_difficulty", difficulty_col, DIFFICULTIES), ("by_domain", domain_col, TAG_DOMAINS)):
        if col in out.columns:
            stats[key] = _counts(out[col], canon)
    return out, stats


__all__ = ["DIFFICULTY_COL", "DOMAIN_COL", "EmptySubsetError", "check_nonempty", "is_correct", "is_incorrect", "midtrain_subset", "sft_subset",
           "dpo_source", "dpo_pairs", "rl_pool"]
