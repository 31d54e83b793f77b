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

import ast
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
from lib import progress
from lib import stages as stages_mod
from lib.paths import LIB_DIR, NOTEBOOKS_DIR, ROOT, resolve

MANIFEST, METRICS, PROGRESS = "manifest.json", "metrics.json", "progress.jsonl"
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


def _notebook_code(stage: str) -> list[str]:
    nb = json.loads((NOTEBOOKS_DIR / f"{stage}.ipynb").read_text())
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in nb["cells"]
            if c["cell_type"] == "code" and "parameters" not in c.get("metadata", {}).get("tags", [])]


def notebook_hash(stage: str) -> str:
    """Hash of the notebook's code cells, parameters cell excluded (its values are hashed as params)."""
    return hashlib.sha256("\n\x00".join(_notebook_code(stage)).encode()).hexdigest()[:16]


def _module_file(name: str, lib_dir: Path) -> Path | None:
    """The source file of ``lib.<name>`` (a module or a package's ``__init__``), if it is ours."""
    rel = Path(*name.split("."))
    for f in (lib_dir / rel.with_suffix(".py"), lib_dir / rel / "__init__.py"):
        if f.is_file():
            return f
    return None


def _lib_imports(source: str) -> set[str]:
    """Names of ``lib`` modules a source imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("lib.") for a in node.names if a.name.startswith("lib.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lib":
                found |= {a.name for a in node.names}
            elif node.module.startswith("lib."):
                mod = node.module.removeprefix("lib.")
                found.add(mod)
                found |= {f"{mod}.{a.name}" for a in node.names}  # submodules of a package
    return found


def lib_closure(sources: list[str], lib_dir: Path = LIB_DIR) -> list[Path]:
    """Every ``lib`` source file the given code imports, directly or through other lib modules."""
    todo = set().union(*(_lib_imports(s) for s in sources)) if sources else set()
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        f = _module_file(name, lib_dir)
        if f is None or name in seen:
            continue
        seen[name] = f
        if f.name == "__init__.py":  # a package: its modules import each other relatively or by name
            todo |= {f"{name}.{m.stem}" for m in f.parent.glob("*.py") if m.stem != "__init__"}
        todo |= _lib_imports(f.read_text()) - seen.keys()
    return sorted(set(seen.values()))


def lib_hash(stage: str, lib_dir: Path = LIB_DIR) -> str:
    """Hash of the source of every ``lib`` module the stage's notebook runs: a library change reruns
    exactly the stages whose code it can affect."""
    h = hashlib.sha256()
    for f in lib_closure(_notebook_code(stage), lib_dir):
        h.update(f.relative_to(lib_dir).as_posix().encode() + b"\x00" + f.read_bytes() + b"\x00")
    return h.hexdigest()[:16]


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
    parts = {"params": params.hash(s.sections), "code": notebook_hash(s.name), "lib": lib_hash(s.name),
             "upstream": upstream}
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
            "params": self.params.subset(s.sections),
            "params_hash": self.params.hash(s.sections),
            "code_hash": notebook_hash(self.name),
            "lib_hash": lib_hash(self.name),
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
    progress.start(d / PROGRESS)
    seed_everything(p.run.seed)
    set_threads(p.run.threads)
    return StageRun(s.name, p, d)
