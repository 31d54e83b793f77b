"""Tests for lib.tagging: rule tagger vs the generator's ground truth, LLM tagger parsing and
failure counting, tag_rollouts."""

from pathlib import Path

import pandas as pd
import pytest

from lib.problems import generate
from lib.tagging import (DIFFICULTIES, TAG_DOMAINS, TAG_PROMPT, LLMTagger, RuleTagger, TagParseError, Tags,
                         canonical_difficulty, canonical_domain, fallback_domain, parse_tag_reply, tag_rollouts,
                         tag_summary, tagger_accuracy)

BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"


# ----------------------------------------------------------------------------- rule tagger

@pytest.mark.parametrize("split", ["train", "test"])
def test_rule_tagger_accuracy_on_generated_problems(split):
    # measured: 1.000 / 1.000 on 500 problems of each split (and on 8000 train); floors leave
    # room for a new problem form that the rules do not know yet
    r = tagger_accuracy(RuleTagger(), generate(500, seed=0, split=split))
    assert r["n"] == 500
    assert r["domain_accuracy"] >= 0.99, r["domain_confusion"]
    assert r["difficulty_accuracy"] >= 0.99, r["difficulty_confusion"]
    assert r["untagged"] == 0
    assert "fallback" not in r["rules"]
    assert isinstance(r["difficulty_confusion"], pd.DataFrame)
    assert list(r["difficulty_confusion"].index) == list(DIFFICULTIES[:4])


@pytest.mark.parametrize("text,domain,difficulty,rule", [
    ("Start with 7. Add 2, then add 3. What is the result?", "arithmetic", "elementary", "arith_chain"),
    ("Start with 43. Subtract 22, divide by 7, add 20, multiply by 3, then divide by 3. What is the result?",
     "arithmetic", "college", "arith_chain"),
    ("Solve for x: 2x + 5 = 7.", "algebra", "elementary", "alg_linear"),
    ("Solve for x: 6x - 7 = 2x - 11.", "algebra", "middle school", "alg_linear"),
    ("Solve for x and y: y = 2x + 1 and 6x + y = -23.", "algebra", "high school", "alg_substitute"),
    ("Solve for x and y: x + y = 0 and 6x + 3y = -6.", "algebra", "college", "alg_system"),
    ("What is the remainder when 8 * 3 is divided by 13?", "number_theory", "elementary", "nt_remainder"),
    ("What is the remainder when 8 * 3 * 3 * 5 * 4 is divided by 11?", "number_theory", "college", "nt_remainder"),
    ("In how many ways can 2 people be chosen from a group of 12?", "counting_probability", "elementary",
     "count_choose2"),
    ("A bag has 1 red, 3 blue and 1 green balls. One ball is drawn at random. What is the probability that "
     "it is red?", "counting_probability", "middle school", "prob_one"),
    ("A bag has 4 blue and 8 red balls. Two are drawn without replacement. What is the probability that they "
     "have the same color?", "counting_probability", "college", "prob_same_diff"),
    ("A right triangle has legs 6 and 8. What is its area?", "geometry", "middle school", "geom_right_area"),
    ("A right triangle has legs 6 and 8. What is its perimeter?", "geometry", "college", "geom_pythagoras"),
    ("A garden is a 6 by 8 rectangle, a square of side 3 and a right triangle with legs 4 and 7. What is its "
     "total area?", "geometry", "college", "geom_garden"),
    ("A square of side 4 and an 8 by 9 rectangle are put side by side. What is their total area?", "geometry",
     "middle school", "geom_square_rect"),
    ("A pizza has one of 3 crusts, 2 sauces and 5 toppings. How many pizzas are possible?",
     "counting_probability", "elementary", "count_product"),
    ("A trapezoid has parallel sides 3 and 5 and height 4. What is its area?", "geometry", "high school",
     "geom_trapezoid"),
    # text no rule knows: keyword fallback
    ("Compute the derivative of f(x) = x^3 at x = 2.", "calculus", None, "fallback"),
    ("What is the probability of rolling two sixes with two dice?", "counting_probability", None, "fallback"),
    ("Find the greatest common divisor of 84 and 36.", "number_theory", None, "fallback"),
    ("Hello there.", "other", None, "fallback"),
])
def test_rule_tagger_cases(text, domain, difficulty, rule):
    t = RuleTagger().tag(text)
    assert (t.domain, t.rule) == (domain, rule)
    if difficulty is not None:
        assert t.difficulty == difficulty
    assert t.difficulty in DIFFICULTIES


def test_rule_tagger_reads_text_only_and_empty_text_is_untagged():
    assert RuleTagger().tag("   ") == Tags(None, None, rule="empty", error="empty problem text")
    assert fallback_domain("") == "other"


def test_tagger_accuracy_counts_untagged_as_wrong():
    class Never:
        def tag(self, text):
            return Tags(None, None)

    truth = pd.DataFrame({"problem": ["a", "b"], "domain": ["algebra", "geometry"],
                          "difficulty": ["elementary", "college"]})
    r = tagger_accuracy(Never(), truth)
    assert (r["domain_accuracy"], r["difficulty_accuracy"], r["untagged"]) == (0.0, 0.0, 2)
    assert "(none)" in r["domain_confusion"].columns
    with pytest.raises(ValueError, match="difficulty"):
        tagger_accuracy(Never(), truth.drop(columns="difficulty"))


# ----------------------------------------------------------------------------- LLM tagger

@pytest.mark.parametrize("reply,expected", [
    ('{"domain": "algebra", "difficulty": "high school"}', ("algebra", "high school")),
    ('```json\n{"domain": "number theory", "difficulty": "college"}\n```', ("number_theory", "college")),
    ('Sure! Here it is: {"Domain": "Probability/Combinatorics", "Difficulty": "Middle_School"} Hope it helps.',
     ("counting_probability", "middle school")),
    ('{"difficulty": "graduate", "domain": "calculus", "reason": "uses integrals"}', ("calculus", "graduate")),
    ("domain: geometry\ndifficulty: elementary", ("geometry", "elementary")),
    ('{"domain": "arithmetic", "difficulty": "kindergarten"}', ("arithmetic", None)),  # partial
    ('{"domain": "Other", "difficulty": "ELEMENTARY"}', ("other", "elementary")),
])
def test_parse_tag_reply(reply, expected):
    assert parse_tag_reply(reply) == expected


@pytest.mark.parametrize("reply", [
    "", "   ", "I cannot classify this.", '{"domain": "precalculus", "difficulty": "hard"}', "[1, 2, 3]",
    '{"label": "algebra"}', None,
])
def test_parse_tag_reply_rejects_garbage(reply):
    with pytest.raises(TagParseError):
        parse_tag_reply(reply)


def test_prompt_labels_all_parse():
    # every label the prompt offers must map back to a canonical tag
    for label in ("algebra", "geometry", "number theory", "probability/combinatorics", "calculus",
                  "arithmetic", "other"):
        assert f'"{label}"' in TAG_PROMPT
        assert canonical_domain(label) in TAG_DOMAINS
    for label in DIFFICULTIES:
        assert f'"{label}"' in TAG_PROMPT
        assert canonical_difficulty(label) == label


def test_llm_tagger_good_garbage_raising_and_retry():
    seen = []

    def good(prompt):
        seen.append(prompt)
        return '{"domain": "geometry", "difficulty": "middle school"}'

    t = LLMTagger(good)
    assert t.tag("Find the area of a circle of radius 2.") == Tags("geometry", "middle school", rule="llm")
    assert "Find the area of a circle of radius 2." in seen[0] and "{problem}" not in seen[0]
    assert t.counts["ok"] == 1

    g = LLMTagger(lambda p: "no idea, sorry")
    tags = g.tag("x")
    assert (tags.domain, tags.difficulty, tags.rule) == (None, None, "llm:unparseable")
    assert g.counts["unparseable"] == 1 and g.failures[0]["kind"] == "unparseable"

    def boom(prompt):
        raise TimeoutError("endpoint timed out")

    b = LLMTagger(boom, retries=2)
    tags = b.tag("x")
    assert (tags.domain, tags.difficulty, tags.rule) == (None, None, "llm:error")
    assert "TimeoutError" in tags.error and b.counts["error"] == 1

    replies = iter(["garbage", '{"domain": "algebra", "difficulty": "college"}'])
    r = LLMTagger(lambda p: next(replies), retries=1)
    assert r.tag("x").domain == "algebra" and r.counts["ok"] == 1 and r.counts["unparseable"] == 0

    p = LLMTagger(lambda p: '{"domain": "algebra", "difficulty": "very hard"}')
    tags = p.tag("x")
    assert (tags.domain, tags.difficulty, tags.rule) == ("algebra", None, "llm:partial")
    assert p.counts["partial"] == 1

    with pytest.raises(ValueError, match="placeholder"):
        LLMTagger(good, prompt="no placeholder here")


# ----------------------------------------------------------------------------- tag_rollouts

def _rollouts():
    ps = generate(10, seed=1)
    loop = "Let me check this again and again and again step by step now. " * 40
    rows = []
    for p in ps:
        for k in range(3):
            text = loop if k == 2 else f"<think>\n{' '.join(p.step_texts)}\n</think>\n\\boxed{{{p.answer}}}"
            rows.append({"problem_id": p.id, "problem": p.problem, "answer": p.answer, "domain": p.domain,
                         "level": p.level, "difficulty": p.difficulty, "sample_index": k, "text": text,
                         "correct": k == 0, "n_tokens": 10 + k, "finished": True})
    return pd.DataFrame(rows)


def test_tag_rollouts_tags_once_per_problem():
    class Counting(RuleTagger):
        calls = 0

        def tag(self, text):
            Counting.calls += 1
            return super().tag(text)

    df = _rollouts()
    out = tag_rollouts(df, Counting())
    assert Counting.calls == 10 and len(out) == 30
    assert (out["tag_domain"] == out["domain"]).all() and (out["tag_difficulty"] == out["difficulty"]).all()
    assert out["repetitive"].tolist() == [False, False, True] * 10
    assert out["length"].tolist() == [10, 11, 12] * 10 and out.attrs["length_unit"] == "tokens"
    assert "tag_domain" not in df.columns  # input untouched
    s = tag_summary(out)
    assert s["n_problems"] == 10 and s["domain_agreement"] == 1.0 and s["difficulty_agreement"] == 1.0
    assert s["repetitive_share"] == pytest.approx(1 / 3)


def test_tag_rollouts_lengths_and_failed_tags():
    df = _rollouts()
    df.loc[0, "n_tokens"] = None
    out = tag_rollouts(df, LLMTagger(lambda p: "garbage"))
    assert out.attrs["length_unit"] == "chars"  # never a mix of units
    assert out["length"].iloc[0] == len(df["text"].iloc[0])
    assert out["tag_domain"].isna().all() and out["tag_difficulty"].isna().all()
    assert tag_summary(out)["untagged_domain"] == 10
    with pytest.raises(ValueError, match="n_tokens"):
        tag_rollouts(df, RuleTagger(), length="tokens")
    with pytest.raises(ValueError, match=r"tag_rollouts: missing required column\(s\) 'text'"):
        tag_rollouts(df.drop(columns="text"), RuleTagger())
