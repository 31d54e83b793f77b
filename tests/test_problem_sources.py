"""Training problems from several datasets in the hub's own schemas, read through `datasets`.

The files are written here in the column layout of the paper's public sources (OpenR1-Math-220k,
and OpenThoughts-114k's `metadata` config), so the field maps in params/phi4-mini.yaml are
checked against rows shaped like the real ones, not against our own field names.
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib import params as P
from lib import problem_sources as S
from lib import problems
from lib import rollouts as R
from lib.teachers import EmbeddedTeacher
from lib.verify import Verifier


def openr1_row(i: int, problem: str, answer: str, traces: list[str]) -> dict:
    """One row in OpenR1-Math-220k's columns (uuid, problem, solution, answer, generations, ...)."""
    return {"problem": problem, "solution": f"Worked solution. The answer is ${answer}$.", "answer": answer,
            "problem_type": "Algebra", "question_type": "math-word-problem", "source": "olympiads",
            "uuid": f"0000-{i:04d}", "is_reasoning_complete": [True] * len(traces), "generations": traces,
            "correctness_math_verify": [True] * len(traces), "correctness_llama": None,
            "finish_reasons": None, "correctness_count": len(traces),
            "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": traces[0]}]}


def openthoughts_row(problem: str, solution: str, domain: str = "math") -> dict:
    """One row in OpenThoughts-114k `metadata` columns (no answer column: a worked reference solution)."""
    return {"problem": problem, "deepseek_reasoning": "Let me think.", "deepseek_solution": solution,
            "ground_truth_solution": solution, "domain": domain, "source": "numina_math",
            "test_cases": None, "starter_code": None}


def trace(answer: str) -> str:
    return f"<think>\nWork it out.\n</think>\nSo the answer is \\boxed{{{answer}}}."


@pytest.fixture
def files(tmp_path):
    openr1 = [openr1_row(i, f"What is {i} + {i}?", str(2 * i), [trace(str(2 * i)), trace("0")]) for i in range(1, 7)]
    pq.write_table(pa.Table.from_pylist(openr1), tmp_path / "openr1.parquet")
    ot = [openthoughts_row(f"Compute {i} times 3.", f"We get $3 \\cdot {i} = \\boxed{{{3 * i}}}$.") for i in range(1, 5)]
    ot.append(openthoughts_row("Write a function that sorts a list.", "def f(x): return sorted(x)", domain="code"))
    ot.append(openthoughts_row("What is 1 + 1?", "\\boxed{2}"))  # OpenR1 already gave this problem
    ot.append(openthoughts_row("Find the area of the unit square.", "It is one."))  # no \boxed answer
    (tmp_path / "openthoughts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ot))
    return tmp_path


def section(files, n_train: int, openr1_cap=None, **kw) -> P.Problems:
    return P.Problems(source="hub", n_train=n_train, sources=[
        {"name": "openr1", "dataset": str(files / "openr1.parquet"), "cap": openr1_cap,
         "field_map": {"id": "uuid", "problem": "problem", "answer": "answer", "trace": "generations"}},
        {"name": "openthoughts", "dataset": str(files / "openthoughts.jsonl"), "where": {"domain": "math"},
         "answer_from": "boxed", "field_map": {"problem": "problem", "answer": "ground_truth_solution"}},
    ], **kw)


def test_sources_are_mapped_capped_filtered_and_deduplicated(files):
    items, counts = S.load(section(files, n_train=9, openr1_cap=4), seed=0)
    assert counts == {"openr1": {"read": 4, "duplicates": 0, "taken": 4},
                      "openthoughts": {"read": 6, "duplicates": 1, "taken": 5}}  # code row filtered, 1+1 repeated
    by_id = {r.get("id"): r for r in items}
    first = by_id["openr1/0000-0001"]
    assert first["problem"] == "What is 1 + 1?" and first["answer"] == "2" and len(first["generation"]) == 2
    ot = [r for r in items if "id" not in r]
    assert sorted(r["answer"] for r in ot if "answer" in r) == ["12", "3", "6", "9"]  # the boxed answers
    assert [r for r in ot if "answer" not in r][0]["problem"].startswith("Find the area")  # left for validation
    assert not any("sorts a list" in r["problem"] for r in items)
    valid, rejected = R.validate_problems(items)  # what stage 01 does with them next
    assert [r["reason"] for r in rejected] == ["missing reference answer"]
    assert {len(r.traces or ()) for r in valid if r.id.startswith("openr1/")} == {2}
    assert {r.traces for r in valid if not r.id.startswith("openr1/")} == {None}  # the teacher writes these


def test_too_few_problems_is_a_named_shortfall_and_more_is_a_seeded_sample(files):
    with pytest.raises(S.SourceShortfallError, match=r"n_train=50 but the sources hold 9 distinct problems "
                                                     r"\(openr1: 4 \(cap 4\); openthoughts: 5\)"):
        S.load(section(files, n_train=50, openr1_cap=4), seed=0)
    a, counts = S.load(section(files, n_train=5), seed=1)
    b, _ = S.load(section(files, n_train=5), seed=1)
    c, _ = S.load(section(files, n_train=5), seed=2)
    assert a == b and a != c and len(a) == 5
    assert sum(v["taken"] for v in counts.values()) == 5


def test_one_dataset_keeps_its_ids_and_unreadable_lines_are_set_aside(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"uid": "u1", "question": "What is 2 + 2?", "gold": "4"}) + "\n{broken\n")
    sec = P.Problems(source="jsonl", dataset=str(path), n_train=2, field_map={"id": "uid", "problem": "question",
                                                                              "answer": "gold"})
    items, counts = S.load(sec, seed=0)
    assert items[0] == {"id": "u1", "problem": "What is 2 + 2?", "answer": "4"} and counts["p"]["taken"] == 2
    valid, rejected = R.validate_problems(items)
    assert [r.id for r in valid] == ["u1"] and rejected[0]["reason"].startswith("line 2: not valid JSON")


def test_synthetic_source_is_the_generator():
    sec = P.Problems(n_train=7)
    items, counts = S.load(sec, seed=3)
    assert [p.id for p in items] == [p.id for p in problems.generate(7, seed=3, split="train")]
    assert counts == {"synthetic": {"read": 7, "duplicates": 0, "taken": 7}}


@pytest.mark.parametrize("bad,message", [
    ({"source": "hub", "sources": []}, "at least one dataset"),
    ({"source": "hub", "sources": [{"dataset": "a/x"}, {"dataset": "b/x"}]}, "distinct names"),
    ({"source": "hub", "dataset": "a/b", "sources": [{"dataset": "a/x"}]}, "not both"),
    ({"source": "hub", "sources": [{"dataset": "a/x", "cap": 0}]}, r"sources\[0\]: \('cap',\)"),
    ({"source": "hub", "sources": [{"dataset": "a/x", "answer_from": "last"}]}, "answer_from"),
])
def test_bad_sources_are_named_in_params(bad, message):
    with pytest.raises(ValueError, match=message):
        P.Problems(**bad)


def test_where_naming_a_missing_column_is_an_error(files):
    sec = P.Problems(source="hub", n_train=1, sources=[{"dataset": str(files / "openthoughts.jsonl"),
                                                         "where": {"subject": "math"}}])
    with pytest.raises(ValueError, match=r"'where' names column\(s\) \['subject'\] that the dataset lacks"):
        S.load(sec, seed=0)


def test_the_teacher_tops_up_problems_with_fewer_traces(tmp_path):
    """OpenR1 carries 2-4 traces a problem: the teacher writes the rest up to n (sample indices after)."""
    ps = problems.generate(3, seed=4, split="train")
    items = [{**p.to_dict(), "generations": [trace(p.answer)] * k} for p, k in zip(ps, (1, 3, 4))]
    with Verifier(workers=0) as v:
        s = R.generate_rollouts(items, EmbeddedTeacher(0.0), 3, tmp_path / "up", v, progress=False, top_up=True)
        R.generate_rollouts(items, EmbeddedTeacher(0.0), 3, tmp_path / "asis", v, progress=False)
    rows = [(r["problem_id"], r["sample_index"], r["teacher"]) for r in R.load_rollouts(tmp_path / "up").to_list()]
    t = EmbeddedTeacher(0.0).name
    assert rows == [(ps[0].id, 0, "dataset"), (ps[0].id, 1, t), (ps[0].id, 2, t),
                    (ps[1].id, 0, "dataset"), (ps[1].id, 1, "dataset"), (ps[1].id, 2, "dataset"),
                    *[(ps[2].id, k, "dataset") for k in range(4)]]  # more than n: all of the set's kept
    assert s.rollouts == 10 and json.loads((tmp_path / "up" / R.CONFIG_FILE).read_text())["top_up"] is True
    assert R.load_rollouts(tmp_path / "asis").num_rows == 8  # without top-up: the set's traces only
    assert "top_up" not in json.loads((tmp_path / "asis" / R.CONFIG_FILE).read_text())
