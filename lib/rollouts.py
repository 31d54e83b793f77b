"""Teacher rollouts: N answers per problem, every one verified and kept, sharded, resumable.

The paper's data generation (Xu et al. 2025, arXiv 2504.21233, "Data generation"):
DeepSeek-R1 writes about 8 long chain-of-thought rollouts per problem; math-verify checks each
final answer against the reference, and rejections get a second opinion from an LLM judge.
Verified-correct rollouts feed mid-training and SFT; incorrect ones are kept for rollout DPO
(the *rejected* side of a pair). So nothing is dropped here: every rollout becomes one row
with its verdict (``correct`` True / False / None = cannot verify) and who decided it.

Output layout of ``out_dir``::

    shard-00000.parquet ...   rows; all rollouts of one problem are in one shard
    rejected.jsonl            malformed input rows, each with the reason (never dropped silently)
    rollouts_config.json      teacher / n / seed of the run (a resume with other values is refused)
    summary.json              the RolloutsSummary of the last run

Load with :func:`load_rollouts` or ``datasets.load_dataset("parquet",
data_files=str(out_dir / "shard-*.parquet"))``.

Resuming: a run killed at any point (SIGKILL included, even while a shard is being written)
and restarted with the same arguments ends with each problem's rollouts exactly once. Each
shard is written to a temporary name and renamed with ``os.replace`` (atomic on POSIX), so a
shard file is either complete or absent; on start, temporary files are deleted and problems
whose id is in a completed shard are skipped. Problems are processed in input order, and the
embedded teacher is deterministic per (seed, problem id, sample index), so the resumed output
equals an uninterrupted run's. One writer per ``out_dir`` (an advisory lock enforces it).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from lib.progress import Bar
from lib.teachers import Rollout, Teacher

log = logging.getLogger(__name__)

SHARD_GLOB = "shard-*.parquet"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.parquet$")
_TMP_PREFIX = "_tmp-"
CONFIG_FILE, REJECTED_FILE, SUMMARY_FILE, LOCK_FILE = "rollouts_config.json", "rejected.jsonl", "summary.json", ".lock"
# Test hook: "after_shard:K" or "mid_write:K" SIGKILLs this process at that point of shard K.
KILL_ENV = "LIB_ROLLOUTS_TEST_KILL"

ROW_SCHEMA = pa.schema([
    ("problem_id", pa.string()), ("problem", pa.string()), ("answer", pa.string()),
    ("domain", pa.string()), ("level", pa.int64()), ("difficulty", pa.string()),
    ("sample_index", pa.int64()), ("text", pa.string()), ("reasoning", pa.string()),
    ("extracted_answer", pa.string()), ("correct", pa.bool_()), ("checker", pa.string()),
    ("reason", pa.string()), ("n_tokens", pa.int64()), ("finished", pa.bool_()),
    ("teacher", pa.string()), ("meta", pa.string()),
])

# Input field names tried in order for each of our fields (override with field_map).
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "problem_id", "uuid", "unique_id"),
    "problem": ("problem", "question"),
    "answer": ("answer", "gold", "final_answer"),
    "domain": ("domain", "type", "subject"),
    "level": ("level",),
    "difficulty": ("difficulty",),
    # A trace already written (OpenR1-Math's "generations"). Not "solution": in MATH-style sets
    # that is a human write-up; map it explicitly (field_map={"trace": "solution"}) to use it.
    "trace": ("generation", "generations"),
}


# ============================================================================ input rows

@dataclass(frozen=True)
class PromptItem:
    """A problem that is not a lib.problems.Problem: what Local/Endpoint teachers need."""

    id: str
    problem: str
    level: int | None = None


@dataclass(frozen=True)
class ProblemRow:
    """A validated input problem. ``traces`` set: the set already carries reasoning (used as is)."""

    id: str
    problem: str
    answer: str
    domain: str | None
    level: int | None
    difficulty: str | None
    traces: tuple[str, ...] | None
    source: Any  # what the teacher receives: a Problem or a PromptItem


@dataclass(frozen=True)
class _BadLine:
    """A line of an input file that could not be read as a row."""

    line: int
    error: str
    raw: str


class RowError(ValueError):
    pass


class ShardWriteError(OSError):
    """A shard could not be written (full disk, unwritable folder); nothing partial was left."""


def read_problems(path: str | os.PathLike) -> list:
    """Rows of a local JSONL (``.jsonl``/``.json`` one object a line) or Parquet file.

    Unreadable JSON lines come back as markers that :func:`generate_rollouts` rejects with
    their line number and reason, so one bad line neither stops the run nor vanishes.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no problems file at {p}")
    if p.suffix == ".parquet":
        return pq.read_table(p).to_pylist()
    if p.suffix not in (".jsonl", ".json"):
        raise ValueError(f"{p}: expected a .jsonl or .parquet file of problems")
    rows: list = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(_BadLine(lineno, f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})",
                                     line.rstrip("\n")[:2000]))
    return rows


MISSING = _MISSING = object()  # field_of: the row has no such column


def field_of(row: Mapping, key: str, field_map: Mapping[str, str]) -> Any:
    """The value of our field ``key`` in a raw row: its ``field_map`` column, else the first default
    column present (:data:`DEFAULT_FIELDS`); ``MISSING`` when there is none."""
    if key in field_map:
        return row.get(field_map[key], _MISSING)
    for name in DEFAULT_FIELDS[key]:
        if name in row:
            return row[name]
    return _MISSING


def _text(value: Any, what: str, required: bool, numbers_ok: bool = True) -> str | None:
    """A stripped string field. Numbers are accepted where a set may store them (AIME answers)."""
    if value is _MISSING or value is None:
        if required:
            raise RowError(f"missing {what}")
        return None
    ok = (str, int, float) if numbers_ok else (str,)
    if isinstance(value, bool) or not isinstance(value, ok):
        raise RowError(f"{what} must be a string, got {type(value).__name__}")
    s = str(value).strip()
    if required and not s:
        raise RowError(f"empty {what}")
    return s or None


def _level(value: Any) -> int | None:
    """int, or a string with a number ("Level 3" in MATH) -> int; None / "" / "?" -> None."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowError(f"level must be an int, got {type(value).__name__}")
    if isinstance(value, float):
        if not value.is_integer():
            raise RowError(f"level must be a whole number, got {value}")
        return int(value)
    if isinstance(value, str):
        m = re.search(r"-?\d+", value)
        return int(m.group()) if m else None
    return value


def _traces(value: Any) -> tuple[str, ...] | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(t, str) and t.strip() for t in value):
        raise RowError("trace field must be a non-empty string or a non-empty list of non-empty strings")
    return tuple(value)


def _normalize(item: Any, field_map: Mapping[str, str]) -> ProblemRow:
    """One input item -> ProblemRow, or RowError saying what is wrong with it."""
    from lib.problems import Problem

    if isinstance(item, _BadLine):
        raise RowError(item.error)
    if isinstance(item, Problem):
        return ProblemRow(item.id, item.problem, item.answer, item.domain, item.level, item.difficulty, None, item)
    if not isinstance(item, Mapping):
        raise RowError(f"expected a mapping (dict) or lib.problems.Problem, got {type(item).__name__}")
    problem = _text(field_of(item, "problem", field_map), "problem text", True, numbers_ok=False)
    answer = _text(field_of(item, "answer", field_map), "reference answer", True)
    raw_id = field_of(item, "id", field_map)
    if raw_id is not _MISSING and raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise RowError(f"id must be a string or int, got {type(raw_id).__name__}")
    pid = str(raw_id) if raw_id not in (_MISSING, None, "") else "sha1-" + hashlib.sha1(problem.encode()).hexdigest()[:12]
    level = _level(field_of(item, "level", field_map))
    row = ProblemRow(pid, problem, answer, _text(field_of(item, "domain", field_map), "domain", False), level,
                     _text(field_of(item, "difficulty", field_map), "difficulty", False),
                     _traces(field_of(item, "trace", field_map)), PromptItem(pid, problem, level))
    if all(k in item for k in ("domain", "level", "spec")):  # a lib.problems row: the embedded teacher can use it
        from lib.teachers import as_problem

        try:
            row = replace(row, source=as_problem(item))
        except Exception as e:  # noqa: BLE001 - a broken spec is a malformed row
            raise RowError(f"synthetic problem row does not rebuild from its spec ({type(e).__name__}: {e})") from None
    return row


def _jsonable(item: Any, limit: int = 2000) -> Any:
    if isinstance(item, _BadLine):
        return item.raw
    if hasattr(item, "to_dict"):
        item = item.to_dict()
    try:
        s = json.dumps(item, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        s = repr(item)
    return json.loads(s) if len(s) <= limit else s[:limit] + f"...[{len(s) - limit} more chars]"


def validate_problems(items: Iterable[Any], field_map: Mapping[str, str] | None = None
                      ) -> tuple[list[ProblemRow], list[dict]]:
    """Valid rows in input order, and rejected ones as ``{index, id, reason, row}`` dicts.

    Rejected: unreadable lines, non-mapping items, missing/empty/ill-typed problem text or
    reference answer, ill-typed id/level/trace, and a repeated id (the first one is kept).
    A missing id is derived from the problem text (``sha1-…``), so it is stable across runs.
    """
    field_map = dict(field_map or {})
    unknown = set(field_map) - set(DEFAULT_FIELDS)
    if unknown:
        raise ValueError(f"field_map keys must be among {sorted(DEFAULT_FIELDS)}; got {sorted(unknown)}")
    valid: list[ProblemRow] = []
    rejected: list[dict] = []
    first_at: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            row = _normalize(item, field_map)
            if row.id in first_at:
                raise RowError(f"duplicate id {row.id!r} (first at index {first_at[row.id]})")
        except RowError as e:
            rejected.append({"index": i, "id": _id_of(item), "reason": str(e), "row": _jsonable(item)})
            continue
        first_at[row.id] = i
        valid.append(row)
    return valid, rejected


def _id_of(item: Any) -> str | None:
    raw = item.get("id") if isinstance(item, Mapping) else getattr(item, "id", None)
    return None if raw is None else str(raw)


# ============================================================================ summary

@dataclass
class RolloutsSummary:
    """Counts over every shard in ``out_dir`` (this run and any earlier, resumed one).

    ``correct``/``incorrect``/``unverifiable`` follow the verifier's True/False/None;
    ``recovered_by_second_opinion`` = rollouts math-verify rejected and the judge accepted.
    ``rollouts_per_s`` covers this run's generation + verification only.
    """

    problems: int = 0
    rollouts: int = 0
    correct: int = 0
    incorrect: int = 0
    unverifiable: int = 0
    recovered_by_second_opinion: int = 0
    unfinished: int = 0
    rejected_rows: int = 0
    problems_resumed: int = 0
    problems_generated: int = 0
    rollouts_generated: int = 0
    rollouts_per_s: float = 0.0
    elapsed_s: float = 0.0
    shards: int = 0
    teacher: str = ""
    by_level: dict[str, dict] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.rollouts if self.rollouts else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy}


# ============================================================================ shards

def shard_paths(out_dir: str | os.PathLike) -> list[Path]:
    """Completed shards in index order."""
    out = Path(out_dir)
    found = [(int(m.group(1)), p) for p in out.glob(SHARD_GLOB) if (m := _SHARD_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_columns(paths: Sequence[Path], columns: list[str]) -> pa.Table:
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p, columns=columns))
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(f"cannot read rollouts shard {p} ({type(e).__name__}: {e}); shards are written "
                               "atomically, so it was changed by something else: delete it and rerun") from e
    return pa.concat_tables(tables) if tables else pa.table({c: pa.array([], ROW_SCHEMA.field(c).type) for c in columns})


def load_rollouts(out_dir: str | os.PathLike):
    """All rollouts of ``out_dir`` as a ``datasets.Dataset``, in shard (= problem input) order."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    paths = shard_paths(out_dir)
    if not paths:
        raise FileNotFoundError(f"no {SHARD_GLOB} in {out_dir}: run generate_rollouts first")
    return Dataset(InMemoryTable(_read_columns(paths, ROW_SCHEMA.names)))


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(_TMP_PREFIX + path.name)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _test_hook(event: str, shard: int, tmp: Path | None = None) -> None:
    """SIGKILL this process at a chosen point (tests of resume-after-kill); no-op otherwise."""
    spec = os.environ.get(KILL_ENV)
    if spec != f"{event}:{shard}":
        return
    if tmp is not None:  # leave a half-written temp file behind, as a real kill mid-write would
        with open(tmp, "r+b") as f:
            f.truncate(max(1, os.path.getsize(tmp) // 2))
    os.kill(os.getpid(), signal.SIGKILL)


def _write_shard(out_dir: Path, index: int, rows: list[dict]) -> Path:
    """Write rows to ``shard-{index}.parquet`` via a temp file + fsync + ``os.replace``."""
    final = out_dir / f"shard-{index:05d}.parquet"
    tmp = out_dir / f"{_TMP_PREFIX}{final.name}"
    table = pa.Table.from_pylist(rows, schema=ROW_SCHEMA)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _test_hook("mid_write", index, tmp)
        os.replace(tmp, final)
    except OSError as e:  # full disk, unwritable folder: no partial shard, earlier shards untouched
        tmp.unlink(missing_ok=True)
        raise ShardWriteError(e.errno, f"could not write rollouts shard {final} ({e.strerror or e}); the "
                              f"{index} shard(s) before it are intact and a rerun resumes after them: free space "
                              f"or fix permissions in {out_dir}") from e
    _test_hook("after_shard", index)
    return final


def _clean_temp(out_dir: Path) -> int:
    stale = list(out_dir.glob(_TMP_PREFIX + "*"))
    for p in stale:
        p.unlink()
    return len(stale)


class _DirLock:
    """An advisory lock on ``out_dir`` (released by the OS even on SIGKILL)."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_FILE
        self.f = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, documented single-writer rule still applies
            return self
        self.f = open(self.path, "a")
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise RuntimeError(f"another generate_rollouts run is writing to {self.path.parent}; "
                               "wait for it or use another out_dir") from None
        return self

    def __exit__(self, *exc):
        if self.f is not None:
            self.f.close()


def _check_config(out_dir: Path, config: dict) -> None:
    """Refuse to mix rollouts of different teachers / n / seed in one folder."""
    path = out_dir / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != config:
            diff = {k: (old.get(k), config.get(k)) for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)}
            raise ValueError(f"{out_dir} holds rollouts made with other settings {diff} (old, new); "
                             "use a new out_dir, or delete it to start over")
    else:
        _atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


# ============================================================================ generation

def _default_count(rollout: Rollout) -> int:
    return rollout.n_tokens if rollout.n_tokens is not None else len(rollout.text.split())


def _rollouts_for(chunk: list[ProblemRow], teacher: Teacher | None, n: int, seed: int,
                  trace_source: str, top_up: bool = False) -> list[tuple[ProblemRow, int, Rollout, str]]:
    """(problem, sample index, rollout, teacher name) for a chunk; existing traces used as is.

    ``top_up``: a problem whose set carries fewer than ``n`` traces gets the rest from the teacher
    (sample indices after its own traces), so every problem has ``n`` rollouts."""
    missing = {r.id: n if r.traces is None else (n - len(r.traces) if top_up else 0) for r in chunk}
    need = [r for r in chunk if missing[r.id] > 0]
    generated: dict[str, list[Rollout]] = {}
    if need and teacher is None:
        raise ValueError(f"{len(need)} problem(s) (first: {need[0].id}) need {missing[need[0].id]} more rollout(s) "
                         "than their set carries and no teacher was given")
    for k in sorted({missing[r.id] for r in need}):  # one teacher call per number of rollouts asked for
        group = [r for r in need if missing[r.id] == k]
        outs = teacher.generate([r.source for r in group], k, seed)
        if len(outs) != len(group) or any(len(o) != k for o in outs):
            raise RuntimeError(f"teacher {teacher.name} returned {[len(o) for o in outs]} rollouts for "
                               f"{len(group)} problems x n={k}")
        generated.update({r.id: o for r, o in zip(group, outs)})
    out = []
    for r in chunk:
        own = list(r.traces or ())
        out += [(r, k, Rollout(t, None, True, None, {"source": trace_source}), trace_source) for k, t in enumerate(own)]
        out += [(r, len(own) + k, ro, teacher.name) for k, ro in enumerate(generated.get(r.id, []))]
    return out


def _rows_for(items, verifier, count_tokens: Callable[[str], int] | None) -> list[dict]:
    checks = verifier.check_many([(r.answer, ro.text, r.problem) for r, _, ro, _ in items])
    rows = []
    for (r, k, ro, tname), c in zip(items, checks):
        rows.append({
            "problem_id": r.id, "problem": r.problem, "answer": r.answer, "domain": r.domain, "level": r.level,
            "difficulty": r.difficulty, "sample_index": k, "text": ro.text, "reasoning": ro.reasoning,
            "extracted_answer": c.answer, "correct": c.equal, "checker": c.checker, "reason": c.reason,
            "n_tokens": count_tokens(ro.text) if count_tokens else _default_count(ro),
            "finished": ro.finished, "teacher": tname, "meta": json.dumps(ro.meta, sort_keys=True, default=repr),
        })
    return rows


def generate_rollouts(problems: Sequence[Any] | str | os.PathLike, teacher: Teacher | None, n: int,
                      out_dir: str | os.PathLike, verifier, shard_size: int = 256, seed: int = 0,
                      progress: bool = True, count_tokens: Callable[[str], int] | None = None,
                      field_map: Mapping[str, str] | None = None, trace_source: str = "dataset",
                      top_up: bool = False) -> RolloutsSummary:
    """Write ``n`` verified teacher rollouts per problem to sharded Parquet in ``out_dir``.

    ``problems``: :class:`lib.problems.Problem` objects, dict rows (see :data:`DEFAULT_FIELDS`;
    ``field_map`` maps our field -> their column, e.g. ``{"problem": "question"}``), or a path
    to a JSONL/Parquet file of rows. A row that already carries reasoning (``trace`` field) is
    used as is - its traces become its rollouts - and verified like the rest (the paper uses
    sets that already carry reasoning traces as they are); with ``top_up`` the teacher writes
    the rest of a problem's ``n`` rollouts when its set carries fewer (else they stay fewer).
    ``verifier``: a :class:`lib.verify.Verifier` (``check_many``); its judge, if any, gives
    rejections a second opinion. ``shard_size``: problems per shard (the most work a kill can
    lose). ``count_tokens``: text -> tokens (default: the teacher's count, else whitespace
    words). Resumable: see the module docstring. Returns the summary (also ``summary.json``).
    """
    if n < 1 or shard_size < 1:
        raise ValueError(f"n and shard_size must be >= 1, got n={n}, shard_size={shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = read_problems(problems) if isinstance(problems, (str, os.PathLike)) else problems
    valid, rejected = validate_problems(items, field_map)
    t0 = time.perf_counter()
    with _DirLock(out):
        _clean_temp(out)
        config = {"format": 1, "n": n, "seed": seed, "teacher": teacher.name if teacher else None,
                  "teacher_config": getattr(teacher, "config", None)}
        if top_up and any(r.traces is not None and len(r.traces) < n for r in valid):
            config["top_up"] = True  # only where it changes the rollouts (older folders stay resumable)
        _check_config(out, json.loads(json.dumps(config, default=repr)))
        _atomic_write_text(out / REJECTED_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejected))
        for r in rejected:
            log.warning("rejected input row %s (id %s): %s", r["index"], r["id"], r["reason"])
        paths = shard_paths(out)
        done = set(_read_columns(paths, ["problem_id"]).column("problem_id").to_pylist())
        pending = [r for r in valid if r.id not in done]
        next_index = int(_SHARD_RE.match(paths[-1].name).group(1)) + 1 if paths else 0
        n_rollouts = _generate_shards(pending, teacher, n, seed, out, next_index, verifier, shard_size,
                                      count_tokens, trace_source, progress, len(valid) - len(pending), top_up)
        elapsed = time.perf_counter() - t0
        summary = summarize(out)
        summary.rejected_rows, summary.teacher = len(rejected), config["teacher"] or trace_source
        summary.problems_resumed = len(valid) - len(pending)
        summary.problems_generated, summary.rollouts_generated = len(pending), n_rollouts
        summary.elapsed_s = round(elapsed, 3)
        summary.rollouts_per_s = round(n_rollouts / elapsed, 2) if n_rollouts and elapsed > 0 else 0.0
        _atomic_write_text(out / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def _generate_shards(pending: list[ProblemRow], teacher, n, seed, out: Path, next_index: int, verifier,
                     shard_size: int, count_tokens, trace_source: str, progress: bool, already: int,
                     top_up: bool = False) -> int:
    """The main loop: one shard per ``shard_size`` pending problems. Returns rollouts written."""
    total = already + len(pending)
    bar = Bar(total, "rollouts", unit="problem", initial=already, display=progress)
    written, correct, t0 = 0, 0, time.perf_counter()
    try:
        for start in range(0, len(pending), shard_size):
            chunk = pending[start:start + shard_size]
            rows = _rows_for(_rollouts_for(chunk, teacher, n, seed, trace_source, top_up), verifier, count_tokens)
            path = _write_shard(out, next_index, rows)
            next_index += 1
            written += len(rows)
            correct += sum(r["correct"] is True for r in rows)
            bar.update(len(chunk))
            bar.set_metrics(correct=round(correct / max(written, 1), 4))
            log.info("%s | problems %d/%d | rollouts %d | correct %.1f%% | %.1f rollouts/s", path.name,
                     already + start + len(chunk), total, written, 100 * correct / max(written, 1),
                     written / max(time.perf_counter() - t0, 1e-9))
    finally:
        bar.close()
    return written


def summarize(out_dir: str | os.PathLike) -> RolloutsSummary:
    """Counts over the completed shards of ``out_dir`` (by level: rollouts, correct, accuracy)."""
    paths = shard_paths(out_dir)
    t = _read_columns(paths, ["problem_id", "level", "correct", "checker", "finished"]).to_pydict()
    s = RolloutsSummary(problems=len(set(t["problem_id"])), rollouts=len(t["problem_id"]), shards=len(paths))
    for lv, ok, checker, fin in zip(t["level"], t["correct"], t["checker"], t["finished"]):
        s.correct += ok is True
        s.incorrect += ok is False
        s.unverifiable += ok is None
        s.recovered_by_second_opinion += ok is True and checker.startswith("judge:")
        s.unfinished += not fin
        b = s.by_level.setdefault("none" if lv is None else str(lv), {"rollouts": 0, "correct": 0})
        b["rollouts"] += 1
        b["correct"] += ok is True
    for b in s.by_level.values():
        b["accuracy"] = round(b["correct"] / b["rollouts"], 4)
    s.by_level = dict(sorted(s.by_level.items()))
    return s


# ============================================================================ CLI

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lib.rollouts --out DIR [--problems 200] [--n 8] ...``: embedded-teacher rollouts
    for synthetic problems (a benchmark and a smoke run); prints the summary as JSON."""
    import argparse

    from lib.problems import generate
    from lib.teachers import EmbeddedTeacher
    from lib.judges import RuleJudge
    from lib.verify import Verifier

    ap = argparse.ArgumentParser(prog="python -m lib.rollouts", description=main.__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output folder (resumes if it holds a run with the same settings)")
    ap.add_argument("--problems", type=int, default=200, help="synthetic training problems")
    ap.add_argument("--n", type=int, default=8, help="rollouts per problem (paper: ~8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbosity", choices=("compact", "normal", "long"), default="normal")
    ap.add_argument("--shard-size", type=int, default=256, help="problems per shard")
    ap.add_argument("--workers", type=int, default=0, help="verifier worker processes (0 = in-process)")
    args = ap.parse_args(argv)
    with Verifier(workers=args.workers, judge=RuleJudge()) as v:
        s = generate_rollouts(generate(args.problems, seed=args.seed), EmbeddedTeacher(seed=args.seed, verbosity=args.verbosity),
                              args.n, args.out, v, shard_size=args.shard_size, seed=args.seed)
    print(json.dumps(s.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def examples(df) -> dict[str, str | None]:
    """The text of the first verified-correct and first verified-incorrect rollout of a rollouts
    DataFrame (:func:`load_rollouts`), None where a run has none (a perfect or hopeless teacher)."""
    out = {}
    for label, verdict in (("correct", True), ("incorrect", False)):
        texts = df.loc[df["correct"].astype("boolean").eq(verdict).fillna(False).to_numpy(bool), "text"]
        out[label] = str(texts.iloc[0]) if len(texts) else None
    return out
