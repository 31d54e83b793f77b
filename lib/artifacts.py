"""Stage folders, metrics and manifests.

Each stage writes ``outputs/<run>/<NN_stage>/``: its artifacts, ``metrics.json``, and
``manifest.json`` written LAST (atomically), so the presence of a manifest means the stage
completed. The manifest records the stage's parameters and their hash, the upstream stages'
fingerprints, the notebook's code hash, the git commit and library versions. Its
``fingerprint`` combines parameters, code and upstream fingerprints: a stage whose recorded
fingerprint equals the one computed now is up to date and the runner skips it. Later stages
find their inputs through :func:`require`, never by globbing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import random
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from lib import params as params_mod
from lib import stages as stages_mod
from lib.paths import NOTEBOOKS_DIR, ROOT, resolve

MANIFEST, METRICS = "manifest.json", "metrics.json"
VERSIONED = ("torch", "transformers", "trl", "datasets", "accelerate", "math-verify", "papermill", "tokenizers")


class MissingArtifactError(FileNotFoundError):
    """An earlier stage's output is not there (or did not finish)."""


def run_dir(params: params_mod.Params) -> Path:
    return resolve(params.run.output_root) / params.run.name


def stage_dir(params: params_mod.Params, stage: str) -> Path:
    return run_dir(params) / stage


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_manifest(directory: Path) -> dict | None:
    f = Path(directory) / MANIFEST
    return json.loads(f.read_text()) if f.is_file() else None


def notebook_hash(stage: str) -> str:
    """Hash of the notebook's code cells, parameters cell excluded (its values are hashed as params)."""
    nb = json.loads((NOTEBOOKS_DIR / f"{stage}.ipynb").read_text())
    code = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in nb["cells"]
            if c["cell_type"] == "code" and "parameters" not in c.get("metadata", {}).get("tags", [])]
    return hashlib.sha256("\n\x00".join(code).encode()).hexdigest()[:16]


def require(params: params_mod.Params, stage: str) -> Path:
    """The folder of a completed upstream stage, or a clear error saying how to produce it."""
    d = stage_dir(params, stage)
    if read_manifest(d) is None:
        params_hint = params.run.name
        raise MissingArtifactError(
            f"stage {stage} has not completed for run '{params.run.name}' (no {MANIFEST} in {d}). "
            f"Run it first: python -m lib.recipe params/{params_hint}.yaml --only {stage}")
    return d


def fingerprint(params: params_mod.Params, stage: str) -> tuple[str, dict]:
    """The fingerprint a completed stage must carry to count as up to date, and its upstream part."""
    s = stages_mod.get(stage)
    upstream = {}
    for dep in s.deps + s.optional_deps:
        m = read_manifest(stage_dir(params, dep))
        if m or dep in s.deps:
            upstream[dep] = m["fingerprint"] if m else None
    parts = {"params": params.hash(s.sections), "code": notebook_hash(s.name), "upstream": upstream}
    return params_mod.params_hash(parts), upstream


def is_current(params: params_mod.Params, stage: str) -> bool:
    m = read_manifest(stage_dir(params, stage))
    return m is not None and m.get("fingerprint") == fingerprint(params, stage)[0]


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class StageRun:
    """An open stage: validated params, its folder, and :meth:`finish` to seal it."""
    name: str
    params: params_mod.Params
    dir: Path
    started: float = field(default_factory=time.time)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    def upstream(self, stage: str) -> Path:
        return require(self.params, stage)

    def resumable_dir(self, name: str) -> Path:
        """A subfolder for long work that resumes after a crash (rollout shards, checkpoints).

        It is kept across reruns with the same inputs (params and upstream stages) so a killed
        run picks up where it stopped, and wiped when they changed, so stale work from other
        settings is never mixed in. The folder records the fingerprint it was made for.
        """
        import shutil

        d = self.dir / name
        marker = d / ".fingerprint"
        want = fingerprint(self.params, self.name)[0]
        if d.exists() and (not marker.is_file() or marker.read_text().strip() != want):
            print(f"{d}: made with other inputs; starting it over")
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        marker.write_text(want + "\n")
        return d

    def finish(self, metrics: dict, **extra: Any) -> dict:
        """Write metrics.json, then manifest.json last. Returns the manifest."""
        s = stages_mod.get(self.name)
        _atomic_json(self.dir / METRICS, metrics)
        fp, upstream = fingerprint(self.params, self.name)
        manifest = {
            "stage": self.name,
            "fingerprint": fp,
            "params": {sec: self.params.section(sec) for sec in s.sections},
            "params_hash": self.params.hash(s.sections),
            "code_hash": notebook_hash(self.name),
            "upstream": {dep: {"fingerprint": f, "dir": str(stage_dir(self.params, dep))} for dep, f in upstream.items()},
            "git": git_state(),
            "versions": versions(),
            "started_at": dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(),
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "elapsed_s": round(time.time() - self.started, 2),
            "metrics": metrics,
            **extra,
        }
        _atomic_json(self.dir / MANIFEST, manifest)
        return manifest


def open_stage(name: str, namespace: dict) -> StageRun:
    """Called at the top of a stage notebook, with ``globals()``.

    Validates the notebook's parameters, checks the upstream stages completed, seeds RNGs,
    sets threads, and removes any previous manifest so an interrupted run never looks complete.
    """
    from lib.model import set_threads

    s = stages_mod.get(name)
    p = params_mod.from_flat(namespace, s.sections)
    for dep in s.deps:
        require(p, dep)
    d = stage_dir(p, s.name)
    d.mkdir(parents=True, exist_ok=True)
    (d / MANIFEST).unlink(missing_ok=True)
    seed_everything(p.run.seed)
    set_threads(p.run.threads)
    return StageRun(s.name, p, d)
