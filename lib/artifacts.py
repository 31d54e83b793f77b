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


class CorruptArtifactError(MissingArtifactError):
    """A stage's manifest is there but one of the files it recorded does not load (or changed size)."""


class RunLockedError(RuntimeError):
    """Another runner holds the run folder's lock."""


class OutputWriteError(OSError):
    """Writing an output failed (full disk, unwritable folder); the previous file is left as it was."""


def run_dir(params: params_mod.Params) -> Path:
    return resolve(params.run.output_root) / params.run.name


def stage_dir(params: params_mod.Params, stage: str) -> Path:
    return run_dir(params) / stage


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a temp file in the same folder, fsync, then
    ``os.replace``: the file is either the old one or the complete new one. A failing write (full
    disk, unwritable folder) removes the temp file, leaves any previous ``path`` intact and raises
    :class:`OutputWriteError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputWriteError(e.errno, f"could not write {path} ({e.strerror or e}); the previous version, if any, "
                               f"is intact: free space or fix permissions in {path.parent} and rerun") from e
    return path


def write_parquet(df, path: str | os.PathLike) -> Path:
    """``df.to_parquet(path)`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: df.to_parquet(tmp))


def _atomic_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


# --------------------------------------------------------------------------- output checks
# Files a manifest records (size) and checks load: data and weights. The executed notebook is
# rewritten by papermill after the stage finishes, and trainer checkpoints are scratch space.
CHECKED_SUFFIXES = (".parquet", ".json", ".jsonl", ".safetensors", ".csv")
_SKIP_PARTS = ("trainer",)


def output_files(directory: Path) -> dict[str, int]:
    """``relative path -> size`` of the files a stage folder holds that :func:`check_output` can load."""
    out = {}
    for f in sorted(Path(directory).rglob("*")):
        rel = f.relative_to(directory)
        if (not f.is_file() or f.suffix not in CHECKED_SUFFIXES or f.name in (MANIFEST,) or f.name.startswith(".")
                or any(p in _SKIP_PARTS or p.startswith("checkpoint-") for p in rel.parts[:-1])):
            continue
        out[rel.as_posix()] = f.stat().st_size
    return out


def check_output(f: Path) -> None:
    """Raise if ``f`` does not load: Parquet footer, JSON (and JSON Lines) text, safetensors header.
    Cheap: no Parquet data page and no tensor is read."""
    if f.suffix == ".parquet":
        import pyarrow.parquet as pq
        pq.read_metadata(f)
    elif f.suffix == ".json":
        json.loads(f.read_text())
    elif f.suffix == ".jsonl":
        lines = [x for x in f.read_text().splitlines() if x.strip()]
        for line in lines if f.stat().st_size < 32 << 20 else lines[:1] + lines[-1:]:
            json.loads(line)
    elif f.suffix == ".safetensors":
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 0 < n < 100_000_000:
                raise ValueError(f"bad safetensors header length {n}")
            json.loads(fh.read(n))


def output_problem(directory: Path, manifest: dict | None = None) -> str | None:
    """Why a completed stage's outputs cannot be used (a recorded file missing, resized or not
    loading), or None when they all load."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest is None:
        return f"no {MANIFEST} in {directory}"
    for rel, size in (manifest.get("outputs") or {}).items():
        f = directory / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != size:
            return f"{f} changed size since the stage finished ({size} -> {f.stat().st_size} bytes)"
        try:
            check_output(f)
        except Exception as e:  # noqa: BLE001  (any loader failure means: not usable)
            return f"{f} does not load ({type(e).__name__}: {str(e)[:200]})"
    return None


LOCK_FILE = ".runner.lock"


class RunLock:
    """One runner per run folder: ``with RunLock(run_dir): ...``.

    The lock is an exclusive ``flock`` on ``<run_dir>/.runner.lock``, which the OS releases when
    the holder dies (SIGKILL included), and the file records the holder's pid, host and start
    time for the error message. A second runner gets :class:`RunLockedError` naming the holder.
    A lock file left by a killed runner (no process holds the flock; its pid is dead) is stale:
    it is taken over with a message. On a file system without ``flock`` (some network mounts)
    the pid/host record alone decides, and a live pid on this host counts as a holder.
    """

    def __init__(self, run_dir: str | os.PathLike, message=print):
        self.path = Path(run_dir) / LOCK_FILE
        self.message = message
        self._f = None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> "RunLock":
        import fcntl
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            h = self._holder()
            raise RunLockedError(
                f"{self.path.parent} is in use by another runner (pid {h.get('pid', '?')} on "
                f"{h.get('host', '?')}, since {h.get('started', '?')}): wait for it to finish or stop it "
                f"(kill {h.get('pid', 'PID')}); if no such process exists, delete {self.path}") from None
        except OSError:  # no flock here: fall back to the recorded pid
            h = self._holder()
            if h.get("host") == socket.gethostname() and h.get("pid") and self._alive(int(h["pid"])):
                f.close()
                raise RunLockedError(f"{self.path.parent} is in use by another runner (pid {h['pid']}); "
                                     f"wait for it, or delete {self.path} if that process is not a runner") from None
        h = self._holder()
        if h.get("pid"):
            self.message(f"removed a stale lock {self.path} left by pid {h['pid']} on {h.get('host', '?')} "
                         f"(started {h.get('started', '?')}; no longer running)")
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}))
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            self._f.seek(0)
            self._f.truncate()  # an empty file is a released lock, not a stale one
            self._f.close()
            self._f = None


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
    m = read_manifest(d)
    if m is None:
        params_hint = params.run.name
        raise MissingArtifactError(
            f"stage {stage} has not completed for run '{params.run.name}' (no {MANIFEST} in {d}). "
            f"Run it first: python -m lib.recipe params/{params_hint}.yaml --only {stage}")
    problem = output_problem(d, m)
    if problem:
        raise CorruptArtifactError(
            f"stage {stage} of run '{params.run.name}' completed but its output is unusable: {problem}. "
            f"Rerun it: python -m lib.recipe params/{params.run.name}.yaml --only {stage} --force")
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
    """The stage completed with today's inputs and every output it recorded still loads."""
    d = stage_dir(params, stage)
    m = read_manifest(d)
    return m is not None and m.get("fingerprint") == fingerprint(params, stage)[0] and output_problem(d, m) is None


def stale_outputs(params: params_mod.Params, stage: str) -> str | None:
    """Why a completed stage must rerun although its inputs did not change (an output no longer
    loads); None if it has not completed or its outputs are fine."""
    d = stage_dir(params, stage)
    m = read_manifest(d)
    return None if m is None else output_problem(d, m)


def git_state(root: Path = ROOT) -> dict:
    """The checkout's commit and whether its tracked content differs from it (through the filters)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120).stdout.strip()
    try:
        # In a fresh checkout git cannot trust the index's stat data for the notebooks, so every
        # `git diff` runs each through the nbstripout filter again and records nothing: ~21 s a call
        # in a fresh clone (2026-12-03), paid by every stage. `update-index --refresh` records the
        # result once (then `git diff` takes 0.00 s); its exit code only says files differ.
        git("update-index", "-q", "--refresh")
        # Content through the .gitattributes filters, not stat: a notebook JupyterLab saved with
        # outputs (stripped by nbstripout when added) is not a change; `git status` may still list it.
        return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("diff", "--name-only", "HEAD"))}
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
        """Write metrics.json, check every output file loads, then write manifest.json last (with
        each output's size, checked again whenever the stage is reused). Returns the manifest.

        Raises :class:`CorruptArtifactError` naming the file when an output does not load: the
        stage is then not complete."""
        s = stages_mod.get(self.name)
        _atomic_json(self.dir / METRICS, metrics)
        outputs = output_files(self.dir)
        for rel in outputs:
            try:
                check_output(self.dir / rel)
            except Exception as e:  # noqa: BLE001
                raise CorruptArtifactError(f"stage {self.name} wrote {self.dir / rel}, which does not load "
                                           f"({type(e).__name__}: {str(e)[:200]}); not marking the stage complete") from e
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
            "outputs": outputs,
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
    from lib.sampling import set_processes

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
    set_processes(p.run.sample_processes)
    return StageRun(s.name, p, d)
