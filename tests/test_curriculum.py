"""lib/curriculum.py: dev problems, cell pass rates, the competence window and the fresh stream."""
from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from lib import curriculum, problems


def test_dev_problems_are_training_split_problems_outside_the_excluded_ones():
    first = problems.generate(40, seed=5, split="train")
    exclude = {p.problem for p in first[:10]}
    dev = curriculum.dev_problems(30, seed=5, exclude=exclude)
    assert len(dev) == 30 and len({d["problem"] for d in dev}) == 30
    assert not exclude & {d["problem"] for d in dev}
    assert all(problems.split_of(d["problem"]) == "train" for d in dev)  # never the test split
    assert {"id", "problem", "answer", "domain", "level"} <= set(dev[0])
    assert curriculum.dev_problems(30, seed=5, exclude=exclude) == dev  # seeded


def test_dev_problems_say_when_the_training_data_covers_them():
    everything = {p.problem for p in problems.generate(40, seed=5, split="train")}
    with pytest.raises(curriculum.StreamShortfallError, match="only 0 of 20 dev problems"):
        curriculum.dev_problems(20, seed=5, exclude=everything)


def test_cell_pass_rates_by_hand():
    rec = pd.DataFrame({"domain": ["algebra"] * 4 + ["geometry"] * 3,
                        "level": [1, 1, 2, 2, 1, 1, 1],
                        "correct": [True, False, True, None, False, False, True]})
    got = curriculum.cell_pass_rates(rec)
    assert got.to_dict("records") == [
        {"domain": "algebra", "level": 1, "samples": 2, "pass_rate": 0.5},
        {"domain": "algebra", "level": 2, "samples": 2, "pass_rate": 0.5},  # an undecided check is not correct
        {"domain": "geometry", "level": 1, "samples": 3, "pass_rate": pytest.approx(1 / 3)}]
    with pytest.raises(ValueError, match=r"records lack \['level'\]"):
        curriculum.cell_pass_rates(rec.drop(columns="level"))


def test_competence_window_keeps_the_edge_and_names_every_rate_when_empty():
    rates = pd.DataFrame({"domain": ["a", "a", "b", "b"], "level": [1, 2, 1, 2], "pass_rate": [0.9, 0.5, 0.2, 0.05]})
    assert curriculum.competence_cells(rates, 0.2, 0.8) == [("a", 2), ("b", 1)]  # the bounds are inside
    assert curriculum.competence_cells(rates, 0.0, 1.0) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    with pytest.raises(curriculum.NoCellsError, match=r"within \[0.6, 0.8\] \(a L1 0.90, a L2 0.50, b L1 0.20, b L2 0.05\)"):
        curriculum.competence_cells(rates, 0.6, 0.8)
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        curriculum.competence_cells(rates, 0.8, 0.2)


def test_fresh_stream_is_new_distinct_spread_over_the_cells_and_seeded():
    cells = [("algebra", 2), ("geometry", 3), ("number_theory", 1)]
    exclude = {p.problem for p in problems.generate(200, seed=0, split="train")}
    s = curriculum.fresh_stream(cells, 10, seed=3, exclude=exclude)
    assert list(s.columns) == ["problem", "answer", "domain", "level"] and len(s) == 10
    assert s["problem"].is_unique and not exclude & set(s["problem"])
    assert Counter(zip(s["domain"], s["level"])) == {("algebra", 2): 4, ("geometry", 3): 3, ("number_theory", 1): 3}
    assert all(problems.split_of(t) == "train" for t in s["problem"])
    by_text = {p.problem: p for p in problems.generate(300, seed=9, split="train", domains=["algebra"], levels=[2])}
    for row in s[s["domain"] == "algebra"].itertuples():  # each answer is the generator's for its text
        if row.problem in by_text:
            assert by_text[row.problem].answer == row.answer
    pd.testing.assert_frame_equal(s, curriculum.fresh_stream(cells, 10, seed=3, exclude=exclude))
    assert set(curriculum.fresh_stream(cells, 10, seed=4, exclude=exclude)["problem"]) != set(s["problem"])


def test_fresh_stream_names_the_cell_that_runs_short():
    cells = [("algebra", 2)]
    every = {p.problem for p in problems.generate(3 * 5, seed=3, split="train", domains=["algebra"], levels=[2])}
    with pytest.raises(curriculum.StreamShortfallError, match="cell algebra L2 has only 0 of 5 problems"):
        curriculum.fresh_stream(cells, 5, seed=3, exclude=every)
    with pytest.raises(ValueError, match="no cells"):
        curriculum.fresh_stream([], 5, seed=3, exclude=set())
