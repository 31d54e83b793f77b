"""Extraction policies (lib.answers): strict pinned on the recipe's outputs, lenient on made-up kinds.

Rows cite where they come from: "made up: kind N" refers to the kinds listed in issue 22
(1 no box, 2 multiple-choice letters in prose, 3 several boxes, 4 notation, 5 must stay unequal).
"""

import json
from pathlib import Path

import pytest

from lib import answers as A
from lib import judges as J
from lib import verify as V

DATA = Path(__file__).parent / "data"


# --- strict: the recipe's own outputs keep their verdicts ------------------------------------------


def test_strict_verdicts_on_recipe_outputs_are_pinned():
    """Verdicts recorded with the code before the lenient policy existed (synthetic problems from
    lib.problems in the recipe's formats: think block + box, unclosed think, bare answers, ...)."""
    rows = [json.loads(line) for line in (DATA / "strict_recipe_outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 320
    with V.Verifier(workers=0, judge=J.RuleJudge()) as v:  # the stages' default policy is strict
        checks = v.check_many([(r["gold"], r["prediction"]) for r in rows])
    got = [(c.equal, c.answer, c.reason) for c in checks]
    want = [(r["equal"], r["answer"], r["reason"]) for r in rows]
    assert got == want
    # who decided: as pinned, except that an answer identical to the gold is now equal without a parse
    assert [("math_verify" if c.checker == "identical" else c.checker) for c in checks] == [r["checker"] for r in rows]
    identical = [(c, r) for c, r in zip(checks, rows) if c.checker == "identical"]
    assert len(identical) > 50 and all(c.answer == A.prediction_to_answer(r["gold"]) for c, r in identical)


# --- extraction bugs found by mutation testing ------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{\\boxed{42}}", "42"),  # the nested box unwraps to all of its content
        ("so \\boxed{\\boxed{42}}.", "42"),
        ("\\boxed{\\boxed{x+1}}", "x+1"),
        # Cut right after the command or its brace: no answer, never an IndexError.
        ("the answer is \\boxed", None),
        ("the answer is \\boxed{", None),
        ("the answer is \\boxed ", None),
        ("\\boxed{\\boxed}", "\\boxed"),
        ("\\boxed{7} then \\fbox", "7"),
    ],
)
def test_nested_and_cut_boxes(text, expected):
    assert A.extract_answer(text) == expected
    assert A.extract(text, "strict").answer == expected
    A.extract(text, "lenient")  # must not raise either


def test_unknown_policy_is_a_named_error():
    with pytest.raises(ValueError, match="unknown extraction policy 'loose'"):
        A.extract("1", "loose")
    with pytest.raises(ValueError, match="extract must be one of"):
        V.Verifier(workers=0, extract="loose")


# --- lenient: extraction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,answer,search",
    [
        ("\\boxed{(1, 2)}, \\boxed{(2, 1)}", "(1, 2), (2, 1)", False),
        ("so \\boxed{k = 45} and \\boxed{n = 2}", "k = 45, n = 2", False),
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", "1, 2, 3", False),
        ("\\boxed{840}.\n\n**Final Answer**\n\\boxed{840}", "840", False),
        ("First \\boxed{200} is the interest. Then the total is much more. Finally \\boxed{10455}", "10455", False),
        ("x = 12. <|im_start|>user\nWhat is \\boxed{3}?", "x = 12.", False),
        ("<think>\\boxed{1}</think> answer \\boxed{2}", "2", False),
    ],
)
def test_lenient_extraction(text, answer, search):
    got = A.extract(text, "lenient")
    assert (got.answer, got.search) == (answer, search)


# --- lenient: verdicts (gold first) -------------------------------------------------------------------

MADE_UP = [
    # kind 1: no box
    ("made up: kind 1", "-3.5", "Final answer: -3.5", True),
    ("made up: kind 1", "7", "The answer is +7", True),
    ("made up: kind 1", "9", "Answer $$ 9 $$", True),
    ("made up: kind 1", "9", "so the answer is \\( 9 \\)", True),
    ("made up: kind 1", "12", "She had 5 apples and bought 7 more, so she has 12 apples now.", True),
    ("made up: kind 1", "12", "so x = 12. <|im_start|>user\nNext question: 40 + 2?", True),
    ("made up: kind 1", "220", "Donc on a 200 + 20.\nRéponse : 220", True),
    ("made up: kind 1", "\\frac{13}{28}", "所以答案是 13/28", True),
    ("made up: kind 1", "5", "Следовательно, ответ: 5", True),
    ("made up: kind 1", "12", "The answer is 13", False),
    # kind 2: multiple-choice letters in prose
    ("made up: kind 2", "B", "I think it's B", True),
    ("made up: kind 2", "D", "D. it can't be A or B", True),
    ("made up: kind 2", "D", "The answer: D", True),
    ("made up: kind 2", "(D) Alina", "D", True),
    ("made up: kind 2", "C Cecile", "C", True),
    ("made up: kind 2", "C Cecile", "D", False),
    ("made up: kind 2", "B", "Ответ: В", True),  # Cyrillic Ve looks like B
    ("made up: kind 2", "A", "The answer is C", False),
    # kind 3: several boxes that together are the answer
    ("made up: kind 3", "(2,1),(1,2)", "\\boxed{(1, 2)}, \\boxed{(2, 1)}", True),
    ("made up: kind 3", "k = 45, n = 2", "\\boxed{k = 45} and \\boxed{n = 2}", True),
    ("made up: kind 3", "\\{1,2,3\\}", "\\boxed{1}, \\boxed{2}, \\boxed{3}", True),
    ("made up: kind 3", "\\{1,2,3\\}", "\\boxed{1}, \\boxed{2}", False),
    # kind 4: notation
    ("made up: kind 4", "1.22", "1,22", True),
    ("made up: kind 4", "14916", "the total is $14{,}916$", True),
    ("made up: kind 4", "x \\neq 5", "The solution is $x != 5$", True),
    ("made up: kind 4", "\\frac{1}{2}", "\\boxed{0.5}", True),
    # kind 5: must stay unequal
    ("made up: kind 5", "(1, 2)", "\\boxed{(2, 1)}", False),
    ("made up: kind 5", "\\frac{1}{3}", "\\boxed{0.3}", False),
    ("made up: kind 5", "12", "The answer is 21.", False),
]


@pytest.fixture(scope="module")
def lenient():
    with V.Verifier(workers=0, judge=J.RuleJudge(), extract="lenient") as v:
        yield v


@pytest.mark.parametrize("source,gold,prediction,expected", MADE_UP)
def test_lenient_made_up_kinds(lenient, source, gold, prediction, expected):
    c = lenient.check(gold, prediction)
    assert (c.equal is True) == expected, c


def test_lenient_keeps_none_for_cannot_verify(lenient):
    assert lenient.check("", "\\boxed{1}").equal is None
    assert lenient.check("\\frac{" * 20 + "1" + "}" * 20, "\\boxed{1}").equal is None
    assert lenient.check("1", "").equal is False


def test_cli_default_is_lenient_and_says_so(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"gold": "7", "prediction": "The answer is +7"}) + "\n")
    root = Path(__file__).resolve().parents[1]
    for policy, equal in (("lenient", True), ("strict", False)):
        args = [] if policy == "lenient" else ["--extract", "strict"]
        res = subprocess.run([sys.executable, "-m", "lib.verify", "--jsonl", str(src), "--workers", "0", *args],
                             cwd=root, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["equal"] is equal
        assert f"extract {policy} |" in res.stderr


# --- values pinned by mutation testing (make mutation, module answers) -------------------------------
# Expected values are worked out by hand from the module docstring's rules.


@pytest.mark.parametrize("call", [A.extract_answer, A.prediction_to_answer, lambda x: A.extract(x, "lenient")])
def test_non_strings_are_named_in_the_error(call):
    with pytest.raises(TypeError, match="must be a str, got int"):
        call(5)


def test_strict_extraction_fields():
    assert A.extract("\\boxed{5}") == A.Extraction("5", False, "")  # strict is the default policy
    assert A.extract("<think>\\boxed{5}") == A.Extraction(None, False, "unclosed_think")
    assert A.extract("x" * (A.MAX_BARE_ANSWER_CHARS + 1)) == A.Extraction(None, False, "no_box")


@pytest.mark.parametrize(
    "text,reason",
    [
        ("x" * 300, "no_answer"),  # at the cap it is a bare answer, not a completion without a box
        ("x" * 301, "no_box"),
        ("   ", "empty"),
        ("<think>\\boxed{1}</think> done", "box_only_in_think"),
        ("<think>x</think> \\boxed{}", "no_answer"),  # a box after the think block, but empty
    ],
)
def test_why_no_answer(text, reason):
    assert A.why_no_answer(text) == reason


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{\\boxed {42}}", "42"),  # space between the inner command and its brace
        ("\\boxed{8}, \\boxed 123456789012", "123456789012"),  # the brace-less box ends last
        ("x" * 300, "x" * 300),  # a bare answer of exactly MAX_BARE_ANSWER_CHARS
        ("\\[\\]", None),  # empty display math: no answer
        ("$", "$"),  # a lone dollar is not a pair of delimiters
    ],
)
def test_strict_edge_values(text, expected):
    assert A.prediction_to_answer(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", A.Extraction(None, False, "empty")),
        ("<|im_end|>", A.Extraction(None, False, "empty")),
        ("\\boxed{\\boxed{42}}", A.Extraction("42", False, "")),
        ("\\boxed{\\boxed {42}}", A.Extraction("42", False, "")),
        ("\\boxed{1 + \\fbox{2}}", A.Extraction("1 + \\fbox{2}", False, "")),  # the inner box is not a second answer
        ("\\boxed{5}, \\boxed{5}", A.Extraction("5", False, "")),  # a repeated box counts once
        ("\\[\\boxed{1}.\\] \\[\\boxed{2}\\]", A.Extraction("2", False, "")),  # a period ends the first answer
        ("\\boxed{1}" + " " * 60 + "\\boxed{2}", A.Extraction("1, 2", False, "")),  # gap at MAX_BOX_GAP_CHARS
        ("\\boxed{1}" + " " * 61 + "\\boxed{2}", A.Extraction("2", False, "")),  # one more: separate
        ("1" * 300, A.Extraction("1" * 300, False, "")),  # bare answer at the cap
        ("1" * 301, A.Extraction("1" * 301, True, "")),  # over it: searched
        ("1\n2", A.Extraction("1\n2", True, "")),  # two lines: searched
        ("TWELVE APPLES", A.Extraction("TWELVE APPLES", True, "")),  # prose in capitals: searched
        ("a</think>b</think>42", A.Extraction("42", False, "")),  # after the last </think>
        ("a<think>b", A.Extraction("a b", False, "")),  # an unclosed think tag is a space; "a b" is no prose
        ("<think>5", A.Extraction("5", False, "")),
        ("<|im_start|><|im_start|>42<|im_end|>", A.Extraction("42", False, "")),  # leading debris, twice
    ],
)
def test_lenient_extraction_values(text, expected):
    assert A.extract(text, "lenient") == expected


def test_final_boxes_without_content_is_none():
    assert A.final_boxes("\\boxed{}") is None
    assert A.final_boxes("no box") is None


@pytest.mark.parametrize(
    "region,expected",
    [
        ("Ответ: 5", "answer: 5"),
        ("the total is $14{,}916$", "the total is $14,916$"),
        ("$1\\!000$", "$1000$"),
    ],
)
def test_search_text(region, expected):
    assert A.search_text(region) == expected


@pytest.mark.parametrize(
    "s,gold,expected",
    [
        ("(A) or (B)", False, None),  # two letters named: a hedge
        ("(B) 5", False, "B"),
        ("B) 5", False, "B"),
        ("e", True, None),  # a lower-case gold is Euler's number, not option E
        ("e", False, "E"),
    ],
)
def test_choice_letter(s, gold, expected):
    assert A.choice_letter(s, gold=gold) == expected


@pytest.mark.parametrize(
    "gold,expected",
    [
        ("e", None),
        ("(D) " + "x" * 296, "D"),  # 300 characters: a named option
        ("(D) " + "x" * 297, None),  # 301: too long to be one
        ("\\text{(C)}", "C"),
    ],
)
def test_lenient_gold_choice(gold, expected):
    assert A.lenient_gold_choice(gold) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{B}", "B"),
        ("\\boxed{\\textbf{B}}", "B"),
        ("Not A. \\boxed{7}", None),  # a boxed non-letter: an answer, not a choice
        ("I think it's A", "A"),
        ("I think it's C", "C"),
        ("I think it's E", "E"),
        ("nothing chosen here", None),
    ],
)
def test_lenient_choice(text, expected):
    assert A.lenient_choice(text) == expected


@pytest.mark.parametrize(
    "s,depth",
    [("", 0), ("x", 0), ("()", 1), ("()()", 1), ("(())", 2), ("([{}])", 3), ("))((", 2), ("(()(()))", 3),
     ("f(X(1))", 2)],
)
def test_nesting_depth(s, depth):
    assert A.nesting_depth(s) == depth


def test_prefilter_caps():
    assert A.prefilter("1" * 1000) is None
    assert A.prefilter("1" * 1001) == "too_long"
    assert A.prefilter("(" * 12 + ")" * 12) is None
    assert A.prefilter("(" * 13 + ")" * 13) == "too_deep"
    assert A.prefilter("abc", max_chars=2) == "too_long"
    assert A.prefilter("((a))", max_nesting=1) == "too_deep"


@pytest.mark.parametrize("text,expected", [
    ("so 200 + 20 = 220", "so 200 + 20 = 220"),   # a binary plus between numbers stays
    ("x + 7 = 9", "x + 7 = 9"),                   # ... and after a one-letter variable
    ("(2) + 3", "(2) + 3"),
    ("a+1", "a+1"),
    ("The answer is +7", "The answer is 7"),      # a sign goes: math-verify's numbers take no +
    ("+7", "7"),
    ("x = +3", "x = 3"),
    ("(+5)", "(5)"),
])
def test_search_text_drops_only_a_sign_plus(text, expected):
    assert A.search_text(text) == expected
