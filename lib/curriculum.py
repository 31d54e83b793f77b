"""Which problems RL trains on when they come from the generator: the starting model's competence
cells, measured on a dev split, and a fresh stream of new problems drawn from them.

With ``rl.prompt_source: stream`` the RL stage does not reuse the tagged pool (problems the model
already saw, with the teacher's solution, in mid-training). It

1. samples the starting model on **dev problems**: generator problems of the training split under
   a seed of their own, none of them in the run's training data (the test split is never read);
2. keeps the domain x level **cells** whose dev pass rate lies in ``[low, high]``, the edge of the
   model's competence, where a group of samples is most often mixed (right and wrong) and so
   carries a GRPO signal;
3. draws **fresh problems** from those cells, each used once, none of them a dev or training problem.

Measured on tiny (``experiments/rl_stream.py``, LOG.md 2026-12-03): 20 GRPO steps on 160 fresh
problems raised dev pass@1 where the same steps on the tagged pool had not.
"""
from __future__ import annotations

import random
from typing import Iterable

import pandas as pd

from lib import problems

DEV_SEED_OFFSET = 7919     # the dev problems' generator seed is run.seed + this
STREAM_SEED_OFFSET = 31337  # the stream's, run.seed + this


class NoCellsError(ValueError):
    """No domain x level cell has a dev pass rate in the stream's window."""


class StreamShortfallError(ValueError):
    """The generator could not supply enough distinct new problems."""


def dev_problems(n: int, seed: int, exclude: Iterable[str], domains=None, levels=None) -> list[dict]:
    """``n`` generator problems of the training split (seed ``seed``), balanced over cells, none
    whose text is in ``exclude`` (the run's training problems); dicts as an evaluation set holds."""
    exclude = set(exclude)
    got = [p for p in problems.generate(2 * n, seed=seed, split="train", domains=domains, levels=levels)
           if p.problem not in exclude]
    if len(got) < n:
        raise StreamShortfallError(f"only {len(got)} of {n} dev problems are not training problems; lower "
                                   "rl.dev_problems or widen problems.levels")
    return [{"id": p.id, "problem": p.problem, "answer": p.answer, "domain": p.domain, "level": p.level}
            for p in got[:n]]


def cell_pass_rates(records: pd.DataFrame) -> pd.DataFrame:
    """Per (domain, level) of evaluation records: ``samples`` and ``pass_rate`` (share correct;
    an undecided check counts as not correct)."""
    missing = {"domain", "level", "correct"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack {sorted(missing)}: pass rates per cell need lib.evaluation.evaluate's "
                         "records of a set with domain and level (the synthetic generator's)")
    if records.empty:
        raise ValueError("no evaluation records: nothing to measure cell pass rates on")
    g = records.assign(ok=records["correct"].eq(True)).groupby(["domain", "level"])["ok"]
    return pd.DataFrame({"samples": g.size(), "pass_rate": g.mean()}).reset_index()


def competence_cells(rates: pd.DataFrame, low: float, high: float) -> list[tuple[str, int]]:
    """The cells with ``low <= pass_rate <= high``, in the table's order. Raises
    :class:`NoCellsError` with every cell's rate when none is."""
    if not 0 <= low <= high <= 1:
        raise ValueError(f"the window must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    keep = rates[(rates["pass_rate"] >= low) & (rates["pass_rate"] <= high)]
    if keep.empty:
        seen = ", ".join(f"{r.domain} L{r.level} {r.pass_rate:.2f}" for r in rates.itertuples())
        raise NoCellsError(f"no cell's dev pass rate is within [{low}, {high}] ({seen}); widen "
                           "rl.stream_low / rl.stream_high, or start RL from a model whose competence edge "
                           "lies inside the generator's levels")
    return [(str(d), int(lv)) for d, lv in zip(keep["domain"], keep["level"])]


def fresh_stream(cells: list[tuple[str, int]], n: int, seed: int, exclude: Iterable[str]) -> pd.DataFrame:
    """``n`` distinct new problems (``problem, answer, domain, level``) spread evenly over ``cells``
    (the first ``n % len(cells)`` cells one more), none whose text is in ``exclude``; shuffled with
    ``seed``. Raises :class:`StreamShortfallError` when a cell cannot supply its share."""
    if not cells:
        raise ValueError("no cells to draw from")
    exclude = set(exclude)
    rows = []
    for i, (d, lv) in enumerate(cells):
        want = n // len(cells) + (1 if i < n % len(cells) else 0)
        if not want:
            continue
        try:
            drawn = problems.generate(3 * want, seed=seed + 101 * i, split="train", domains=[d], levels=[lv])
        except ValueError as e:  # the cell's problem space is smaller than 3 x want
            raise StreamShortfallError(f"cell {d} L{lv} cannot supply {want} new problems ({e}); lower "
                                       "rl.max_steps or widen the window") from e
        new = []
        for p in drawn:
            if len(new) == want:
                break
            if p.problem not in exclude:
                exclude.add(p.problem)
                new.append(p)
        if len(new) < want:
            raise StreamShortfallError(f"cell {d} L{lv} has only {len(new)} of {want} problems not seen in training "
                                       "or dev; lower rl.max_steps or widen the window")
        rows += [{"problem": p.problem, "answer": p.answer, "domain": d, "level": lv} for p in new]
    random.Random(seed).shuffle(rows)
    return pd.DataFrame(rows, columns=["problem", "answer", "domain", "level"])
