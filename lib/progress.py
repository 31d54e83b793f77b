"""Live progress of a running stage, for both places a person watches.

In JupyterLab every long loop shows a tqdm bar (a widget there, text elsewhere). Under the runner
(``python -m lib.recipe``) the notebook runs in a kernel nobody sees, so the same loops also append
one JSON line at most every second to ``outputs/<run>/<NN_stage>/progress.jsonl``; the runner tails
that file and prints one updating line per stage (task, step/total, loss or reward, rate, elapsed,
ETA). The file is named by the environment variable ``PHI4MR_PROGRESS_FILE``, which
:func:`start` sets, so processes a stage starts (``accelerate launch``) report to it too; of
several distributed processes only rank 0 writes.

A record: ``{"task", "n", "total", "unit", "elapsed", "rate", "metrics", "done", "time", "start"}``
with ``rate`` in units per second since the task started (resumed work not counted), ``metrics``
the latest values a loop attached (loss, reward, accuracy), and ``start`` true on the first record
of a bar or a training run.

**The stage ETA.** A task's ETA covers only the running loop, and most stages run several (04:
evaluate, sample, train, evaluate, twice). So the runner also predicts when the whole stage ends,
from an *ETA profile*: the times at which each task of the same stage started in an earlier run
with the same parameters (:func:`profile_of`). Where this run is in that profile (the current
task and its share done) and how long it took to get there give its speed relative to the earlier
run; the rest of the profile, scaled by that speed, is the stage ETA (:func:`stage_eta`). The runner
keeps the profiles of a run folder's finished stages in ``outputs/<run>/eta_profile.json``; a fresh
clone starts from ``params/<run>.eta.json`` (the profile of a reference run, shipped with the
params). Without a profile for the stage's parameters, the line shows the task ETA only.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from lib.bars import tqdm  # tqdm.auto, whose notebook widget saves as its final text line

ENV = "PHI4MR_PROGRESS_FILE"
MIN_INTERVAL_S = 1.0     # at most one record a second (a progress file, not a log)
_last_write = 0.0


def start(path: str | Path) -> Path:
    """Make ``path`` (emptied) the progress file of this process and of the processes it starts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    os.environ[ENV] = str(path)
    return path


def sink() -> Path | None:
    """The progress file records go to, or None (nothing is watching; rank > 0 of a launch)."""
    if os.environ.get("RANK", "0") != "0":
        return None
    p = os.environ.get(ENV)
    return Path(p) if p else None


def report(task: str, n: float, total: float | None, *, unit: str = "it", elapsed: float = 0.0,
           done_before: float = 0.0, metrics: dict | None = None, done: bool = False, force: bool = False,
           start: bool = False) -> bool:
    """Append one record (throttled to one a second unless ``force`` or ``start``); True when written.

    ``start`` marks the first record of a task (a bar, a training run): the stage ETA counts them."""
    global _last_write
    path = sink()
    now = time.time()
    if path is None or (not (force or start) and now - _last_write < MIN_INTERVAL_S):
        return False
    worked = n - done_before
    rate = worked / elapsed if elapsed > 0 and worked > 0 else None
    rec = {"task": task, "n": n, "total": total, "unit": unit, "elapsed": round(elapsed, 3),
           "rate": rate, "metrics": _clean(metrics or {}), "done": done, "time": now}
    if start:
        rec["start"] = True
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")
    _last_write = now
    return True


def _clean(metrics: dict) -> dict:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not (isinstance(v, float) and not math.isfinite(v)):
            out[k] = v
        elif isinstance(v, str):
            out[k] = v[:40]
    return out


class Bar:
    """A tqdm bar that also reports to the progress file; ``display=False`` reports without a bar."""

    def __init__(self, total: float | None, task: str, *, unit: str = "it", initial: float = 0,
                 display: bool = True, leave: bool = True):
        self.task, self.total, self.unit = task, total, unit
        self.n = self.initial = initial
        self.metrics: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self._tqdm = tqdm(total=total, desc=task, unit=unit, initial=initial, disable=not display, leave=leave)
        self._report(start=True)

    def _report(self, force: bool = False, done: bool = False, start: bool = False) -> None:
        report(self.task, self.n, self.total, unit=self.unit, elapsed=time.monotonic() - self.t0,
               done_before=self.initial, metrics=self.metrics, done=done, force=force, start=start)

    def update(self, n: float = 1) -> None:
        self.n += n
        self._tqdm.update(n)
        self._report()

    def set_metrics(self, **metrics) -> None:
        self.metrics.update(metrics)
        self._tqdm.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in self.metrics.items()},
                               refresh=False)

    def close(self) -> None:
        self._report(force=True, done=True)
        self._tqdm.close()

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def callback():
    """A transformers ``TrainerCallback`` that reports optimizer steps and the latest loss/reward.

    The trainer shows its own tqdm bar; this only feeds the progress file (a resumed run counts
    its rate from the step it resumed at)."""
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self):
            self.t0, self.first, self.metrics = time.monotonic(), 0, {}

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.first = time.monotonic(), state.global_step
            report("train", state.global_step, state.max_steps, unit="step", start=True)

        def on_log(self, args, state, control, logs=None, **kw):
            for key in ("loss", "reward", "rewards/mean", "learning_rate", "rewards/chosen", "train_loss"):
                if logs and key in logs:
                    self.metrics[key.replace("rewards/", "reward_")] = logs[key]

        def on_step_end(self, args, state, control, **kw):
            report("train", state.global_step, state.max_steps, unit="step", elapsed=time.monotonic() - self.t0,
                   done_before=self.first, metrics=self.metrics)

        def on_train_end(self, args, state, control, **kw):
            report("train", state.global_step, state.max_steps, unit="step", elapsed=time.monotonic() - self.t0,
                   done_before=self.first, metrics=self.metrics, done=True, force=True)

    return ProgressCallback()


# ----------------------------------------------------------------------------------- the watcher
def _fmt_s(sec: float | None) -> str:
    if sec is None or not math.isfinite(sec):
        return "?"
    m, s = divmod(int(round(sec)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def describe(rec: dict | None, stage_elapsed: float, stage_eta: float | None = None) -> str:
    """One line for a progress record (or for a stage with none yet): what the runner prints.

    With ``stage_eta`` (seconds left in the whole stage, :func:`stage_eta`) the line ends with the
    stage ETA; without it, with the running task's ETA."""
    if rec is None:
        return f"starting ({_fmt_s(stage_elapsed)})"
    n, total, unit = rec["n"], rec.get("total"), rec.get("unit", "it")
    count = f"{n:g}/{total:g} {unit}s" if total else f"{n:g} {unit}s"
    parts = [f"{rec['task']} {count}"]
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.get("metrics", {}).items()
              if k != "learning_rate"]
    rate = rec.get("rate")
    if rate:
        parts.append(f"{rate:.3g} {unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{unit}")
    eta = (total - n) / rate if rate and total and not rec.get("done") else None
    tail = f"{_fmt_s(stage_elapsed)} elapsed"
    if stage_eta is not None:
        tail += f", stage ETA {_fmt_s(stage_eta)}"
    elif eta is not None:
        tail += f", task ETA {_fmt_s(eta)}"
    return " | ".join(parts + [tail])


def read_records(path: Path) -> list[dict]:
    """Every complete record of a progress file, oldest first ([] when there is no file yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            continue
    return out


# ------------------------------------------------------------------------------- the stage ETA
class ProfileError(ValueError):
    """An ETA profile file that cannot be read as one."""


def profile_of(records: list[dict], t0: float, t_end: float, params_hash: str) -> dict:
    """The ETA profile of a finished stage: for each task, its name and when it started and wrote
    its last record, in seconds after the stage started (``t0``, wall time); and the stage's wall
    time (to ``t_end``)."""
    tasks: list[list] = []
    for r in records:
        if r.get("start"):
            tasks.append([r["task"], round(r["time"] - t0, 2), round(r["time"] - t0, 2)])
        elif tasks and r["task"] == tasks[-1][0]:
            tasks[-1][2] = round(r["time"] - t0, 2)
    return {"params_hash": params_hash, "wall_s": round(t_end - t0, 2), "tasks": tasks}


def _position(records: list[dict], tasks: list) -> tuple[float, float] | None:
    """(seconds into the profile, wall time when this run got there) for the newest record that
    says how far the current task is; None when this run's tasks are not the profile's."""
    i, task, n0, share, at = -1, None, 0.0, 0.0, None
    for r in records:
        if r.get("start"):
            i, task, n0, share, at = i + 1, r["task"], r["n"], 0.0, r["time"]
            if i >= len(tasks) or tasks[i][0] != task:
                return None  # a different sequence of tasks: another code path or parameters
        elif i >= 0 and r["task"] == task:  # other tasks' records (RL's trainer between samplings) do not move it
            total = r.get("total")
            if r.get("done"):
                share = 1.0
            elif total and total > n0:
                share = min(max((r["n"] - n0) / (total - n0), 0.0), 1.0)
            at = r["time"]
    if i < 0:
        return None
    _, lo, hi = tasks[i]
    return lo + share * (hi - lo), at


def stage_eta(records: list[dict], profile: dict | None, t0: float, now: float) -> float | None:
    """Seconds until the stage ends, predicted from ``profile`` (:func:`profile_of` of an earlier
    run) and this run's ``records`` so far (the stage started at wall time ``t0``): this run's
    speed relative to the profile's is how long it took to reach its current point of the profile.
    None without a profile, before the first task, or when the run's tasks differ from the profile's."""
    if not profile or not records:
        return None
    pos = _position(records, profile["tasks"])
    if pos is None:
        return None
    p, at = pos
    if p < 1.0:  # too early to tell this run's speed from the profile's
        return None
    speed = (at - t0) / p  # this run's seconds per profile second
    return max(at + speed * (profile["wall_s"] - p) - now, 0.0)


def load_profiles(path: Path) -> dict:
    """The ETA profiles in a file ({stage: profile}); {} when there is no such file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ProfileError(f"{path} is not an ETA profile file ({e}); delete it and the next run writes a new one") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and {"params_hash", "wall_s", "tasks"} <= v.keys()
                                             for v in data.values()):
        raise ProfileError(f"{path} is not an ETA profile file ({{stage: {{params_hash, wall_s, tasks}}}}); "
                           f"delete it and the next run writes a new one")
    return data


def find_profile(stage: str, params_hash: str, paths: list[Path]) -> dict | None:
    """The first profile of ``stage`` with these parameters among ``paths`` (run folder first)."""
    for path in paths:
        prof = load_profiles(path).get(stage)
        if prof and prof["params_hash"] == params_hash:
            return prof
    return None


def save_profile(path: Path, stage: str, profile: dict) -> None:
    """Add or replace one stage's profile in ``path`` (written whole, then renamed into place)."""
    path = Path(path)
    data = load_profiles(path)
    data[stage] = profile
    tmp = path.with_suffix(".tmp")
    tmp.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(data.items())) + "\n}\n")
    tmp.replace(path)
