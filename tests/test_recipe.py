"""The runner: plan, skip/rerun decisions, dry run, clear failures, and real smoke runs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lib import artifacts, recipe, stages
from lib.paths import PARAMS_DIR, ROOT

FAKE = (
    stages.Stage("00_a", "A", ("run", "model"), key_metric="score"),
    stages.Stage("01_b", "B", ("run", "eval"), deps=("00_a",)),
    stages.Stage("02_c", "C", ("run",), deps=("01_b",)),
)


@pytest.fixture
def fake_stages(use_fake_stages):
    """Three fake stages with fixed code hashes; params write to a temp output root."""
    return use_fake_stages(FAKE)


def complete(p, name, metrics=None):
    d = artifacts.stage_dir(p, name)
    d.mkdir(parents=True, exist_ok=True)
    artifacts.StageRun(name, p, d).finish(metrics or {})


def actions(p, force=False, only=None, start=None):
    return [a for _, a in recipe.plan(p, recipe.select(only, start), force)]


def test_plan_skips_only_what_is_current(fake_stages):
    p = fake_stages()
    assert actions(p) == ["run", "run", "run"]
    for s in FAKE:
        complete(p, s.name)
    assert actions(p) == ["skip", "skip", "skip"]
    assert actions(p, force=True) == ["run", "run", "run"]
    # a parameter only stage 01 reads: 01 reruns, and 02 with it (its upstream changes); 00 stays
    assert actions(fake_stages("eval.top_p=0.9")) == ["skip", "run", "run"]
    # a parameter of 00's section: everything downstream reruns
    assert actions(fake_stages("model.hidden_size=64", "model.intermediate_size=64")) == ["run", "run", "run"]


def test_stale_upstream_fingerprint_reruns_downstream(fake_stages):
    p = fake_stages()
    for s in FAKE:
        complete(p, s.name)
    complete(fake_stages("model.num_layers=3"), "00_a")  # 00 recomputed with other params
    assert actions(p) == ["run", "run", "run"]


def test_interrupted_stage_is_not_current(fake_stages):
    p = fake_stages()
    complete(p, "00_a")
    (artifacts.stage_dir(p, "00_a") / artifacts.MANIFEST).unlink()  # as open_stage does on start
    assert actions(p, only=["00"]) == ["run"]


def test_select_and_missing_dependency(fake_stages):
    p = fake_stages()
    assert [s.name for s in recipe.select(["01"], None)] == ["01_b"]
    assert [s.name for s in recipe.select(None, "01_b")] == ["01_b", "02_c"]
    with pytest.raises(SystemExit, match="needs 00_a"):
        recipe.plan(p, recipe.select(["01"], None), False)
    with pytest.raises(KeyError, match="unknown stage"):
        stages.get("99")


def test_resumable_dir_kept_for_same_inputs_wiped_for_new(fake_stages, capsys):
    p = fake_stages()
    run = artifacts.StageRun("00_a", p, artifacts.stage_dir(p, "00_a"))
    d = run.resumable_dir("work")
    (d / "shard-0.parquet").write_text("partial work of a killed run")
    assert (run.resumable_dir("work") / "shard-0.parquet").exists()  # same inputs: resume
    changed = fake_stages("model.num_layers=3")
    d2 = artifacts.StageRun("00_a", changed, artifacts.stage_dir(changed, "00_a")).resumable_dir("work")
    assert d2 == d and not (d2 / "shard-0.parquet").exists()  # other params: start over, said aloud
    assert "starting it over" in capsys.readouterr().out


def test_require_names_the_command(fake_stages):
    p = fake_stages()
    with pytest.raises(artifacts.MissingArtifactError, match="--only 00_a"):
        artifacts.require(p, "00_a")


def test_manifest_contents(fake_stages):
    p = fake_stages()
    complete(p, "00_a", {"score": 0.5})
    complete(p, "01_b")
    m = artifacts.read_manifest(artifacts.stage_dir(p, "01_b"))
    assert m["params_hash"] == p.hash(("run", "eval"))
    assert m["upstream"]["00_a"]["fingerprint"] == artifacts.read_manifest(artifacts.stage_dir(p, "00_a"))["fingerprint"]
    assert set(m["params"]) == {"run", "eval"}
    assert m["versions"]["torch"] and m["versions"]["transformers"]
    assert "commit" in m["git"]
    assert json.loads((artifacts.stage_dir(p, "00_a") / artifacts.METRICS).read_text()) == {"score": 0.5}


def cli(*args):
    return subprocess.run([sys.executable, "-m", "lib.recipe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_dry_run_prints_plan_and_runs_nothing(tmp_path):
    r = cli("params/smoke.yaml", "--dry-run", "--set", f"run.output_root={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "00_base_model" in r.stdout and "dry run" in r.stdout
    assert not (tmp_path / "smoke").exists()


def test_misspelled_key_fails_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {PARAMS_DIR / 'smoke.yaml'}\nbase_pretrain:\n  learning_rate: 0.1\n")
    r = cli(str(bad), "--dry-run")
    assert r.returncode == 2
    assert "unknown key 'base_pretrain.learning_rate'" in r.stderr and "bad.yaml" in r.stderr


@pytest.mark.slow
def test_smoke_run_skip_and_failure(tmp_path):
    """Real notebooks through papermill: run, skip on rerun, rerun on change, fail loudly."""
    out = f"run.output_root={tmp_path}"
    r = cli("params/smoke.yaml", "--set", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "✓ 00_base_model" in r.stdout and "heldout_accuracy" in r.stdout
    # a healthy run's console is quiet: no kernel chatter, no unencrypted-TCP warning
    assert "IPKernelApp" not in r.stdout + r.stderr and "encryption" not in r.stdout + r.stderr
    for s in ("00_base_model", "03_mid_train"):  # the trainers reported their steps to the progress file
        recs = [json.loads(x) for x in (tmp_path / "smoke" / s / "progress.jsonl").read_text().splitlines()]
        assert any(x["task"] == "train" and x["done"] and x["n"] == x["total"] > 0 for x in recs), s
    stage = tmp_path / "smoke" / "00_base_model"
    for f in ("manifest.json", "metrics.json", "00_base_model.ipynb", "model/config.json"):
        assert (stage / f).is_file(), f
    metrics = json.loads((stage / "metrics.json").read_text())
    assert metrics["n_params"] > 0 and 0 <= metrics["heldout_accuracy"] <= 1 and metrics["tokens_seen"] > 0
    # every notebook ran: the evaluation stage wrote the report from every checkpoint stage
    assert all(f"✓ {s.name}" in r.stdout for s in stages.STAGES)
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert [row["label"] for row in report["stages"]] == [s.label for s in stages.STAGES if s.checkpoint]
    md = (tmp_path / "smoke" / "REPORT.md").read_text()
    assert "## Stage table" in md and "| base |" in md
    for png in ("pass_at_k.png", "by_level.png", "lengths.png"):
        assert (tmp_path / "smoke" / "07_eval" / png).stat().st_size > 1000
    # every finished stage left its ETA profile for the next run in this folder
    profiles = json.loads((tmp_path / "smoke" / "eta_profile.json").read_text())
    assert sorted(profiles) == sorted(s.name for s in stages.STAGES)
    assert profiles["03_mid_train"]["tasks"][0][0] == "sampling" and any(t[0] == "train" for t in profiles["03_mid_train"]["tasks"])
    index = (tmp_path / "smoke" / "html" / "index.html").read_text()  # the run as HTML, every stage linked
    assert all(f'href="{s.name}.html"' in index for s in stages.STAGES)

    # reproducible: the same seed in a fresh folder gives the same table, number for number
    again = tmp_path / "again"
    r2 = cli("params/smoke.yaml", "--set", f"run.output_root={again}")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    report2 = json.loads((again / "smoke" / "report.json").read_text())

    def table(rep):
        return [(row["label"], name, e["pass1"]["mean"], e["pass_at_k"], e["length"]["mean"])
                for row in rep["stages"] + rep["ablations"] for name, e in sorted(row["evals"].items())]

    assert table(report2) == table(report)
    for s in stages.STAGES:
        m1 = json.loads((tmp_path / "smoke" / s.name / "metrics.json").read_text())
        m2 = json.loads((again / "smoke" / s.name / "metrics.json").read_text())
        for key in (s.key_metric, "final_loss", "train_loss", "correct_share"):
            assert m1.get(key) == m2.get(key), (s.name, key)

    r = cli("params/smoke.yaml", "--set", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("up to date, skipped") == len(stages.STAGES) and "▶" not in r.stdout

    # a parameter only the evaluation reads: earlier stages stay, evaluation reruns
    r = cli("params/smoke.yaml", "--set", out, "--set", "eval.top_p=0.9")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("up to date, skipped") == len(stages.STAGES) - 1 and "✓ 07_eval" in r.stdout
    # a teacher parameter: data generation and everything after it would rerun, the base model not
    # (the plan only: executing it would cost another whole smoke run)
    r = cli("params/smoke.yaml", "--set", out, "--set", "teacher.verbosity=normal", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    planned = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines() if line.startswith("  0")}
    assert planned == {s.name: ("skip" if s.name == "00_base_model" else "run") for s in stages.STAGES}, r.stdout

    r = cli("params/smoke.yaml", "--set", out, "--set", "model.init=/nonexistent/checkpoint")
    assert r.returncode == 1
    assert "✗ 00_base_model failed" in r.stderr and str(stage / "00_base_model.ipynb") in r.stderr
    assert not (stage / "manifest.json").exists()  # a failed stage never looks complete


def test_a_library_change_reruns_the_stages_that_import_it(tmp_path):
    """The fingerprint hashes the source of every lib module a stage's notebook imports (through
    other lib modules too), so editing lib/rl.py reruns 06 but not 01; lib/verify.py reaches both."""
    import shutil

    lib_copy = tmp_path / "lib"
    shutil.copytree(artifacts.LIB_DIR, lib_copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = {s: artifacts.lib_hash(s, lib_copy) for s in ("01_generate_data", "06_rl")}
    assert before == {s: artifacts.lib_hash(s) for s in before}  # same sources, same hash

    with (lib_copy / "rl.py").open("a") as f:
        f.write("\n# an edit\n")
    after_rl = {s: artifacts.lib_hash(s, lib_copy) for s in before}
    assert after_rl["06_rl"] != before["06_rl"]
    assert after_rl["01_generate_data"] == before["01_generate_data"]  # 01 never imports lib.rl

    with (lib_copy / "teachers" / "endpoint.py").open("a") as f:  # a package's module, imported via __init__
        f.write("\n# an edit\n")
    after_ep = {s: artifacts.lib_hash(s, lib_copy) for s in before}
    assert after_ep["01_generate_data"] != after_rl["01_generate_data"]
    closure = {f.name for f in artifacts.lib_closure(["from lib import rl"], lib_copy)}
    assert {"rl.py", "training.py", "evaluation.py", "verify.py"} <= closure and "tagging.py" not in closure


def test_git_state_runs_the_clean_filter_once_not_on_every_call(tmp_path):
    """A fresh checkout: `git diff` would run every filtered file through its clean filter on each
    call (~21 s a call with nbstripout on the notebooks); git_state records the result once."""
    import os
    import subprocess

    from lib import artifacts

    repo, count = tmp_path / "repo", tmp_path / "filter_runs"
    repo.mkdir()

    def git(*args):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    git("config", "filter.counted.clean", f"sh -c 'echo x >> {count}; cat'")
    (repo / ".gitattributes").write_text("*.ipynb filter=counted\n")
    (repo / "a.ipynb").write_text("{}\n")
    git("add", ".")
    git("commit", "-qm", "one")
    os.utime(repo / "a.ipynb", (1, 1))  # the stat data no longer match: git must look at the content
    count.unlink(missing_ok=True)
    first = artifacts.git_state(repo)
    second = artifacts.git_state(repo)
    assert first["dirty"] is False and second == first and len(first["commit"]) == 40
    assert len(count.read_text().splitlines()) == 1  # once in all, not once per git_state call
    (repo / "a.ipynb").write_text('{"changed": 1}\n')
    assert artifacts.git_state(repo)["dirty"] is True


@pytest.mark.slow
def test_sigterm_stops_the_run_cleanly_and_leaves_no_process(tmp_path):
    """A time limit's SIGTERM mid-stage, on the rehearsal (a served checkpoint + a stage kernel): exit
    143 with a message, neither the `transformers serve` process nor the kernel left running (before
    the handler, the server outlived the runner and kept its port), no manifest for the interrupted
    stage, and the run folder not left locked: the same command then runs the stage."""
    import signal
    import time

    import psutil

    args = ["params/rehearsal.yaml", "--only", "00", "--set", f"run.output_root={tmp_path}"]
    sockets_before = set(ROOT.glob("kernel-ipc-*"))
    proc = subprocess.Popen([sys.executable, "-m", "lib.recipe", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    progress_file = tmp_path / "rehearsal" / "00_base_model" / artifacts.PROGRESS
    deadline = time.time() + 300
    while not (progress_file.is_file() and progress_file.stat().st_size) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert progress_file.is_file(), "stage 00 never started"
    children = psutil.Process(proc.pid).children(recursive=True)
    cmdlines = [" ".join(c.cmdline()) for c in children]
    assert any("transformers" in c and "serve" in c for c in cmdlines), cmdlines
    assert any("ipykernel" in c for c in cmdlines), cmdlines
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert "interrupted by SIGTERM" in err and "run the same command again" in err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [" ".join(c.cmdline()) for c in alive]
    assert artifacts.read_manifest(tmp_path / "rehearsal" / "00_base_model") is None
    # the killed kernel's IPC sockets do not litter the checkout (jupyter_client's default place)
    assert set(ROOT.glob("kernel-ipc-*")) == sockets_before
    r = cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "✓ 00_base_model" in r.stdout


def test_kernel_sockets_live_in_the_given_folder_not_the_working_directory(tmp_path):
    """jupyter_client puts IPC sockets at ./kernel-ipc-<port>; a kernel that is not shut down cleanly
    leaves them in the user's checkout. The runner's kernel manager puts them under its own folder."""
    cls = recipe.quiet_kernel_manager(tmp_path / "kernel.log", tmp_path / "ipc")
    km = cls(kernel_name="python3")
    assert km.transport == "ipc"
    assert km.ip == str(tmp_path / "ipc" / "kernel")
    # a manager built without the runner's class still defaults to the working directory
    from jupyter_client.manager import AsyncKernelManager
    assert AsyncKernelManager(kernel_name="python3", transport="ipc").ip == "kernel-ipc"


def _kernels_of_this_process():
    import psutil

    return [c for c in psutil.Process().children(recursive=True) if "ipykernel" in " ".join(c.cmdline())]


def test_a_warm_kernel_runs_a_notebook_with_its_imports_done_and_is_killed_after(tmp_path):
    """The next stage's kernel, started ahead: the notebook runs in it (working directory: the
    repository), the listed imports are already done, and closing it kills it and keeps its log."""
    import papermill as pm
    import psutil

    nb = {"cells": [{"cell_type": "code", "id": "c0", "metadata": {}, "execution_count": None, "outputs": [], "source":
                     "import os, sys\nprint('warm' if 'json' in dir() else 'cold', os.getcwd())\n"
                     "print('to the log', file=sys.__stderr__, flush=True)"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "in.ipynb").write_text(json.dumps(nb))
    warm = recipe.WarmKernel(recipe.ensure_kernel(), imports="import json")
    pid = warm.km.provisioner.process.pid
    ipc = warm.log_path.parent
    assert warm.alive() and psutil.pid_exists(pid)
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), km=warm.km, progress_bar=False,
                        kernel_name=recipe.ensure_kernel())
    out = json.loads((tmp_path / "out.ipynb").read_text())["cells"][0]["outputs"][0]["text"]
    assert "".join(out) == f"warm {ROOT}\n"
    assert warm.alive()  # papermill leaves a kernel it did not start running: closing it is ours
    (tmp_path / "kernel.log").write_text("earlier\n")
    warm.close(tmp_path / "kernel.log")
    warm.close(tmp_path / "kernel.log")  # idempotent
    assert not warm.alive()
    assert not psutil.pid_exists(pid)  # killed and reaped
    assert not ipc.exists()
    log = (tmp_path / "kernel.log").read_text()
    assert log.startswith("earlier\n") and "to the log" in log


def test_run_steps_starts_the_next_stages_kernel_ahead_and_ends_it_when_a_stage_fails(fake_stages, monkeypatch):
    p = fake_stages()
    monkeypatch.setattr(recipe, "WARM_IMPORTS", "import json")
    seen = []

    def fake_execute(p, stage, kernel, warm=None):
        seen.append((stage.name, warm, len(_kernels_of_this_process())))
        if stage.name == "01_b":
            assert warm is not None and warm.alive()
            raise SystemExit("✗ 01_b failed: boom")
        return 1.0

    monkeypatch.setattr(recipe, "execute", fake_execute)
    steps = [(s, "run") for s in FAKE]
    assert recipe.run_steps(p, steps, recipe.ensure_kernel()) == 1
    (n0, w0, k0), (n1, w1, k1) = seen
    assert (n0, w0, k0) == ("00_a", None, 1)  # while 00 ran, 01's kernel was up
    assert n1 == "01_b" and isinstance(w1, recipe.WarmKernel) and k1 == 2  # 01 got it; 02's was started
    assert not w1.alive() and _kernels_of_this_process() == []  # both ended: no kernel outlives the run
    # a stage planned as skipped gets no kernel ahead
    seen.clear()
    steps = [(FAKE[0], "run"), (FAKE[1], "skip")]
    complete(p, "00_a")
    complete(p, "01_b")
    assert recipe.run_steps(p, steps, recipe.ensure_kernel()) == 0
    assert [(n, w, k) for n, w, k in seen] == [("00_a", None, 0)] and _kernels_of_this_process() == []


def test_a_stage_whose_kernel_ahead_died_runs_in_a_new_one(tmp_path, capsys):
    """A kernel started ahead can die before its stage (out of memory while the stage before runs):
    the stage says so and runs in a fresh kernel; the dead one's log is kept in the stage's."""
    from lib import params as params_mod

    p = params_mod.load(str(PARAMS_DIR / "smoke.yaml"), [f"run.output_root={tmp_path}"])
    stage = next(s for s in stages.STAGES if s.name == "00_base_model")
    warm = recipe.WarmKernel(recipe.ensure_kernel(), imports="import sys; print('warm-up ran', file=sys.__stderr__)")
    import time

    import psutil
    deadline = time.time() + 60
    while "warm-up ran" not in (warm.log_path.read_text() if warm.log_path.exists() else ""):
        assert time.time() < deadline, "the kernel started ahead never ran its imports"
        time.sleep(0.2)
    psutil.Process(warm.km.provisioner.process.pid).kill()
    warm.km.provisioner.process.wait()
    assert recipe.execute(p, stage, recipe.ensure_kernel(), warm=warm) > 0
    assert "the kernel started ahead for 00_base_model has died" in capsys.readouterr().err
    assert artifacts.is_current(p, "00_base_model") and not warm.alive()
    assert "warm-up ran" in (artifacts.stage_dir(p, "00_base_model") / "kernel.log").read_text()
    assert _kernels_of_this_process() == []


def test_a_failed_html_export_is_a_warning_with_the_retry_command(tmp_path, monkeypatch):
    """The HTML pages come after every stage finished: an export that fails (on the first GPU check,
    a package missing from the device's image) is reported, and the run still counts as finished."""
    from lib import html_export

    def broken(run_dir):
        raise ModuleNotFoundError("No module named 'mistune'")

    monkeypatch.setattr(html_export, "export_run", broken)
    line = recipe.export_html(tmp_path)
    assert line.startswith("warning: the html report was not written (ModuleNotFoundError: No module named 'mistune')")
    assert f"python -m lib.html_export {tmp_path}" in line and str(tmp_path / "REPORT.md") in line
    monkeypatch.setattr(html_export, "export_run", lambda run_dir: tmp_path / "html" / "index.html")
    assert recipe.export_html(tmp_path) == f"html report: {tmp_path / 'html' / 'index.html'}"


@pytest.mark.slow
def test_a_killed_runner_leaves_no_kernel_socket_in_the_checkout(tmp_path):
    """SIGKILL (an out-of-memory kill, a lost job) gives the runner no chance to clean up. With
    jupyter_client's default the stage kernel's five IPC sockets stayed in the checkout as
    ./kernel-ipc-<port> (five per killed stage, measured before the fix); now they are in a
    temporary folder."""
    import signal
    import time

    sockets_before = set(ROOT.glob("kernel-ipc-*"))
    proc = subprocess.Popen([sys.executable, "-m", "lib.recipe", "params/smoke.yaml", "--only", "00", "--set",
                             f"run.output_root={tmp_path}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    progress_file = tmp_path / "smoke" / "00_base_model" / artifacts.PROGRESS
    deadline = time.time() + 120
    while not (progress_file.is_file() and progress_file.stat().st_size) and time.time() < deadline:
        assert proc.poll() is None, "the run ended before its stage started"
        time.sleep(0.2)
    assert progress_file.is_file(), "stage 00 never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(2)  # the orphaned kernel notices its parent is gone
    assert set(ROOT.glob("kernel-ipc-*")) == sockets_before
