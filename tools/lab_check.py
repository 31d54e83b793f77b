"""`make lab-check`: run every stage notebook through the JupyterLab UI in headless Chromium.

    .venv/bin/python tools/lab_check.py                  # all stages, params/smoke.yaml
    .venv/bin/python tools/lab_check.py --only 00 01     # a prefix of the recipe (later stages need earlier ones)

What it does, in order:
  1. installs what it needs if missing: Debian's ``chromium`` (apt-get, as root) and the
     ``lab-check`` extra of pyproject.toml (Playwright, which drives that Chromium; no browser
     download);
  2. starts JupyterLab on 127.0.0.1 with a random token, serving the repository root, with
     fresh user settings (no news, no update check, every cell rendered);
  3. for each stage: writes the notebook as the runner would execute it (papermill's injected
     parameters cell, smoke params, run name ``lab-check``) to
     ``outputs/lab-check/<NN_stage>/<NN_stage>.ipynb``, opens it in the Lab, checks the kernel
     was preselected (no kernel dialog), clicks Run → Run All Cells, waits, saves, and fails on
     - an error output or a cell left unexecuted,
     - a missing plot: a stage that plots shows no image, an image output that is not drawn,
       or a figure printed as ``<Figure size ...>`` text,
     - a progress bar that does not render: the run produced bars but none was drawn live, or
       "Error displaying widget" appears, or a widget output was saved (it would read "model
       not found" when the notebook is reopened; also checked by reopening it);
     and saves a screenshot of the whole notebook to ``outputs/lab-check/screenshots/`` (and
     ``<NN_stage>.live.png`` of the screen while a widget progress bar is drawn, when it saw one);
  4. exports the run to HTML (``outputs/lab-check/html/index.html``, lib.html_export) and
     checks ``git status`` is clean.
A summary is written to ``outputs/lab-check/lab-check.json``. Exit status 0 when all passed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib import params as params_mod, stages as stages_mod  # noqa: E402
from lib.paths import NOTEBOOKS_DIR, PARAMS_DIR  # noqa: E402

KERNEL, KERNEL_DISPLAY = "phi4mr", "Python (phi4-mini-reasoning)"
RUN_NAME = "lab-check"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDGET = "application/vnd.jupyter.widget-view+json"
TQDM_TEXT = re.compile(r"\d+%\|.*\| *[\d.]+[kMG]?/[\d.]+[kMG]?")
FIGURE_TEXT = re.compile(r"^<Figure size [\d.]+x[\d.]+ with \d+ Axes>$")
PLOTS_CODE = re.compile(r"plt\.show\(|\bplots\.\w+\(")
USER_SETTINGS = {  # JupyterLab user settings for the check's server only (a temporary folder)
    "@jupyterlab/apputils-extension/notification": {"checkForUpdates": False, "fetchNews": "false",
                                                    "doNotDisturbMode": True},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the DOM
}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- installing
def ensure_chromium() -> str:
    exe = shutil.which("chromium")
    if exe:
        return exe
    if os.geteuid() != 0:
        sys.exit("lab-check needs Debian's chromium: run `apt-get install -y chromium` as root, then retry")
    log("installing chromium from Debian's packages ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, env=env)
    return shutil.which("chromium") or sys.exit("apt-get installed chromium but it is not on PATH")


def ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
        return
    except ImportError:
        pass
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["lab-check"]
    log(f"installing {' '.join(extra)} into {sys.prefix} ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *extra], check=True)


# --------------------------------------------------------------------------- notebooks
def write_stage_notebook(p: params_mod.Params, stage: stages_mod.Stage) -> Path:
    """The stage notebook with the runner's injected parameters, where the runner puts it."""
    import nbformat
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(NOTEBOOKS_DIR / f"{stage.name}.ipynb", as_version=4)
    nb.metadata["papermill"] = {}
    for cell in nb.cells:  # as papermill prepares a notebook
        cell.metadata.setdefault("tags", [])
    nb = parameterize_notebook(nb, params_mod.to_flat(p, stage.sections), kernel_name=KERNEL, language="python")
    d = ROOT / p.run.output_root / p.run.name / stage.name
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{stage.name}.ipynb"
    nbformat.write(nb, path)
    return path


def saved_findings(path: Path) -> tuple[list[str], dict]:
    """Problems in the notebook as the Lab saved it, and what it shows (images, bars)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    problems, images, bars, plotting_cells = [], 0, 0, 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.execution_count is None:
            problems.append(f"cell {i} was not executed")
        cell_images = 0
        for out in cell.outputs:
            data = out.get("data", {})
            text = out.get("text", "") + data.get("text/plain", "")
            if out.output_type == "error":
                problems.append(f"cell {i}: {out.ename}: {out.evalue}")
            if "image/png" in data or "image/svg+xml" in data:
                cell_images += 1
            elif FIGURE_TEXT.match(data.get("text/plain", "").strip()):
                problems.append(f"cell {i}: a figure was printed as text, not drawn: {data['text/plain'].strip()}")
            if WIDGET in data:
                problems.append(f"cell {i}: a widget output was saved (reopened, it reads 'model not found')")
            if TQDM_TEXT.search(text) or "<progress" in data.get("text/html", ""):
                bars += 1
        images += cell_images
        plotting_cells += bool(PLOTS_CODE.search(cell.source))
    if plotting_cells and not images:
        problems.append(f"{plotting_cells} cell(s) plot, but the notebook shows no image")
    return problems, {"images": images, "bar_outputs": bars}


# --------------------------------------------------------------------------- the Lab
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server on loopback, for this check only."""

    def __init__(self, tmp: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = tmp / "settings"
        for name, values in USER_SETTINGS.items():
            f = settings / f"{name}.jupyterlab-settings"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(values))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
               "JUPYTER_CONFIG_DIR": str(tmp / "config")}
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--ServerApp.root_dir={ROOT}", f"--IdentityProvider.token={self.token}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log_path = tmp / "jupyterlab.log"
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while True:
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"JupyterLab did not start; see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")
                time.sleep(1)
        specs = self.api("GET", "/api/kernelspecs")["kernelspecs"]
        if KERNEL not in specs:
            raise SystemExit(f"JupyterLab has no kernel '{KERNEL}' (kernels: {sorted(specs)}); run `make setup`")

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.base}{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for s in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{s['id']}")

    def url(self, workspace: str, rel: str) -> str:
        return f"{self.base}/lab/workspaces/{workspace}/tree/{rel}?token={self.token}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# JavaScript run in the page. The UI is driven by clicks; the app object (exposed by
# --LabApp.expose_app_in_browser) is only read, to know when the run has finished.
JS_OPENED = """rel => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  return !!(w && w.context && w.context.path === rel && w.content && w.content.model); }"""
JS_KERNEL = """() => { const w = window.jupyterapp.shell.currentWidget, sc = w.sessionContext;
  const k = sc.session && sc.session.kernel;
  return {name: sc.kernelDisplayName, status: k ? k.status : null,
          dialog: document.querySelector('.jp-Dialog') ? document.querySelector('.jp-Dialog').innerText : null}; }"""
BARS = ".widget-hprogress, .widget-vprogress"  # an ipywidgets progress bar (tqdm's widget)
JS_WATCH_BARS = """bars => { const seen = new WeakSet(); window.__labcheck = {widget: 0, html: 0};
  const mark = (e, kind) => { if (!seen.has(e)) { seen.add(e); window.__labcheck[kind]++; } };
  const visit = e => { if (!(e instanceof Element)) return;
    if (e.matches(bars)) mark(e, 'widget'); if (e.matches('progress')) mark(e, 'html');
    e.querySelectorAll(bars).forEach(b => mark(b, 'widget')); e.querySelectorAll('progress').forEach(b => mark(b, 'html')); };
  new MutationObserver(records => records.forEach(r => { visit(r.target); r.addedNodes.forEach(visit); }))
    .observe(document.body, {childList: true, subtree: true, attributes: true, attributeFilter: ['class']});
  visit(document.body); }"""
JS_STATE = """() => { const w = window.jupyterapp.shell.currentWidget, cells = w.content.model.cells;
  let code = 0, done = 0, errors = 0;
  for (let i = 0; i < cells.length; i++) { const c = cells.get(i); if (c.type !== 'code') continue;
    code++; if (c.executionCount !== null) done++;
    for (let j = 0; j < c.outputs.length; j++) if (c.outputs.get(j).type === 'error') errors++; }
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const running = [...w.content.node.querySelectorAll('.jp-InputPrompt')].filter(e => e.textContent.includes('*')).length;
  return {code, done, errors, running, kernel: k ? k.status : null, dirty: w.context.model.dirty,
          bars: window.__labcheck, live_widgets: w.content.node.querySelectorAll(
            '.widget-hprogress, .widget-vprogress').length}; }"""
JS_RENDERED = """() => { const w = window.jupyterapp.shell.currentWidget, n = w.content.node;
  const imgs = [...n.querySelectorAll('.jp-OutputArea-output img')];
  return {images: imgs.length, drawn: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          widget_errors: (n.innerText.match(/Error displaying widget/g) || []).length,
          chrome: window.innerHeight - n.getBoundingClientRect().height,
          height: Math.max(...[n, ...n.querySelectorAll('.jp-WindowedPanel-outer, .jp-WindowedPanel-inner, '
                                                          + '.jp-WindowedPanel-viewport')].map(e => e.scrollHeight))}; }"""

JS_SHOW_BAR = """bars => { const b = window.jupyterapp.shell.currentWidget.content.node.querySelector(bars);
  if (b) b.scrollIntoView({block: 'center'}); }"""
JS_TOP = """() => { const n = window.jupyterapp.shell.currentWidget.content.node;
  [n, ...n.querySelectorAll('.jp-WindowedPanel-outer')].forEach(e => { e.scrollTop = 0; }); }"""


def click_run_all(page) -> None:
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-item:visible .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def check_stage(lab: Lab, ctx, stage: stages_mod.Stage, path: Path, shots: Path, timeout_s: float) -> dict:
    rel = path.relative_to(ROOT).as_posix()
    t0 = time.time()
    problems: list[str] = []
    page = ctx.new_page()
    page.goto(lab.url(f"check-{stage.name}", rel))
    page.wait_for_function(JS_OPENED, arg=rel, timeout=120_000)
    deadline = time.time() + 180
    while True:  # the notebook's kernel starts on its own: preselected, no dialog
        k = page.evaluate(JS_KERNEL)
        if k["dialog"]:
            problems.append(f"a dialog opened instead of the kernel: {k['dialog'][:200]!r}")
            break
        if k["status"] == "idle":
            break
        if time.time() > deadline:
            problems.append(f"the kernel did not start (status {k['status']})")
            break
        time.sleep(1)
    if k["name"] != KERNEL_DISPLAY:
        problems.append(f"kernel {k['name']!r} was selected, not {KERNEL_DISPLAY!r}")
    if problems:
        page.close()
        return {"stage": stage.name, "ok": False, "problems": problems, "elapsed_s": round(time.time() - t0, 1)}

    page.evaluate(JS_WATCH_BARS, BARS)
    t_run = time.time()
    click_run_all(page)
    finished_since, state = None, {}
    live_shot = shots / f"{stage.name}.live.png"
    while time.time() - t_run < timeout_s:
        time.sleep(0.5)
        state = page.evaluate(JS_STATE)
        if state["live_widgets"] and not live_shot.exists():  # a widget bar on screen while it runs
            page.evaluate(JS_SHOW_BAR, BARS)
            page.screenshot(path=str(live_shot))
        finished = state["running"] == 0 and state["kernel"] == "idle" and (state["done"] == state["code"] or state["errors"])
        finished_since = (finished_since or time.time()) if finished else None
        if finished_since and time.time() - finished_since >= 3:  # and stays finished
            break
    else:
        problems.append(f"still running after {timeout_s:.0f}s ({state.get('done')}/{state.get('code')} cells)")
    run_s = time.time() - t_run

    page.locator(".jp-NotebookPanel:visible .jp-Notebook").first.click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+s")  # File → Save, through the UI
    for _ in range(60):
        if not page.evaluate(JS_STATE)["dirty"]:
            break
        time.sleep(0.5)
    else:
        problems.append("the notebook could not be saved")

    rendered = page.evaluate(JS_RENDERED)
    bars_live = state.get("bars") or {"widget": 0, "html": 0}
    shot = shots / f"{stage.name}.png"
    page.set_viewport_size({"width": 1400, "height": int(min(rendered["height"] + rendered["chrome"] + 40, 16000))})
    page.evaluate(JS_TOP)
    time.sleep(1.5)
    rendered = page.evaluate(JS_RENDERED)  # every output is on screen now
    page.screenshot(path=str(shot))
    page.close()

    saved_problems, shown = saved_findings(path)
    problems += saved_problems
    if rendered["drawn"] < shown["images"]:
        problems.append(f"{shown['images']} image output(s), {rendered['drawn']} drawn in the Lab")
    if rendered["widget_errors"]:
        problems.append(f"'Error displaying widget' shown {rendered['widget_errors']} time(s)")
    if shown["bar_outputs"] and not (bars_live["widget"] or bars_live["html"]):
        problems.append("the run made progress bars but none was drawn in the Lab")

    lab.shutdown_kernels()
    # Reopened with no kernel (what a saved notebook looks like later): no widget errors.
    page = ctx.new_page()
    page.goto(lab.url(f"reopen-{stage.name}", rel))
    page.wait_for_function(JS_OPENED, arg=rel, timeout=120_000)
    time.sleep(3)
    reopened = page.evaluate(JS_RENDERED)
    page.close()
    lab.shutdown_kernels()
    if reopened["widget_errors"]:
        problems.append(f"reopened, it shows 'Error displaying widget' {reopened['widget_errors']} time(s)")

    return {"stage": stage.name, "ok": not problems, "problems": problems,
            "run_s": round(run_s, 1), "elapsed_s": round(time.time() - t0, 1),
            "images": shown["images"], "images_drawn": rendered["drawn"], "bar_outputs": shown["bar_outputs"],
            "bars_drawn_live": bars_live, "screenshot": str(shot.relative_to(ROOT)),
            "live_screenshot": str(live_shot.relative_to(ROOT)) if live_shot.exists() else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=str(PARAMS_DIR / "smoke.yaml"), help="params file (default: smoke)")
    ap.add_argument("--only", nargs="+", metavar="STAGE", help="check just these stages (their inputs must exist)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per notebook")
    args = ap.parse_args(argv)

    t_all = time.time()
    chromium = ensure_chromium()
    ensure_playwright()
    from playwright.sync_api import sync_playwright

    from lib import html_export

    p = params_mod.load(args.params, [f"run.name={RUN_NAME}"])
    run = ROOT / p.run.output_root / p.run.name
    chosen = [stages_mod.get(n) for n in args.only] if args.only else list(stages_mod.STAGES)
    if not args.only and run.exists():
        shutil.rmtree(run)  # a fresh run
    shots = run / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.params, run / "params.yaml")
    results, ok = [], True
    with tempfile.TemporaryDirectory(prefix="lab-check-") as tmp:
        lab = Lab(Path(tmp))
        log(f"JupyterLab on {lab.base} (root {ROOT}); browser {chromium}; params {args.params} -> {run}")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
                ctx = browser.new_context(viewport={"width": 1400, "height": 900})
                for stage in chosen:
                    path = write_stage_notebook(p, stage)
                    log(f"▶ {stage.name}: Run All in the Lab ...")
                    r = check_stage(lab, ctx, stage, path, shots, args.timeout)
                    results.append(r)
                    mark = "✓" if r["ok"] else "✗"
                    log(f"{mark} {stage.name} {r['elapsed_s']:.0f}s: {r.get('images', 0)} image(s), "
                        f"bars live {r.get('bars_drawn_live')}, screenshot {r.get('screenshot')}")
                    for problem in r["problems"]:
                        log(f"    {problem}")
                    if not r["ok"]:
                        ok = False
                        break  # later stages need this one
                browser.close()
        finally:
            lab.stop()

    index = html_export.export_run(run)
    exported = [s for s in chosen if (index.parent / f"{s.name}.html").is_file()]
    if len(exported) != len(results):
        ok = False
        log(f"✗ html export: {len(exported)} stage page(s) for {len(results)} notebook(s)")
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    if dirty:
        ok = False
        log(f"✗ git status is not clean after the check:\n{dirty}")
    total = time.time() - t_all
    summary = {"ok": ok, "elapsed_s": round(total, 1), "params": args.params, "stages": results,
               "html": str(index.relative_to(ROOT)), "git_clean": not dirty}
    (run / "lab-check.json").write_text(json.dumps(summary, indent=2) + "\n")
    m, s = divmod(int(total), 60)
    log(f"{'passed' if ok else 'FAILED'} in {m}m{s:02d}s: screenshots in {shots.relative_to(ROOT)}/, "
        f"html {index.relative_to(ROOT)}, summary {(run / 'lab-check.json').relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
