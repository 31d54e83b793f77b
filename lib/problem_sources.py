"""Where stage 01's training problems come from: the synthetic generator, one dataset, or several.

    items, counts = problem_sources.load(P.problems, seed=P.run.seed)

* ``source: synthetic`` - ``n_train`` problems of :mod:`lib.problems` (the embedded default).
* ``source: jsonl`` / ``hub`` with ``dataset`` (+ ``field_map``) - one local file or hub dataset.
* ``source: hub`` / ``jsonl`` with ``sources`` - several datasets (the paper mixes public sets such
  as OpenR1-Math, OpenThoughts and Bespoke-Stratos), each with its own ``field_map``, a ``cap``
  on the problems taken from it, a ``where`` filter (OpenThoughts' math rows) and
  ``answer_from: boxed`` for sets whose reference is a worked solution. Rows are read through
  `datasets` (hub ids, or local .jsonl/.json/.parquet/.csv files in the hub's schema), mapped to
  our field names, and concatenated in order; a problem text that an earlier source already
  gave is dropped and counted.

When the sources hold more than ``n_train`` problems, a seeded sample of ``n_train`` is taken
(each source contributes in proportion to what it holds after its cap); when they hold fewer,
:class:`SourceShortfallError` names the shortfall per source - never a silently smaller run.
Rows come back as dicts in our field names (:func:`canonical_row`) for
:func:`lib.rollouts.generate_rollouts`, which validates them and sets aside, with a reason,
any row that lacks a problem or an answer. With several sources, ids are prefixed by the
source's name (``openr1/<uuid>``), so two sets' ids never collide.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from lib import rollouts
from lib.answers import last_boxed


class SourceShortfallError(ValueError):
    """The configured sources hold fewer problems than ``problems.n_train`` asks for."""


def source_name(src: dict) -> str:
    """A source's short name: its ``name``, else the last part of its dataset path (no suffix)."""
    return src.get("name") or Path(src["dataset"].rstrip("/")).stem


def _norm_text(text: Any) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def canonical_row(raw: dict, field_map: dict | None, *, answer_from: str = "field", id_prefix: str = "") -> dict:
    """A raw dataset row in our field names, each under the column :func:`lib.rollouts.validate_problems`
    reads by default (``id, problem, answer, domain, level, difficulty, generation``); missing
    fields are left out, so validation names what a row lacks.

    ``answer_from='boxed'``: the mapped answer column is a worked solution; the answer is its
    last ``\\boxed{}`` (left out when it has none, so the row is set aside with that reason).
    """
    fm = dict(field_map or {})
    out = {}
    for key in rollouts.DEFAULT_FIELDS:
        value = rollouts.field_of(raw, key, fm)
        if value is rollouts.MISSING:
            continue
        if key == "answer" and answer_from == "boxed":
            value = last_boxed(str(value)) if value is not None else None
            if value is None:
                continue
        out[rollouts.DEFAULT_FIELDS[key][0]] = value  # a column name validation finds without a field map
    if id_prefix and out.get("id") not in (None, ""):
        out["id"] = f"{id_prefix}/{out['id']}"
    return out


def read_source(src: dict) -> list[dict]:
    """A source's raw rows through `datasets`, after its ``where`` filter and up to its ``cap``."""
    from lib.eval_sets import open_dataset

    ds, _ = open_dataset(src["dataset"], src.get("split") or "train", src.get("config"))
    where, cap = src.get("where") or {}, src.get("cap")
    missing = [c for c in where if c not in ds.column_names]
    if missing:
        raise ValueError(f"source {source_name(src)}: 'where' names column(s) {missing} that the dataset lacks; "
                         f"its columns: {ds.column_names}")
    rows = []
    for raw in ds:
        if all(str(raw.get(c)) == str(v) for c, v in where.items()):
            rows.append(raw)
            if cap is not None and len(rows) >= cap:
                break
    return rows


def load(section, *, seed: int) -> tuple[list, dict]:
    """The training problems params ``problems`` describes, and counts per source.

    Returns ``(items, counts)``: items for :func:`lib.rollouts.generate_rollouts` (``field_map``
    already applied) and ``{name: {"read", "duplicates", "taken"}}``.
    Raises :class:`SourceShortfallError` when the sources hold fewer than ``n_train`` problems.
    """
    from lib import problems

    n = section.n_train
    if section.source == "synthetic":
        items = problems.generate(n, seed=seed, split="train", domains=section.domains, levels=section.levels)
        return items, {"synthetic": {"read": len(items), "duplicates": 0, "taken": len(items)}}
    several = bool(section.sources)
    specs = section.sources or [{"dataset": section.dataset, "field_map": section.field_map, "split": "train"}]
    pool: list[tuple[str, Any]] = []
    counts: dict[str, dict] = {}
    seen: set[str] = set()
    for src in specs:
        name = source_name(src)
        if section.source == "jsonl" and not several:
            raws = rollouts.read_problems(src["dataset"])  # keeps unreadable lines, to be set aside by line
        else:
            raws = read_source(src)
        dup = 0
        for raw in raws:
            row = canonical_row(raw, src.get("field_map"), answer_from=src.get("answer_from", "field"),
                                id_prefix=name if several else "") if isinstance(raw, dict) else raw
            text = row.get("problem") if isinstance(row, dict) else None
            if text is not None:
                key = _norm_text(text)
                if key in seen:
                    dup += 1
                    continue
                seen.add(key)
            pool.append((name, row))
        counts[name] = {"read": len(raws), "duplicates": dup, "taken": 0}
    if len(pool) < n:
        held = "; ".join(f"{k}: {v['read'] - v['duplicates']:,}" + (f" (cap {s.get('cap'):,})" if s.get("cap") else "")
                         for (k, v), s in zip(counts.items(), specs))
        raise SourceShortfallError(
            f"problems.n_train={n:,} but the sources hold {len(pool):,} distinct problems ({held}); lower n_train, "
            "raise or remove a cap, or add sources (problems.sources)")
    if len(pool) > n:
        keep = sorted(random.Random(seed).sample(range(len(pool)), n))
        pool = [pool[i] for i in keep]
    for name, _ in pool:
        counts[name]["taken"] += 1
    return [row for _, row in pool], counts
