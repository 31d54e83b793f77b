"""Tests for lib.decontamination: word n-grams, planted copies, thresholds, real benchmark files."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from lib.decontamination import Decontaminator, ngrams, normalize_words
from lib.problems import generate

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


# ----------------------------------------------------------------------------- n-grams

@pytest.mark.parametrize("text,words", [
    ("Every morning Aya goes for a $9$-kilometer-long walk.",
     ["every", "morning", "aya", "goes", "for", "a", "9", "-", "kilometer", "-", "long", "walk"]),
    ("Solve for x: 8x - 28 = 60.", ["solve", "for", "x", "8x", "-", "28", "=", "60"]),
    ("  What IS $\\frac{1}{2}$?? ", ["what", "is", "frac", "1", "2"]),
    ("", []),
])
def test_normalize_words(text, words):
    assert normalize_words(text) == words


def test_ngrams_short_text_is_one_gram():
    assert ngrams("a b c d", 2) == {("a", "b"), ("b", "c"), ("c", "d")}
    assert ngrams("A, b!", 13) == {("a", "b")}
    assert ngrams("", 13) == set()
    with pytest.raises(ValueError):
        ngrams("a", 0)


# ----------------------------------------------------------------------------- decontamination

EVAL = {
    "bench": [
        "Every morning Aya goes for a 9-kilometer-long walk and stops at a coffee shop afterwards. When she "
        "walks at a constant speed of s kilometers per hour, the walk takes her 4 hours, including t minutes "
        "spent in the coffee shop.",
        "Find the sum of all integer bases b > 9 for which 17_b is a divisor of 97_b.",
    ],
}


@pytest.mark.parametrize("text,hit", [
    (EVAL["bench"][0], True),                                                       # verbatim
    (EVAL["bench"][0].upper().replace(",", " ;"), True),                            # case / punctuation
    (EVAL["bench"][0].replace("Aya", "Maya").replace("4 hours", "5 hours"), True),  # small edits
    ("Prefix text. " + EVAL["bench"][0] + " Then answer in minutes.", True),        # embedded
    ("find the sum of all integer bases b>9 for which 17_b is a divisor of 97_b", True),  # short: exact
    ("Find the sum of all integer bases b > 8 for which 17_b is a divisor of 97_b.", False),  # other number
    ("Every morning Bob runs. When he runs at a constant speed, the run takes him an hour.", False),
    ("Find the greatest common divisor of 84 and 36.", False),
])
def test_planted_overlap(text, hit):
    d = Decontaminator(EVAL)
    assert d.contaminated(text) == (["bench"] if hit else [])


def test_thresholds_per_set_and_reordered():
    syn = ["Find the greatest common divisor of 84 and 36.", "A box is 2 by 3 by 4. What is its surface area?"]
    d = Decontaminator({"bench": EVAL["bench"], "synthetic": syn}, n=4,
                       threshold={"bench": 0.0, "synthetic": 1.0})
    assert d.contaminated("find the greatest common divisor of 84 and 36") == ["synthetic"]
    assert d.contaminated("Find the greatest common divisor of 84 and 38.") == []  # 5 of 6 4-grams: < 1.0
    assert d.contaminated("Find the greatest common divisor of 36 and 84.") == []
    r = Decontaminator({"synthetic": syn}, n=4, threshold=1.0, match_reordered=True)
    m = r.matches("Find the greatest common divisor of 36 and 84.")
    assert [(x.eval_set, x.eval_id, x.reordered) for x in m] == [("synthetic", "0", True)]
    assert r.contaminated("A box is 4 by 2 by 3. What is its surface area?") == ["synthetic"]
    with pytest.raises(ValueError, match="missing"):
        Decontaminator({"a": ["x"], "b": ["y"]}, threshold={"a": 0.0})
    with pytest.raises(ValueError, match="threshold"):
        Decontaminator({"a": ["x"]}, threshold=1.5)
    with pytest.raises(ValueError, match="empty"):
        Decontaminator({})


def test_decontaminate_dataframe_report():
    train = [p.problem for p in generate(40, seed=2)]
    planted = EVAL["bench"][0].replace("coffee shop afterwards", "cafe afterwards")
    df = pd.DataFrame({"problem": train[:20] + [planted, planted] + train[20:], "k": range(42)})
    clean, removed, report = Decontaminator(EVAL).decontaminate(df)
    assert len(clean) == 40 and len(removed) == 2
    assert removed["contaminated_with"].tolist() == ["bench", "bench"]
    assert removed["match_id"].tolist() == ["0", "0"] and (removed["overlap"] > 0).all()
    assert report["removed_rows"] == 2 and report["removed_texts"] == 1 and report["per_eval_set"] == {"bench": 1}
    assert clean["k"].tolist() == list(range(20)) + list(range(22, 42))  # order kept
    with pytest.raises(ValueError, match="decontaminate"):
        Decontaminator(EVAL).decontaminate(df, text_col="question")


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason=f"benchmark folder absent: {BENCHMARKS}")
def test_real_benchmarks_planted_math500_problem_is_removed():
    files = sorted(BENCHMARKS.glob("*.jsonl"))
    d = Decontaminator.from_jsonl(files)
    assert "math500" in d.sets
    math500 = [json.loads(line) for line in (BENCHMARKS / "math500.jsonl").read_text().splitlines()]
    gsm = [json.loads(line) for line in (BENCHMARKS / "gsm8k_test.jsonl").read_text().splitlines()]
    target = max(math500[:50], key=lambda r: len(r["problem"]))  # a long one, so edits leave 13-grams
    words = target["problem"].split()
    words[len(words) // 2] = "banana"  # one edited word in the middle
    planted_math = " ".join(words).upper()
    planted_gsm = gsm[7]["problem"].replace("  ", " ")
    train = [p.problem for p in generate(2000, seed=5)]
    df = pd.DataFrame({"problem": train[:1000] + [planted_math] + train[1000:] + [planted_gsm]})
    t0 = time.perf_counter()
    clean, removed, report = d.decontaminate(df)
    assert time.perf_counter() - t0 < 10
    assert removed["problem"].tolist() == [planted_math, planted_gsm]
    assert removed["contaminated_with"].tolist() == ["math500", "gsm8k_test"]
    assert removed["match_id"].tolist() == [target["id"], gsm[7]["id"]]
    assert report["per_eval_set"]["math500"] == 1 and report["per_eval_set"]["gsm8k_test"] == 1
    assert len(clean) == 2000
