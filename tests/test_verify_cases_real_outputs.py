"""Checker cases as they come from real outputs: one row per case, never deleted.

Every time the checker mis-grades a real output, add the row here (STYLE.md: "Tests are tables
from real cases"). Columns: source, gold, prediction (the output's tail, verbatim), the verdict
of math-verify alone (`Verifier(judge=None)`), and the verdict with the default second opinion
(`RuleJudge`).

Sources:
* `aime24:<id>` / `math500:<id>`: reference solutions in ../shared/data/benchmarks, verbatim.
  These are where math-verify alone disagrees with the reference answer (found by the
  self-agreement test in test_benchmarks.py) or where the format is unusual.
* `r1-style`: completions in the format of R1-distilled reasoning models (think block, then a
  summary with `\\boxed{}`), written for this table in the shapes such models produce; no model
  was run on this CPU-only machine. Replace them with verbatim rollouts as they appear.
"""

import pytest

from lib import judges as J
from lib import verify as V

CASES = [
    # --- reference solutions (verbatim tails) --------------------------------------------------
    # math-verify quirk: a trailing period inside the box ("104.") does not parse as 104.
    ("aime24:2024-I-5", "104", "measuring with your ruler should give $CE = \\boxed{104.}$\nNote: 1 mm is probably the best unit", False, True),
    # math-verify quirk: AIME's zero-padded answer in \textbf{(...)} is read as text.
    ("aime24:2024-II-1", "73", "gives $3d = 219,$ so $d = \\boxed{\\textbf{(073)}}.$\n\n-Benedict T (countmath1)", False, True),
    # No box at all: a completion that forgot to box its answer has no answer (False), not an error.
    ("aime24:2024-I-1", "204", "The t minutes spent at the coffeeshop can be written as $144-48(2.5)$, so t = 24. $180 + 24 = 204$. -sepehr2010 " * 5, False, False),
    ("math500:test/algebra/1349.json", "\\text{Evelyn}", "Therefore, $\\boxed{\\text{Evelyn}}$ is our answer.", True, True),
    ("math500:test/prealgebra/1003.json", "\\frac{270}7\\text{ degrees}", "\\[\\frac{900}7-\\frac{630}7=\\boxed{\\frac{270}7\\text{ degrees}}.\\]", True, True),
    ("math500:test/prealgebra/1044.json", "5.4 \\text{ cents}", "the average price is $\\frac{\\$ 2.33}{43} \\approx \\$0.054 = \\boxed{5.4 \\text{ cents}}.$", True, True),
    # --- R1-style completions ----------------------------------------------------------------------
    ("r1-style", "\\frac{14}{3}", "<think>\nOkay, so f(-2) = 3(-2)-2 = -8... wait, let me redo it.\n</think>\n\nThe value is $\\boxed{\\dfrac{14}{3}}$.", True, True),
    ("r1-style", "(3, \\frac{\\pi}{2})", "<think>\nr = 3, theta = pi/2.\n</think>\n\n**Final Answer**\n\\[\n\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}\n\\]", True, True),
    ("r1-style", "(3, \\frac{\\pi}{2})", "<think>\nr = 3.\n</think>\n\n**Final Answer**\n\\boxed{\\left(\\frac{\\pi}{2}, 3\\right)}", False, False),
    ("r1-style", "5", "<think>\nSo x = 5. Let me double check: 2(5) - 3 = 7. Yes.\n</think>\n\nThus \\(\\boxed{x = 5}\\).", True, True),
    ("r1-style", "2125", "<think>\n85 * 25 = 2125.\n</think>\nThe total is \\boxed{2,125} dollars.", True, True),
    ("r1-style", "18", "<think>\n16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n</think>\nJanet makes $\\boxed{\\$18}$ every day.", True, True),
    ("r1-style", "30", "<think>\nThe angle is 30 degrees.\n</think>\n\\boxed{30^\\circ}", True, True),
    ("r1-style", "C", "<think>\nOption C matches.\n</think>\nThe answer is \\boxed{C}.", True, True),
    ("r1-style", "B", "<think>\nThe product is 5.\n</think>\n\\boxed{\\textbf{(B) } 5}", True, True),
    ("r1-style", "B", "<think>\nEither A or B.\n</think>\n\\boxed{(A) \\text{ or } (B)}", False, False),
    # The model boxed an intermediate result inside its reasoning, then gave the final one.
    ("r1-style", "7", "<think>\nFirst guess \\boxed{5}? No: 3 + 4 = 7.\n</think>\n\nSo the answer is \\boxed{7}.", True, True),
    # Truncated at the length limit inside the think block: no answer.
    ("r1-style", "7", "<think>\nLet me compute 3 + 4. Hmm, 3 + 4 = 7, so maybe \\boxed{7}. Wait, let me re-check", False, False),
    # Closed the think block, then wrote a summary without a box.
    ("r1-style", "7", "<think>\n3 + 4 = 7\n</think>\n\nThe answer is 7 because three plus four is seven, as computed step by step in the reasoning above, and there is nothing more to add to this summary of the reasoning. " * 3, False, False),
    ("r1-style", "-\\frac{1}{2}", "<think>\ncos(2pi/3) = -1/2\n</think>\n$\\boxed{-0.5}$", True, True),
    ("r1-style", "\\{1, 2\\}", "<think>\nroots 2 and 1\n</think>\nThe solutions are $\\boxed{2, 1}$.", True, True),
    ("r1-style", "10\\%", "<think>\n10 of 100\n</think>\n\\boxed{10}", True, True),
    ("r1-style", "\\frac{1}{3}", "<think>\n1/3\n</think>\n\\boxed{0.33}", False, False),
    ("r1-style", "104", "<think>\nCE = 104\n</think>\nTherefore $CE = \\boxed{104.}$", False, True),
]


@pytest.mark.parametrize("source,gold,prediction,math_verify_only,with_rule_judge", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_real_output_case(source, gold, prediction, math_verify_only, with_rule_judge):
    alone = V.Verifier(workers=0, judge=None).check(gold, prediction)
    assert alone.equal is math_verify_only, (source, alone)
    judged = V.Verifier(workers=0, judge=J.RuleJudge()).check(gold, prediction)
    assert judged.equal is with_rule_judge, (source, judged)
    if math_verify_only != with_rule_judge:
        assert judged.checker == "judge:rule"
