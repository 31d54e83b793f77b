"""Decontamination: training texts that overlap an evaluation set are found and removed.

The companion Phi-4-reasoning report (arXiv 2504.21318) decontaminates training data against the
evaluation benchmarks by n-gram overlap. Here a training text's *overlap* with an evaluation
problem is the share of the training text's word n-grams that also occur in that problem; the
text is contaminated by an evaluation set when its best overlap with one of the set's problems
reaches ``threshold`` (default: any shared n-gram). See :class:`Decontaminator` for the choice
of ``n``.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd


# Runs of letters/digits (any script) are words; other punctuation only separates them. The
# operators + - * / = < > ^ are kept as one-character tokens: "8x - 28 = 60" and "8x + 28 = 60"
# are different problems (stripping them made 3 of 8000 synthetic training problems "copies" of
# test problems). A hyphen in prose ("9-kilometer") becomes a "-" token on both sides alike.
_WORD_RE = re.compile(r"[^\W_]+|[-+*/=<>^]")


def normalize_words(text: str) -> list[str]:
    """Lowercase word tokens, punctuation stripped, numbers and operators kept: ``$9$-km.`` -> ``9 - km``."""
    return _WORD_RE.findall(str(text).lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The set of word n-grams of ``normalize_words(text)``.

    A text shorter than ``n`` words gives one gram, the whole text, so that short problems are
    still compared (as exact duplicates after normalisation); an empty text gives none.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = normalize_words(text)
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class Match:
    """The best match of a training text in one evaluation set."""

    eval_set: str
    eval_id: str
    overlap: float  # share of the training text's n-grams found in that evaluation problem
    shared: int     # number of shared n-grams
    reordered: bool = False  # True: caught by the same-words-any-order check


class Decontaminator:
    """Flags training problems that overlap an evaluation benchmark.

    ``eval_texts`` maps a set name to its problem texts (``ids`` optionally to their ids).

    overlap(t, e) = |G(t) & G(e)| / |G(t)|, G the set of word n-grams (:func:`ngrams`). A text is
    contaminated by a set when some problem of the set has ``shared >= 1`` and
    ``overlap >= threshold``. Defaults:

    * ``n = 13``: the usual contamination n-gram (GPT-3, Brown et al. 2020; NeMo Curator's
      task decontamination uses 13 too). 13 consecutive normalised words shared by two real math
      problems is a copy, not a coincidence; a copy with a few edits keeps some 13-grams intact.
    * ``threshold = 0.0``: one shared n-gram is enough (the GPT-3 rule).

    Short texts: a text of fewer than ``n`` words is one gram (the whole text), so it matches an
    evaluation problem only as an exact duplicate after normalisation. The synthetic problems are
    8-30 words and template-made, so most are below 13 words; their train/test split is disjoint
    by construction (``lib.problems.split_of``), and what remains to catch is exact and near
    duplicates. There an n-gram share cannot tell a near duplicate from another problem of the
    same template: two such problems share most of their words whatever the numbers ("A bag has 4
    green and 8 red balls ... both are green?" vs "... they have the same color?" share 82% of
    their 4-grams and are different problems). Measured on 8000 synthetic training problems vs
    500 test ones: any shared 13-gram flags 25%, a 50% share of 4-grams 64%. So for synthetic sets
    use ``threshold=1.0`` (every n-gram of the training text occurs in one test problem: an exact
    copy after normalisation, or a text contained in the test problem): it flags 0 of the 8000.
    ``threshold`` may be a mapping ``{set name: threshold}`` so that one Decontaminator checks
    synthetic and real sets each with its own rule.

    ``match_reordered=True`` also flags texts whose normalised tokens are the same multiset as an
    evaluation problem's (same words, any order). It catches the same problem written in another
    order, which the synthetic split lets through (the split hashes the text): "the remainder
    when 3 * 8 * 4 is divided by 7" vs "... 8 * 3 * 4 ...", a triangle's sides or a box's edges
    listed in another order. But some reorderings are different problems ("7 green and 6 blue
    balls ... both are green" vs "7 blue and 6 green balls ... both are green"; an arithmetic
    chain in another order). On the 8000 vs 500 above it flags 240 (74 ball-drawing, 36
    remainders, 24 arithmetic chains, 17 triangles, ...). Off by default.

    Speed: one hash set of all evaluation n-grams per set is a cheap upper bound on the overlap
    (``|G(t) & union| / |G(t)|``), so only texts passing it are compared problem by problem.
    Measured on one shared CPU core against the 1,919 problems of MATH-500, AIME 2024/2025, AMC 2023 and GSM8K
    (index built in 0.13 s): 100k synthetic problems in 0.9 s; 100k texts of ~72 words in 9 s.
    """

    def __init__(self, eval_texts: Mapping[str, Sequence[str]], n: int = 13,
                 threshold: float | Mapping[str, float] = 0.0, ids: Mapping[str, Sequence[str]] | None = None,
                 match_reordered: bool = False):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not eval_texts:
            raise ValueError("eval_texts is empty: nothing to decontaminate against")
        self.sets = tuple(eval_texts)
        if isinstance(threshold, Mapping):
            unknown = sorted(set(threshold) - set(self.sets))
            missing = [s for s in self.sets if s not in threshold]
            if unknown or missing:
                raise ValueError(f"threshold mapping must name every eval set exactly: "
                                 f"missing {missing}, unknown {unknown}")
            self.thresholds = {s: float(threshold[s]) for s in self.sets}
        else:
            self.thresholds = {s: float(threshold) for s in self.sets}
        bad = {s: t for s, t in self.thresholds.items() if not 0.0 <= t <= 1.0}
        if bad:
            raise ValueError(f"threshold must be in [0, 1], got {bad}")
        self.n, self.match_reordered = n, match_reordered
        self._ids: dict[str, list[str]] = {}
        self._postings: dict[str, dict[tuple, list[int]]] = {}  # set -> n-gram -> problem indices
        self._bags: dict[str, dict[tuple, int]] = {}            # set -> sorted words -> problem index
        for name, texts in eval_texts.items():
            texts = list(texts)
            these = list(ids[name]) if ids and name in ids else [str(i) for i in range(len(texts))]
            if len(these) != len(texts):
                raise ValueError(f"eval set {name!r}: {len(texts)} texts but {len(these)} ids")
            self._ids[name] = these
            post: dict[tuple, list[int]] = {}
            bags: dict[tuple, int] = {}
            for i, t in enumerate(texts):
                for g in ngrams(t, n):
                    post.setdefault(g, []).append(i)
                if match_reordered:
                    words = normalize_words(t)
                    if words:
                        bags.setdefault(tuple(sorted(words)), i)
            self._postings[name] = post
            self._bags[name] = bags

    @classmethod
    def from_jsonl(cls, paths: Mapping[str, str | Path] | Sequence[str | Path], text_field: str = "problem",
                   **kwargs) -> "Decontaminator":
        """Evaluation sets from JSON Lines files (``{name: path}``, or paths named by their stem)."""
        if not isinstance(paths, Mapping):
            paths = {Path(p).stem: p for p in paths}
        texts, ids = {}, {}
        for name, path in paths.items():
            rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
            bad = [i for i, r in enumerate(rows) if not isinstance(r.get(text_field), str)]
            if bad:
                raise ValueError(f"{path}: line {bad[0] + 1} has no string field {text_field!r}")
            texts[name] = [r[text_field] for r in rows]
            ids[name] = [str(r.get("id", i)) for i, r in enumerate(rows)]
        return cls(texts, ids=ids, **kwargs)

    def matches(self, text: str) -> list[Match]:
        """The best match per contaminating evaluation set (empty list: clean)."""
        grams = ngrams(text, self.n)
        out: list[Match] = []
        bag = tuple(sorted(normalize_words(text))) if self.match_reordered else None
        for name in self.sets:
            post, threshold = self._postings[name], self.thresholds[name]
            found = None
            if grams:
                hits = [g for g in grams if g in post]
                # the share over the union of the set's n-grams bounds the share in any one problem
                if hits and len(hits) / len(grams) >= threshold:
                    per_problem = Counter(i for g in hits for i in post[g])
                    i, shared = max(per_problem.items(), key=lambda kv: (kv[1], -kv[0]))  # ties: first problem
                    if shared / len(grams) >= threshold:
                        found = Match(name, self._ids[name][i], shared / len(grams), shared)
            if found is None and bag and bag in self._bags[name]:
                found = Match(name, self._ids[name][self._bags[name][bag]], 1.0, 0, reordered=True)
            if found is not None:
                out.append(found)
        return out

    def contaminated(self, text: str) -> list[str]:
        """Names of the evaluation sets ``text`` overlaps (empty list: clean)."""
        return [m.eval_set for m in self.matches(text)]

    def decontaminate(self, df: pd.DataFrame, text_col: str = "problem") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """``(clean_df, removed_df, report)``; each distinct text is checked once (rollouts share it).

        ``removed_df`` has three more columns: ``contaminated_with`` (set names joined by ","),
        ``match_id`` (the matched problem's id in the first such set) and ``overlap``. The report:
        ``n_rows``, ``n_texts``, ``removed_rows``, ``removed_texts``, ``kept_rows``,
        ``per_eval_set`` (distinct texts removed per set; a text can count in several), ``n``,
        ``threshold``, ``match_reordered``, ``seconds``.
        """
        if text_col not in df.columns:
            raise ValueError(f"decontaminate: missing required column {text_col!r}; "
                             f"columns present: {', '.join(map(str, df.columns))}")
        t0 = time.perf_counter()
        texts = df[text_col].astype(str)
        found = {t: self.matches(t) for t in pd.unique(texts)}
        bad = texts.map(lambda t: bool(found[t]))
        clean = df[~bad.to_numpy()].copy()
        removed = df[bad.to_numpy()].copy()
        removed["contaminated_with"] = [",".join(m.eval_set for m in found[t]) for t in texts[bad]]
        removed["match_id"] = [found[t][0].eval_id for t in texts[bad]]
        removed["overlap"] = [max(m.overlap for m in found[t]) for t in texts[bad]]
        per_set = Counter(m.eval_set for ms in found.values() for m in ms)
        report = {
            "n_rows": int(len(df)),
            "n_texts": len(found),
            "removed_rows": int(bad.sum()),
            "removed_texts": sum(bool(ms) for ms in found.values()),
            "kept_rows": int(len(clean)),
            "per_eval_set": {name: int(per_set.get(name, 0)) for name in self.sets},
            "n": self.n,
            "threshold": self.thresholds,
            "match_reordered": self.match_reordered,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return clean, removed, report


__all__ = ["normalize_words", "ngrams", "Match", "Decontaminator"]
