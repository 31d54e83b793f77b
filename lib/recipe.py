"""The reference run: execute the stage notebooks in order with papermill.

    python -m lib.recipe params/tiny.yaml                 # the whole recipe
    python -m lib.recipe params/tiny.yaml --dry-run       # validate params, print the plan
    python -m lib.recipe params/tiny.yaml --only 00       # one stage (number or name)
    python -m lib.recipe params/tiny.yaml --from 03       # a stage and everything after it
    python -m lib.recipe params/tiny.yaml --set run.seed=1 --force
    python -m lib.recipe --describe                       # every parameter, documented

Each stage runs into ``outputs/<run>/<NN_stage>/`` (executed notebook included). A stage
whose manifest fingerprint matches its current inputs (params, notebook code, upstream
stages) is skipped; ``--force`` reruns the selected stages anyway. A failing stage stops the
run and names the executed notebook that holds the error. One line per stage on stdout.
Ctrl-C or SIGTERM (``timeout``, a batch scheduler) stops the run: the served checkpoint and the
stage's kernel are ended, finished stages are kept, the exit code is 128 + the signal number.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lib import artifacts, params as params_mod, progress, stages
from lib.paths import NOTEBOOKS_DIR, PARAMS_DIR, ROOT
from lib.serving import LocalServer, ServerError  # standard library only at import

ETA_PROFILES = "eta_profile.json"  # in a run folder: its finished stages' ETA profiles (lib.progress)

KERNEL = "phi4mr"


def ensure_kernel() -> str:
    """Register this interpreter as the Jupyter kernel the notebooks name, if it is not already.

    Papermill would otherwise pick whatever ``python3`` kernel the user's Jupyter knows, which
    may be another environment without this project installed (docs/stack_notes.md).
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL
    except NoSuchKernel:
        pass
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                    "--display-name", "Python (phi4-mini-reasoning)"], check=True, capture_output=True)
    return KERNEL


def parameters_source(nb: dict) -> tuple[int, str]:
    """Index and source of the cell tagged ``parameters`` in a notebook (JSON dict)."""
    for i, cell in enumerate(nb["cells"]):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell["source"]
            return i, "".join(src) if isinstance(src, list) else src
    raise ValueError("notebook has no cell tagged 'parameters'")


def sync_notebooks() -> list[Path]:
    """Regenerate the parameters cell of every stage notebook; return the ones that changed."""
    tiny = params_mod.load(PARAMS_DIR / "tiny.yaml")
    changed = []
    for s in stages.STAGES:
        path = NOTEBOOKS_DIR / f"{s.name}.ipynb"
        nb = json.loads(path.read_text())
        i, old = parameters_source(nb)
        new = params_mod.parameters_cell(s.sections, tiny)
        if new != old:
            nb["cells"][i]["source"] = new.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")  # nbformat's layout
            changed.append(path)
    return changed


def select(only: list[str] | None, start: str | None) -> list[stages.Stage]:
    if only and start:
        raise SystemExit("use either --only or --from, not both")
    if only:
        chosen = {stages.get(n).name for n in only}
        return [s for s in stages.STAGES if s.name in chosen]
    if start:
        first = stages.STAGES.index(stages.get(start))
        return list(stages.STAGES[first:])
    return list(stages.STAGES)


def plan(p: params_mod.Params, chosen: list[stages.Stage], force: bool) -> list[tuple[stages.Stage, str]]:
    """(stage, action) with action 'run' or 'skip'. Checks that unselected dependencies exist."""
    names = {s.name for s in chosen}
    out = []
    for s in chosen:
        for dep in s.deps:
            if dep not in names and artifacts.read_manifest(artifacts.stage_dir(p, dep)) is None:
                raise SystemExit(f"stage {s.name} needs {dep}, which has not completed for run "
                                 f"'{p.run.name}' and is not selected; add it (e.g. --from {dep})")
        # A stage downstream of one that will run is rerun too (its upstream fingerprint changes).
        upstream_runs = any(a == "run" and t.name in s.deps + s.optional_deps for t, a in out)
        current = not force and not upstream_runs and artifacts.is_current(p, s.name)
        out.append((s, "skip" if current else "run"))
    return out


def _fmt_elapsed(sec: float) -> str:
    m, s = divmod(int(round(sec)), 60)
    return f"{m}m{s:02d}s" if m else f"{sec:.1f}s"


def _key_metric(stage: stages.Stage, directory: Path) -> str:
    f = directory / artifacts.METRICS
    if not stage.key_metric or not f.is_file():
        return ""
    value = json.loads(f.read_text()).get(stage.key_metric)
    if isinstance(value, float):
        value = f"{value:.4g}"
    return f" | {stage.key_metric} {value}"


class ProgressWatcher:
    """Tails a running stage's progress file (:mod:`lib.progress`) and prints one line about it.

    On a terminal the line updates in place every second; otherwise (CI, a log file) a new line
    is printed every ``every_s`` seconds. Every printed line also goes to ``log_path``. With an ETA
    ``profile`` of the stage (:func:`lib.progress.stage_eta`) the line ends with the stage's ETA.
    """

    def __init__(self, stage: str, progress_path: Path, log_path: Path, *, every_s: float = 10.0,
                 tty: bool | None = None, out=None, profile: dict | None = None):
        self.stage, self.progress_path, self.log_path, self.profile = stage, progress_path, log_path, profile
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.every_s = 1.0 if self.tty else every_s
        self.t0 = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"progress-{stage}", daemon=True)
        self._width = 0

    def line(self) -> str:
        now = time.time()
        records = progress.read_records(self.progress_path)
        eta = progress.stage_eta(records, self.profile, self.t0, now)
        return f"  {self.stage:<18} " + progress.describe(records[-1] if records else None, now - self.t0, eta)

    def emit(self) -> str:
        text = self.line()
        with self.log_path.open("a") as f:
            f.write(f"{time.strftime('%H:%M:%S')} {text.strip()}\n")
        if self.tty:
            self.out.write("\r" + text.ljust(self._width)[:200])
            self._width = min(len(text), 200)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        return text

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.emit()

    def __enter__(self) -> "ProgressWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty and self._width:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()


def quiet_kernel_manager(log_path: Path, ipc_dir: Path):
    """A kernel manager for papermill whose kernel talks over local IPC sockets (no unencrypted-TCP
    warning) and writes its own stderr (start-up and shutdown chatter, subprocess output) to
    ``log_path`` instead of the runner's console. Cell outputs still go to the executed notebook.

    The sockets live in ``ipc_dir`` (``kernel-<port>``). jupyter_client's default puts them in the
    runner's working directory as ``kernel-ipc-<port>``, where every kernel that was not shut down
    cleanly (a SIGTERM, a killed run) leaves one behind in the user's checkout. Unix socket paths
    are limited to ~107 bytes, so ``ipc_dir`` should be short (a temporary directory)."""
    from jupyter_client.manager import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def _ip_default(self) -> str:
            return str(Path(ipc_dir) / "kernel")

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["stdout"] = kw["stderr"] = log_path.open("ab")
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    QuietKernelManager.transport.default_value = "ipc"
    return QuietKernelManager


# The third-party libraries every stage notebook imports first: ~4 s of each stage's start on two
# cores (torch, transformers and what they pull in). Only libraries: the repository's own modules are
# imported by the stage itself, so that the code it runs is the code its fingerprint hashed.
WARM_IMPORTS = "import torch, transformers, datasets, pandas, matplotlib.pyplot"


class WarmKernel:
    """The next stage's kernel, started while the current stage runs, with :data:`WARM_IMPORTS` done.

    The imports run in the new kernel's own process beside the current stage, so the next stage
    starts with them done. They share the cores with the current stage: free while it runs
    single-threaded code (imports, loading, pandas), a cost while it trains on every core (00's
    training cell took 13.4 s instead of 11.2 s; benchmarks/README.md). The kernel holds no state of
    any stage: papermill injects the parameters
    and runs every cell in it as in a fresh kernel. :meth:`close` kills it (idempotent) and appends
    its log (start-up and the stage's stderr) to ``log_to``."""

    def __init__(self, kernel: str, imports: str | None = None):
        from jupyter_core.utils import run_sync

        imports = WARM_IMPORTS if imports is None else imports
        self._dir = tempfile.TemporaryDirectory(prefix="phi4mr-kernel-")
        self.log_path = Path(self._dir.name) / "kernel.log"
        self.km = quiet_kernel_manager(self.log_path, Path(self._dir.name))(kernel_name=kernel)
        run_sync(self.km.start_kernel)(cwd=str(ROOT), extra_arguments=[f"--IPKernelApp.exec_lines={imports}"])
        self._closed = False

    def alive(self) -> bool:
        from jupyter_core.utils import run_sync

        return not self._closed and run_sync(self.km.is_alive)()

    def close(self, log_to: Path | None = None) -> None:
        from jupyter_core.utils import run_sync

        if self._closed:
            return
        self._closed = True
        try:
            if run_sync(self.km.is_alive)():
                run_sync(self.km.shutdown_kernel)(now=True)
            else:
                run_sync(self.km.cleanup_resources)()
            if log_to is not None and self.log_path.is_file():
                with open(log_to, "ab") as f:
                    f.write(self.log_path.read_bytes())
        finally:
            self._dir.cleanup()


def eta_profile_files(p: params_mod.Params) -> list[Path]:
    """Where a stage's ETA profile is looked for: this run folder's (written as its stages finish),
    then the one shipped with the params (``params/<run name>.eta.json``)."""
    return [artifacts.run_dir(p) / ETA_PROFILES, PARAMS_DIR / f"{p.run.name}.eta.json"]


def execute(p: params_mod.Params, stage: stages.Stage, kernel: str, warm: "WarmKernel | None" = None) -> float:
    """Run one stage notebook with papermill; raise SystemExit naming the executed notebook on failure.

    While it runs, a :class:`ProgressWatcher` prints what the stage is doing; the stage folder keeps
    ``progress.jsonl`` (the stage's records), ``progress.log`` (the printed lines) and ``kernel.log``.
    When it succeeds, its task timings become the stage's ETA profile in the run folder.
    ``warm``: a kernel started ahead for this stage (:class:`WarmKernel`); it is ended here, and its
    log becomes the stage's ``kernel.log`` when the stage ends. Without it a kernel is started now.
    Either way the kernel is killed once the notebook has finished: every output is on disk by then,
    and a graceful shutdown (atexit handlers, thread pools) cost 1-3 s per stage.
    """
    import papermill as pm

    d = artifacts.stage_dir(p, stage.name)
    d.mkdir(parents=True, exist_ok=True)
    (d / artifacts.MANIFEST).unlink(missing_ok=True)
    for name in (artifacts.PROGRESS, "progress.log", "kernel.log"):
        (d / name).unlink(missing_ok=True)
    out_nb = d / f"{stage.name}.ipynb"
    params_hash = p.hash(stage.sections)
    try:
        profile = progress.find_profile(stage.name, params_hash, eta_profile_files(p))
    except progress.ProfileError as e:  # a broken profile costs the stage ETA, not the run
        print(f"  warning: {e}; {stage.name} shows the task ETA only", file=sys.stderr, flush=True)
        profile = None
    t0 = time.time()
    try:
        with ProgressWatcher(stage.name, d / artifacts.PROGRESS, d / "progress.log", profile=profile) as w, \
                contextlib.ExitStack() as stack:
            if warm is not None and not warm.alive():
                print(f"  warning: the kernel started ahead for {stage.name} has died (its log: {d / 'kernel.log'}); "
                      "starting a new one", file=sys.stderr, flush=True)
                warm.close(d / "kernel.log")
                warm = None
            if warm is None:
                ipc_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="phi4mr-kernel-"))
                kernel_kw = {"kernel_manager_class": quiet_kernel_manager(d / "kernel.log", Path(ipc_dir)),
                             "shutdown_kernel": "immediate"}
            else:
                stack.callback(warm.close, d / "kernel.log")
                kernel_kw = {"km": warm.km}
            pm.execute_notebook(
                str(NOTEBOOKS_DIR / f"{stage.name}.ipynb"), str(out_nb),
                parameters=params_mod.to_flat(p, stage.sections),
                kernel_name=kernel, cwd=str(ROOT), progress_bar=False, log_output=False, **kernel_kw,
            )
    except pm.PapermillExecutionError as e:
        raise SystemExit(f"✗ {stage.name} failed after {_fmt_elapsed(time.time() - t0)}: {e.ename}: {e.evalue}\n"
                         f"  the executed notebook with the error (cell {e.exec_count}): {out_nb}") from None
    if not artifacts.is_current(p, stage.name):
        if artifacts.read_manifest(d) is not None:
            raise SystemExit(f"✗ {stage.name} finished, but its inputs changed while it ran (a file in lib/ or "
                             f"notebooks/ edited during the run?); run the same command again to redo it")
        raise SystemExit(f"✗ {stage.name} ran but did not write {artifacts.MANIFEST} in {d} "
                         f"(its last cell must call stage.finish(...)); see {out_nb}")
    t_end = time.time()
    try:
        progress.save_profile(eta_profile_files(p)[0], stage.name,
                              progress.profile_of(progress.read_records(d / artifacts.PROGRESS), w.t0, t_end, params_hash))
    except progress.ProfileError as e:
        print(f"  warning: {e}; {stage.name}'s ETA profile was not saved", file=sys.stderr, flush=True)
    return t_end - t0


class Interrupted(KeyboardInterrupt):
    """The runner was told to stop (SIGTERM from ``timeout``, a batch scheduler, ``kill``)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: a second SIGTERM must not cut the cleanup short
    raise Interrupted(signum)


def stop_children(timeout_s: float = 10.0) -> int:
    """Terminate this process's remaining descendants (the stage's kernel and what it started:
    training launchers, verifier workers), SIGKILL after ``timeout_s``; returns how many there were.
    Left alone, they would run on until each noticed that its parent had gone."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for c in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            c.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout_s)
    for c in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            c.kill()
    return len(children)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.recipe", description=__doc__.split("\n\n")[0])
    ap.add_argument("params", nargs="?", help="params YAML file, e.g. params/tiny.yaml")
    ap.add_argument("--only", nargs="+", metavar="STAGE", help="run just these stages (number or name)")
    ap.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and all after it")
    ap.add_argument("--dry-run", action="store_true", help="validate params and print the plan; run nothing")
    ap.add_argument("--force", action="store_true", help="rerun selected stages even if up to date")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one parameter (repeatable)")
    ap.add_argument("--describe", action="store_true", help="print every parameter with its documentation")
    ap.add_argument("--sync-notebooks", action="store_true",
                    help="rewrite each notebook's parameters cell from params/tiny.yaml and the schema")
    args = ap.parse_args(argv)

    if args.describe:
        print(params_mod.describe())
        return 0
    if args.sync_notebooks:
        for path in sync_notebooks():
            print(f"updated {path}")
        return 0
    if not args.params:
        ap.error("a params file is required, e.g. params/tiny.yaml")
    try:
        p = params_mod.load(args.params, args.overrides)
    except params_mod.ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        chosen = select(args.only, args.start)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    steps = plan(p, chosen, args.force)
    root = artifacts.run_dir(p)
    print(f"recipe '{p.run.name}' from {args.params} -> {root}")
    for s, action in steps:
        print(f"  {s.name:<18} {action:<4}  {s.title}")
        if action == "run" and (why := artifacts.stale_outputs(p, s.name)):
            print(f"  {'':<18} rerun: {why}")
    if args.dry_run:
        from lib import preflight  # builds what stages build: imports the training stack (~10 s), so only here

        failed = False
        if p.serve.checkpoint:
            try:
                served = served_checkpoint(p)
                print(f"  ✓ {'serve':<18} {served} would be served as {p.serve.name!r} at http://127.0.0.1:{p.serve.port}/v1")
            except FileNotFoundError as e:
                print(f"  ✗ serve: {e}", file=sys.stderr)
                failed = True
        for s, _ in steps:
            try:
                checked = preflight.check_stage(p, s)
                print(f"  ✓ {s.name:<18} {'; '.join(checked)}")
            except preflight.PreflightError as e:
                print(f"  ✗ {e}", file=sys.stderr)
                failed = True
        if failed:
            print("dry run: some stages would fail (above); nothing was executed", file=sys.stderr)
            return 2
        print("dry run: parameters are valid and every stage's constructions build; nothing was executed")
        return 0

    kernel = ensure_kernel()
    root.mkdir(parents=True, exist_ok=True)
    try:  # one runner per run folder (released below, or by the OS if this process dies)
        lock = artifacts.RunLock(root).__enter__()
    except artifacts.RunLockedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    shutil.copy(args.params, root / "params.yaml") if Path(args.params).is_file() else None
    t_all = time.time()
    # SIGTERM (a time limit, a scheduler's notice) stops the run as Ctrl-C does: the server is
    # stopped, the stage kernels are ended, finished stages stay finished.
    main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _raise_interrupted) if main_thread else None
    try:
        with contextlib.ExitStack() as stack:
            if p.serve.checkpoint and any(a == "run" for _, a in steps):
                try:
                    stack.enter_context(start_server(p, root))
                except (FileNotFoundError, ServerError) as e:
                    print(f"error: serve: {e}", file=sys.stderr)
                    lock.__exit__(None, None, None)
                    return 1
            code = run_steps(p, steps, kernel)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        ended = stop_children()
        lock.__exit__(None, None, None)
        print(f"interrupted by {signal.Signals(signum).name} after {_fmt_elapsed(time.time() - t_all)}: finished "
              f"stages are kept, the one that was running is not ({ended} child processes ended); run the "
              "same command again to continue", file=sys.stderr, flush=True)
        return 128 + int(signum)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    lock.__exit__(None, None, None)
    if code:
        return code
    print(export_html(root), flush=True)
    print(f"done in {_fmt_elapsed(time.time() - t_all)}: {root}")
    return 0


def export_html(root: Path) -> str:
    """The run as HTML pages after its stages finished: the line to print. An export that fails (a
    missing package, a notebook nbconvert cannot read) is reported with the command that retries it,
    and does not turn a run whose stages all finished into a failed one."""
    try:
        from lib import html_export  # nbconvert: imported when a run ends, not at every start

        return f"html report: {html_export.export_run(root)}"
    except Exception as e:  # noqa: BLE001 -- reported in full below; the stages' results are unaffected
        return (f"warning: the html report was not written ({type(e).__name__}: {e}); the results are in "
                f"{root / 'REPORT.md'} and each stage's executed notebook; after fixing it, retry with: "
                f"python -m lib.html_export {root}")


def served_checkpoint(p: params_mod.Params) -> Path:
    """``serve.checkpoint`` resolved (FileNotFoundError when it is no checkpoint folder)."""
    from lib.paths import resolve

    path = resolve(p.serve.checkpoint)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"serve.checkpoint {p.serve.checkpoint!r} -> {path} is not a checkpoint folder "
                                "(no config.json): point it at a save_pretrained folder")
    return path


@contextlib.contextmanager
def start_server(p: params_mod.Params, root: Path):
    """``serve.checkpoint`` behind ``transformers serve`` on loopback for the stages that follow."""
    srv = LocalServer(served_checkpoint(p), work_dir=root / "server", port=p.serve.port, name=p.serve.name,
                      startup_timeout_s=p.serve.startup_timeout_s)
    t0 = time.time()
    with srv:
        print(f"serving {p.serve.checkpoint} as {srv.model!r} at {srv.base_url} (transformers serve, up in "
              f"{time.time() - t0:.0f} s; log: {srv.log_path})", flush=True)
        yield srv
    print(f"server at {srv.base_url} stopped", flush=True)


def run_steps(p: params_mod.Params, steps, kernel: str) -> int:
    """Execute the planned stages in order; 1 at the first failure (its message printed).

    As each stage starts, the kernel of the next stage to run is started beside it
    (:class:`WarmKernel`); it is ended when the run stops early."""
    warm = None
    try:
        for i, (s, action) in enumerate(steps):
            d = artifacts.stage_dir(p, s.name)
            this_warm, warm = warm, None  # started for this stage (a planned run) by the step before
            if i + 1 < len(steps) and steps[i + 1][1] == "run":
                warm = WarmKernel(kernel)
            if action == "skip" and artifacts.is_current(p, s.name):
                print(f"= {s.name:<18} up to date, skipped{_key_metric(s, d)}", flush=True)
                continue
            print(f"▶ {s.name:<18} running (notebook: {d / (s.name + '.ipynb')})", flush=True)
            try:
                elapsed = execute(p, s, kernel, warm=this_warm)
            except SystemExit as e:
                print(e, file=sys.stderr, flush=True)
                return 1
            finally:
                if this_warm is not None:
                    this_warm.close()  # (execute ends it; this covers an error before it got there)
            print(f"✓ {s.name:<18} {_fmt_elapsed(elapsed):>7}{_key_metric(s, d)}", flush=True)
        return 0
    finally:
        if warm is not None:
            warm.close()


if __name__ == "__main__":
    sys.exit(main())
