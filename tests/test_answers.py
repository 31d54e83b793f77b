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
    got = [(c.equal, c.answer, c.checker, c.reason) for c in checks]
    want = [(r["equal"], r["answer"], r["checker"], r["reason"]) for r in rows]
    assert got == want


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
