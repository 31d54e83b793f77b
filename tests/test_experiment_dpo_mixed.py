"""experiments.dpo_mixed's pair variants, on hand-made rollouts whose right pairs are known."""
import pandas as pd
import pytest

from experiments.dpo_mixed import variant_pairs
from lib import params


def _row(pid, text, correct, length):
    return {"problem_id": pid, "problem": f"problem {pid}", "answer": "4", "text": text, "correct": correct,
            "length": length, "tag_difficulty": "elementary", "tag_domain": "arithmetic"}


@pytest.fixture(scope="module")
def P():
    return params.load("params/tiny.yaml")


@pytest.fixture()
def data():
    on_policy = pd.DataFrame([
        _row("p1", "OP1 right: 2 + 2 = 4 \\boxed{4}", True, 10),
        _row("p1", "OP1 wrong: 2 + 2 = 4 \\boxed{5}", False, 10),
        _row("p2", "OP2 wrong a \\boxed{5}", False, 10),       # never solved by the model
        _row("p2", "OP2 wrong b \\boxed{6}", False, 12),
        _row("p3", "OP3 right \\boxed{4}", True, 10),          # always solved: no wrong sample
        _row("p4", "OP4 wrong \\boxed{5}", False, 10),         # its teacher is right only by a lucky guess
    ])
    teacher = pd.DataFrame([
        _row("p1", "T1 right: 1 + 3 = 4 \\boxed{4}", True, 11),
        _row("p2", "T2 right: 3 + 1 = 4 \\boxed{4}", True, 11),
        _row("p2", "T2 wrong \\boxed{7}", False, 11),
        _row("p3", "T3 right \\boxed{4}", True, 11),
        _row("p4", "T4 lucky: 3 + 3 = 7 \\boxed{4}", True, 11),
    ])
    return on_policy, teacher


def test_on_policy_pairs_only_the_models_own_answers(P, data):
    pairs = variant_pairs("on_policy", *data, P)
    assert set(pairs.problem_id) == {"p1"}
    assert set(pairs.chosen.str[:3]) == {"OP1"} and set(pairs.rejected.str[:3]) == {"OP1"}


def test_mixed_pairs_teacher_chosen_against_the_models_wrong_samples(P, data):
    pairs = variant_pairs("mixed", *data, P)
    assert set(pairs.problem_id) == {"p1", "p2"}       # p3 has no wrong sample; p4's chosen is a lucky guess
    assert pairs.chosen.str.startswith("T").all()
    assert pairs.rejected.str.startswith("OP").all()   # never the teacher's own wrong rollout
    assert set(pairs.loc[pairs.problem_id == "p2", "rejected"]) == {"OP2 wrong a \\boxed{5}",
                                                                     "OP2 wrong b \\boxed{6}"}


def test_unsolved_adds_teacher_pairs_only_where_the_model_never_was_right(P, data):
    pairs = variant_pairs("on_policy+unsolved", *data, P)
    by_problem = {pid: set(g.chosen.str[:3]) for pid, g in pairs.groupby("problem_id")}
    assert by_problem == {"p1": {"OP1"}, "p2": {"T2 "}}
    assert set(pairs.source) == {"on_policy", "teacher_chosen"}
