"""Evaluation sets: load any benchmark into rows with `id`, `problem`, `answer` (+ its other fields).

Every loader returns `list[dict]`; each row has a unique str `id`, a non-empty str `problem`,
a str `answer` (AIME-style integers become strings, since lib.verify compares strings), a
`benchmark` name, and every other field of the source row unchanged. A malformed row is an
error (`BenchmarkFormatError`) naming the file, the line and what is wrong; nothing is dropped.

Sources
-------
* Local JSON Lines (`load_jsonl`): any file of rows with id, problem, answer. `load_local("math500")`
  reads a folder of frozen copies named as in `LOCAL_FILES` (MATH-500 500, AIME 2024 30, AIME 2025
  30, AMC 2023 40, GSM8K test 1,319 rows), given as `root=` or by the environment variable
  `PHI4MR_BENCHMARKS_DIR`; the repository ships no copies (use the hub presets).
* The Hugging Face Hub or any local file `datasets` can read (`load_hub`); `PRESETS` holds the
  paper's evaluation sets (Xu et al. 2025: AIME 2024, MATH-500, GPQA-Diamond):

  ===============  ===========================  ============  =====  =========================
  preset           hub id                       config        split  fields (id/problem/answer)
  ===============  ===========================  ============  =====  =========================
  math500          HuggingFaceH4/MATH-500       -             test   unique_id/problem/answer
  aime24           HuggingFaceH4/aime_2024      -             train  id/problem/answer
  aime24_aimo      AI-MO/aimo-validation-aime   -             train  id/problem/answer (2024
                                                                     rows of AIME 2022-2024)
  gpqa_diamond     Idavidrein/gpqa              gpqa_diamond  train  built by `gpqa_to_choice`
  ===============  ===========================  ============  =====  =========================

  GPQA-Diamond (198 questions) is gated (accept its terms on the Hub first) and its authors ask
  that questions not be published in plain text, so there is no local copy. `gpqa_to_choice`
  shuffles the correct answer and the three incorrect ones into options A-D with a seed taken
  from the record id, so the letter of the correct answer is the same on every machine and
  every run, and `answer` is that letter (graded by lib.verify's multiple-choice rule).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

DEFAULT_FIELDS: Mapping[str, str | None] = {"id": "id", "problem": "problem", "answer": "answer"}
REQUIRED = ("id", "problem", "answer")


class BenchmarkFormatError(ValueError):
    """A benchmark row is malformed; the message names the source, the row and the problem."""


# ---------------------------------------------------------------------------------------------
# Row normalisation (shared by every loader)
# ---------------------------------------------------------------------------------------------


def _answer_str(value, where: str) -> str:
    if isinstance(value, bool) or value is None:
        raise BenchmarkFormatError(f"{where}: answer is {value!r}; expected a string or a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)  # 27.0 -> "27" (AMC)
    if isinstance(value, str):
        if not value.strip():
            raise BenchmarkFormatError(f"{where}: answer is empty")
        return value.strip()
    raise BenchmarkFormatError(f"{where}: answer has type {type(value).__name__}; expected a string or a number")


def normalize_row(raw: Mapping, fields: Mapping[str, str | None], where: str, index: int, name: str) -> dict:
    """Map source fields onto id/problem/answer and validate them; other fields are kept.

    `fields` maps our name -> source field; `{"id": None}` generates ids `<name>-0000`, ...
    A source field that was renamed is not repeated under its old name.
    """
    if not isinstance(raw, Mapping):
        raise BenchmarkFormatError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    unknown = set(fields) - set(REQUIRED)
    if unknown:
        raise ValueError(f"fields may only map {REQUIRED}; unknown key(s) {sorted(unknown)}")
    fields = {**DEFAULT_FIELDS, **fields}
    out: dict = {}
    for ours in REQUIRED:
        src = fields[ours]
        if src is None and ours == "id":
            out["id"] = f"{name}-{index:04d}"
            continue
        if src is None or src not in raw:
            raise BenchmarkFormatError(
                f"{where}: missing field '{src}' (for '{ours}'); fields present: {sorted(raw)}. "
                f"Pass fields={{'{ours}': '<source field>'}} if it has another name."
            )
        out[ours] = raw[src]
    if isinstance(out["id"], bool) or not isinstance(out["id"], (str, int)) or str(out["id"]).strip() == "":
        raise BenchmarkFormatError(f"{where}: id {out['id']!r} must be a non-empty string or an integer")
    out["id"] = str(out["id"])
    if not isinstance(out["problem"], str) or not out["problem"].strip():
        raise BenchmarkFormatError(f"{where}: problem must be a non-empty string, got {out['problem']!r:.60}")
    out["answer"] = _answer_str(out["answer"], where)
    consumed = {fields[k] for k in REQUIRED if fields[k] is not None}
    for key, value in raw.items():
        if key not in consumed and key not in out:
            out[key] = value
    out.setdefault("benchmark", name)
    return out


def _check_unique(rows: list[dict], wheres: list[str]) -> None:
    seen: dict[str, str] = {}
    for row, where in zip(rows, wheres):
        if row["id"] in seen:
            raise BenchmarkFormatError(f"{where}: duplicate id {row['id']!r} (first seen at {seen[row['id']]})")
        seen[row["id"]] = where


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def load_jsonl(path: str | Path, fields: Mapping[str, str | None] = DEFAULT_FIELDS, name: str | None = None) -> list[dict]:
    """Rows of a local JSON Lines file (blank lines skipped), validated as described above."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    name = name or path.stem
    rows, wheres = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            rows.append(normalize_row(raw, fields, where, len(rows), name))
            wheres.append(where)
    if not rows:
        raise BenchmarkFormatError(f"{path}: no rows")
    _check_unique(rows, wheres)
    return rows


_LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def local_file(path: str | Path) -> Path | None:
    """A local file named in params: as given (relative to the current folder), else relative to the
    repository root (a notebook opened in JupyterLab runs in notebooks/); None when neither exists."""
    from lib.paths import ROOT

    p = Path(path).expanduser()
    for cand in (p,) if p.is_absolute() else (p, ROOT / p):
        if cand.is_file():
            return cand
    return None


def open_dataset(name_or_path: str, split: str, config: str | None = None, **load_kwargs):
    """``(dataset, short name)`` through `datasets.load_dataset`: a local .json/.jsonl/.parquet/.csv
    file by its builder, anything else as a hub id or builder name (the network the first time)."""
    import datasets

    suffix = Path(name_or_path).suffix.lower()
    local = local_file(name_or_path) if suffix in _LOCAL_BUILDERS else None
    if local is not None:
        ds = datasets.load_dataset(_LOCAL_BUILDERS[suffix], data_files=str(local), split=split, **load_kwargs)
        return ds, local.stem
    ds = datasets.load_dataset(name_or_path, config, split=split, **load_kwargs)
    return ds, config or name_or_path.rstrip("/").rsplit("/", 1)[-1]


def load_hub(
    name_or_path: str,
    split: str,
    fields: Mapping[str, str | None] = DEFAULT_FIELDS,
    config: str | None = None,
    *,
    name: str | None = None,
    transform: Callable[[dict, int], dict] | None = None,
    keep: Callable[[dict], bool] | None = None,
    **load_kwargs,
) -> list[dict]:
    """Rows from `datasets.load_dataset` (hub id, builder name, or a local .json/.jsonl/.parquet/.csv).

    `transform(raw, index)` reshapes a source row before field mapping (GPQA); `keep(raw)`
    selects rows (AIME 2024 out of AIME 2022-2024). `load_kwargs` go to `load_dataset`
    (`data_files=`, `cache_dir=`, `revision=`...). Hub ids need the network the first time.
    """
    ds, short = open_dataset(name_or_path, split, config, **load_kwargs)
    name = name or short
    rows, wheres = [], []
    for i, raw in enumerate(ds):
        if keep is not None and not keep(raw):
            continue
        where = f"{name_or_path}[{config or ''}:{split}] row {i}"
        if transform is not None:
            raw = transform(raw, i)
        rows.append(normalize_row(raw, fields, where, len(rows), name))
        wheres.append(where)
    if not rows:
        raise BenchmarkFormatError(f"{name_or_path} ({config}, {split}): no rows after filtering")
    _check_unique(rows, wheres)
    return rows


# ---------------------------------------------------------------------------------------------
# GPQA: options A-D, deterministic shuffle
# ---------------------------------------------------------------------------------------------

GPQA_LETTERS = ("A", "B", "C", "D")


def gpqa_to_choice(raw: Mapping, index: int = 0) -> dict:
    """A GPQA record -> id, problem (question + options A-D), options, answer letter.

    The shuffle is seeded by sha256 of the record id (or the question text), not by Python's
    salted `hash`, so every process and machine gets the same letters.
    """
    for key in ("Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"):
        if key not in raw:
            raise BenchmarkFormatError(f"GPQA row {index}: missing field '{key}'; fields present: {sorted(raw)}")
    question = raw["Question"].strip()
    correct = raw["Correct Answer"].strip()
    incorrect = [raw[f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)]
    ident = str(raw.get("Record ID") or question)
    seed = int.from_bytes(hashlib.sha256(ident.encode("utf-8")).digest()[:8], "big")
    texts = [correct, *incorrect]
    order = list(range(4))
    random.Random(seed).shuffle(order)
    options = {letter: texts[j] for letter, j in zip(GPQA_LETTERS, order)}
    answer = GPQA_LETTERS[order.index(0)]
    problem = question + "\n\n" + "\n".join(f"{k}) {v}" for k, v in options.items())
    return {
        "id": str(raw.get("Record ID") or f"gpqa-{index:04d}"),
        "problem": problem,
        "answer": answer,
        "options": options,
        "correct_answer_text": correct,
        "incorrect_answers": incorrect,
        "subject": raw.get("High-level domain"),
        "subdomain": raw.get("Subdomain"),
    }


# ---------------------------------------------------------------------------------------------
# Presets and the project's local copies
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Where a benchmark lives on the Hub and how its fields map (see module docstring)."""

    path: str
    split: str
    fields: Mapping[str, str | None] = field(default_factory=lambda: dict(DEFAULT_FIELDS))
    config: str | None = None
    transform: Callable[[dict, int], dict] | None = None
    keep: Callable[[dict], bool] | None = None
    note: str = ""


def _is_aime_2024(raw: Mapping) -> bool:
    return "2024" in str(raw.get("url", ""))


PRESETS: dict[str, Preset] = {
    "math500": Preset(
        "HuggingFaceH4/MATH-500", "test", {"id": "unique_id", "problem": "problem", "answer": "answer"},
        note="500 problems of the MATH test set chosen for PRM800K; has subject, level, solution.",
    ),
    "aime24": Preset("HuggingFaceH4/aime_2024", "train", note="30 problems, AIME 2024 I and II."),
    "aime24_aimo": Preset(
        "AI-MO/aimo-validation-aime", "train", keep=_is_aime_2024,
        note="AIME 2022-2024 (90 rows); the 2024 rows are kept by their AoPS url.",
    ),
    "gpqa_diamond": Preset(
        "Idavidrein/gpqa", "train", config="gpqa_diamond", transform=gpqa_to_choice,
        note="198 questions, gated; options shuffled deterministically, answer = letter A-D.",
    ),
}


def load_preset(name: str, **load_kwargs) -> list[dict]:
    """Load a `PRESETS` benchmark through `load_hub` (needs the network or a warm HF cache)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return load_hub(p.path, p.split, p.fields, p.config, name=name, transform=p.transform, keep=p.keep, **load_kwargs)


LOCAL_FILES: dict[str, str] = {
    "math500": "math500.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.jsonl",
    "gsm8k": "gsm8k_test.jsonl",
}
LOCAL_COUNTS: dict[str, int] = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319}


BENCHMARKS_DIR_ENV = "PHI4MR_BENCHMARKS_DIR"


def load_local(name: str, root: str | Path | None = None) -> list[dict]:
    """One frozen benchmark copy by short name (see `LOCAL_FILES`), from ``root`` or the folder in
    the environment variable ``PHI4MR_BENCHMARKS_DIR``."""
    import os

    if name not in LOCAL_FILES:
        raise KeyError(f"unknown local benchmark {name!r}; choose one of {sorted(LOCAL_FILES)}")
    if root is None:
        root = os.environ.get(BENCHMARKS_DIR_ENV)
        if not root:
            raise FileNotFoundError(
                f"no folder of benchmark copies given for {name!r}: pass root= or set {BENCHMARKS_DIR_ENV} to a "
                f"folder holding {LOCAL_FILES[name]}, or use load_preset({name!r}) where a Hub preset exists.")
    path = Path(root) / LOCAL_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found. Pass root= (or set {BENCHMARKS_DIR_ENV}) to the folder of benchmark copies, "
            f"or use load_preset({name!r}) where a Hub preset exists.")
    return load_jsonl(path, name=name)


# ---------------------------------------------------------------------------------------------
# Reference answers inside reference solutions (for self-agreement checks)
# ---------------------------------------------------------------------------------------------

_GSM8K_FINAL_RE = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gsm8k_solution_answer(solution: str) -> str | None:
    """The final answer after `####` in a GSM8K solution, thousands separators removed."""
    m = _GSM8K_FINAL_RE.search(solution)
    return m.group(1).replace(",", "").strip() if m else None
