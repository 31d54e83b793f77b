"""Live progress of a running stage, for both places a person watches.

In JupyterLab every long loop shows a tqdm bar (a widget there, text elsewhere). Under the runner
(``python -m lib.recipe``) the notebook runs in a kernel nobody sees, so the same loops also append
one JSON line at most every second to ``outputs/<run>/<NN_stage>/progress.jsonl``; the runner tails
that file and prints one updating line per stage (task, step/total, loss or reward, rate, elapsed,
ETA). The file is named by the environment variable ``PHI4MR_PROGRESS_FILE``, which
:func:`start` sets, so processes a stage starts (``accelerate launch``) report to it too; of
several distributed processes only rank 0 writes.

A record: ``{"task", "n", "total", "unit", "elapsed", "rate", "metrics", "done", "time"}`` with
``rate`` in units per second since the task started (resumed work not counted) and ``metrics`` the
latest values a loop attached (loss, reward, accuracy).
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
           done_before: float = 0.0, metrics: dict | None = None, done: bool = False, force: bool = False) -> bool:
    """Append one record (throttled to one a second unless ``force``); True when it was written."""
    global _last_write
    path = sink()
    now = time.time()
    if path is None or (not force and now - _last_write < MIN_INTERVAL_S):
        return False
    worked = n - done_before
    rate = worked / elapsed if elapsed > 0 and worked > 0 else None
    rec = {"task": task, "n": n, "total": total, "unit": unit, "elapsed": round(elapsed, 3),
           "rate": rate, "metrics": _clean(metrics or {}), "done": done, "time": now}
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
        self._report(force=True)

    def _report(self, force: bool = False, done: bool = False) -> None:
        report(self.task, self.n, self.total, unit=self.unit, elapsed=time.monotonic() - self.t0,
               done_before=self.initial, metrics=self.metrics, done=done, force=force)

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
            report("train", state.global_step, state.max_steps, unit="step", force=True)

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


def describe(rec: dict | None, stage_elapsed: float) -> str:
    """One line for a progress record (or for a stage with none yet): what the runner prints."""
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
    tail = f"{_fmt_s(stage_elapsed)} elapsed" + (f", task ETA {_fmt_s(eta)}" if eta is not None else "")
    return " | ".join(parts + [tail])


def last_record(path: Path) -> dict | None:
    """The newest complete record of a progress file (None when there is none yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:  # a line being written right now
            continue
    return None
