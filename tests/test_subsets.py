"""Tests for lib.subsets: each stage's subset from a hand-built tagged rollouts table.

Tables are built from lib.problems with chosen verdicts (no dependency on lib.rollouts):
`_table(verdicts)` gives every problem the rollouts listed in `verdicts` (True / False / None).
"""

import pandas as pd
import pytest

from lib.problems import generate
from lib.subsets import dpo_pairs, dpo_source, midtrain_subset, rl_pool, sft_subset


def _table(verdicts, n_problems=20, seed=0, levels=None, **cols):
    """One row per rollout; `verdicts` (a list, or a function of the problem index) sets `correct`.

    Texts are distinct per rollout; `length` grows with the sample index (10, 20, 30, ...);
    tags copy the generator's ground truth. Extra `cols` map a column to a function (i, k) -> value.
    """
    ps = generate(n_problems, seed=seed, levels=levels)
    rows = []
    for i, p in enumerate(ps):
        vs = verdicts(i) if callable(verdicts) else verdicts
        for k, v in enumerate(vs):
            row = {"problem_id": p.id, "problem": p.problem, "answer": p.answer, "domain": p.domain,
                   "level": p.level, "difficulty": p.difficulty, "sample_index": k,
                   "text": f"<think>{p.id} try {k}</think> \\boxed{{{p.answer if v else 0}}}",
                   "correct": v, "n_tokens": 10 * (k + 1), "finished": True, "length": 10 * (k + 1),
                   "tag_domain": p.domain, "tag_difficulty": p.difficulty, "repetitive": False}
            row.update({c: f(i, k) for c, f in cols.items()})
            rows.append(row)
    return pd.DataFrame(rows)


MIXED = [True, False, None, True, False, False, True, None]  # 3 correct, 3 incorrect, 2 unverifiable


# ----------------------------------------------------------------------------- stage 1

@pytest.mark.parametrize("verdicts,rows", [
    ([True] * 4, 80), ([False] * 4, 0), ([None] * 4, 0), (MIXED, 60), ([True], 20),
])
def test_midtrain_keeps_exactly_the_correct_rollouts(verdicts, rows):
    df = _table(verdicts)
    out, stats = midtrain_subset(df)
    assert len(out) == rows == stats["n_rows"]
    assert out["correct"].map(lambda v: v is True).all()
    assert stats["incorrect"] == 20 * verdicts.count(False) and stats["unverifiable"] == 20 * verdicts.count(None)


def test_midtrain_cap_filters_and_determinism():
    df = _table(MIXED, finished=lambda i, k: k != 0, repetitive=lambda i, k: k == 3)
    a, sa = midtrain_subset(df, max_per_problem=1, seed=1)
    b, _ = midtrain_subset(df, max_per_problem=1, seed=1)
    assert a.equals(b) and len(a) == 20 and sa["dropped_cap"] == 40
    assert a.groupby("problem_id").size().max() == 1
    f, sf = midtrain_subset(df, require_finished=True, exclude_repetitive=True)
    assert len(f) == 20 and sf["dropped_unfinished"] == 20 and sf["dropped_repetitive"] == 20
    assert (f["sample_index"] == 6).all()
    with pytest.raises(ValueError, match="max_per_problem"):
        midtrain_subset(df, max_per_problem=0)


def test_verdict_column_accepts_nan_and_rejects_junk():
    df = _table([True, False, None])
    df["correct"] = df["correct"].astype(object).where(df["correct"].notna(), float("nan"))
    assert len(midtrain_subset(df)[0]) == 20
    df.loc[0, "correct"] = "yes"
    with pytest.raises(ValueError, match="True/False/None"):
        midtrain_subset(df)


# ----------------------------------------------------------------------------- stage 2

def test_sft_balanced_over_difficulty_with_distinct_rollouts():
    df = _table([True, True, True, False], n_problems=80)  # 20 problems per level
    out, stats = sft_subset(df, n_problems=40, per_problem=2, seed=3)
    per_level = out.drop_duplicates("problem_id")["tag_difficulty"].value_counts()
    assert per_level.to_dict() == {"elementary": 10, "middle school": 10, "high school": 10, "college": 10}
    assert out.groupby("problem_id").size().eq(2).all()
    assert not out.duplicated(["problem_id", "text"]).any() and out["correct"].all()
    assert stats["shortfall"] == 0 and stats["short_groups"] == {}
    assert stats["by_difficulty"] == {"elementary": 20, "middle school": 20, "high school": 20, "college": 20}


def test_sft_short_level_gives_its_all_and_the_rest_is_spread():
    # college problems are all wrong: 0 eligible; high school has only 5 problems with a correct rollout
    ps = generate(80, seed=0)
    hs = [p.id for p in ps if p.level == 3][:5]

    def verdicts(i):
        p = ps[i]
        if p.level == 4 or (p.level == 3 and p.id not in hs):
            return [False, False]
        return [True, False]

    df = _table(verdicts, n_problems=80)
    out, stats = sft_subset(df, n_problems=41, seed=0)
    per_level = out["tag_difficulty"].value_counts().to_dict()
    assert per_level == {"elementary": 18, "middle school": 18, "high school": 5}  # 41 = 5 + 18 + 18
    assert stats["short_groups"] == {"high school": 5}
    big, bstats = sft_subset(df, n_problems=1000, seed=0)
    assert len(big) == 45 and bstats["shortfall"] == 955


def test_sft_filters_dedup_untagged_and_determinism():
    df = _table([True, True, True], n_problems=20,
                finished=lambda i, k: k != 0, repetitive=lambda i, k: k == 1)
    out, _ = sft_subset(df, n_problems=20, per_problem=3, seed=0)
    assert (out["sample_index"] == 2).all() and len(out) == 20  # the only finished, non-looping one
    loose, _ = sft_subset(df, n_problems=20, per_problem=3, require_finished=False, exclude_repetitive=False)
    assert len(loose) == 60
    dup = _table([True, True, True], n_problems=4)
    dup["text"] = dup["problem_id"] + "  same   text"  # identical up to whitespace
    assert len(sft_subset(dup, n_problems=4, per_problem=3)[0]) == 4
    df.loc[df["problem_id"] == df["problem_id"].iloc[0], "tag_difficulty"] = None
    a, sa = sft_subset(df, n_problems=8, seed=5)
    b, _ = sft_subset(df, n_problems=8, seed=5)
    c, _ = sft_subset(df, n_problems=8, seed=6)
    assert a.equals(b) and not a.equals(c) and sa["untagged_excluded"] == 1
    none, _ = sft_subset(df, n_problems=100, balance=None)
    assert none["problem_id"].nunique() == 20  # no balancing: untagged problems included
    dom, _ = sft_subset(df, n_problems=10, balance="domain")
    assert set(dom["tag_domain"].value_counts()) == {2}
    with pytest.raises(ValueError, match="balance"):
        sft_subset(df, n_problems=5, balance="length")


# ----------------------------------------------------------------------------- stage 3

def test_dpo_source_needs_both_and_never_uses_unverifiable():
    df = _table(lambda i: MIXED if i < 10 else ([True] * 3 if i < 15 else [None, False]))
    out, stats = dpo_source(df)
    assert out["problem_id"].nunique() == 10 and len(out) == 60
    assert out["correct"].map(lambda v: v in (True, False)).all()
    assert stats["problems_only_correct"] == 5 and stats["problems_only_incorrect"] == 5
    assert stats["unverifiable_rows_dropped"] == 20


@pytest.mark.parametrize("verdicts,reason", [
    ([True] * 3, "all 20 problems have only correct rollouts"),
    ([False] * 3, "all 20 problems have only incorrect rollouts"),
    ([None, None], "only unverifiable rollouts"),
    ([True, None], "all 20 problems have only correct rollouts"),  # None never counts as incorrect
    (lambda i: [True] if i % 2 else [False, None],
     "no problem has both a correct and an incorrect rollout (20 problems: 10 only correct, 10 only incorrect"),
    ([True], "only correct"),  # a single rollout per problem can never pair
])
def test_dpo_pairs_without_usable_pairs_says_why(verdicts, reason):
    df = _table(verdicts)
    empty, stats = dpo_source(df)
    assert empty.empty and reason.split("(")[0].strip() in stats["reason"]
    with pytest.raises(ValueError, match="no usable pairs") as e:
        dpo_pairs(df)
    assert reason in str(e.value)


def test_dpo_pairs_length_matching_and_distinct_pairs():
    # lengths: correct at 10, 40, 70 (k = 0, 3, 6); incorrect at 20, 50, 60 (k = 1, 4, 5)
    df = _table(MIXED, n_problems=4)
    pairs, stats = dpo_pairs(df, pairs_per_problem=1, length_match=True, seed=0)
    assert len(pairs) == 4 and list(pairs.columns[:8]) == [
        "prompt", "chosen", "rejected", "problem_id", "difficulty", "domain", "chosen_len", "rejected_len"]
    for _, r in pairs.iterrows():
        assert r.rejected_len == {10: 20, 40: 50, 70: 60}[r.chosen_len]
    many, _ = dpo_pairs(df, pairs_per_problem=20, length_match=True, seed=0)
    assert len(many) == 4 * 9  # 3 correct x 3 incorrect: every pair once, never more
    assert not many.duplicated(["problem_id", "chosen", "rejected"]).any()
    wrong_texts = set(df.loc[df["correct"].map(lambda v: v is False), "text"])
    assert set(many["rejected"]) <= wrong_texts  # never a None-verdict rollout
    three, _ = dpo_pairs(df, pairs_per_problem=3, seed=0)
    assert (three.groupby("problem_id")["rejected"].nunique() == 3).all()  # unused rejected first
    again, _ = dpo_pairs(df, pairs_per_problem=3, seed=0)
    assert three.equals(again)
    loose, ls = dpo_pairs(df, pairs_per_problem=1, length_match=False, seed=0)
    assert ls["mean_abs_length_gap"] >= stats["mean_abs_length_gap"]


# ----------------------------------------------------------------------------- stage 4

def test_rl_pool_prefers_unused_problems_and_reports_fill():
    df = _table(MIXED, n_problems=20)
    ids = sorted(df["problem_id"].unique())
    sft_ids = ids[:15]
    pool, stats = rl_pool(df, exclude_ids=sft_ids, n=5, seed=0)
    assert set(pool["problem_id"]) == set(ids[15:]) and stats["from_excluded"] == 0
    filled, fs = rl_pool(df, exclude_ids=sft_ids, n=8, seed=0)
    assert set(ids[15:]) <= set(filled["problem_id"]) and fs["from_excluded"] == 3 and len(filled) == 8
    assert filled["problem_id"].is_unique
    all_, s_all = rl_pool(df, exclude_ids=sft_ids)
    assert len(all_) == 5 and s_all["n_problems"] == 5
    over, so = rl_pool(df, n=50)
    assert len(over) == 20 and so["shortfall"] == 30
    for col in ("problem", "answer", "domain", "level", "difficulty", "teacher_pass_rate"):
        assert col in pool.columns
    assert pool["teacher_pass_rate"].eq(0.5).all()
    assert rl_pool(df, exclude_ids=sft_ids, n=8, seed=0)[0].equals(filled)
    assert not rl_pool(df, n=8, seed=1)[0].equals(rl_pool(df, n=8, seed=2)[0])


def test_rl_pool_drops_unverifiable_problems():
    df = _table(lambda i: [None, None] if i < 4 else [True, False])
    pool, stats = rl_pool(df)
    assert len(pool) == 16 and stats["dropped_unverifiable"] == 4
    kept, _ = rl_pool(df, require_verifiable=False)
    assert len(kept) == 20 and kept["teacher_pass_rate"].isna().sum() == 4


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("fn,kwargs,column", [
    (midtrain_subset, {}, "correct"),
    (midtrain_subset, {"require_finished": True}, "finished"),
    (sft_subset, {"n_problems": 5}, "finished"),
    (sft_subset, {"n_problems": 5}, "repetitive"),
    (sft_subset, {"n_problems": 5}, "tag_difficulty"),
    (sft_subset, {"n_problems": 5, "balance": "domain"}, "tag_domain"),
    (dpo_source, {}, "problem_id"),
    (dpo_pairs, {}, "length"),
    (dpo_pairs, {}, "text"),
    (rl_pool, {}, "answer"),
    (rl_pool, {}, "correct"),
])
def test_missing_column_names_function_and_column(fn, kwargs, column):
    df = _table([True, False]).drop(columns=column)
    with pytest.raises(ValueError, match=rf"{fn.__name__}: missing required column\(s\) '{column}'"):
        fn(df, **kwargs)
