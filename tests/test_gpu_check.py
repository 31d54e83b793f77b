"""tools/gpu_check.py: the table it prints from a run folder, and its refusal without CUDA."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from lib.paths import ROOT

spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_rows_come_from_the_runner_profile_and_each_stage_metrics(tmp_path):
    for stage, metrics, elapsed in [("00_base_model", {"heldout_accuracy": 0.05}, 8.0),
                                    ("03_mid_train", {"heldout_accuracy": 0.47, "backend": "transformers"}, 900.0),
                                    ("01_generate_data", {"correct_share": 0.8}, 30.0)]:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "manifest.json").write_text(json.dumps({"elapsed_s": elapsed}))
        (tmp_path / stage / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "eta_profile.json").write_text(json.dumps({"00_base_model": {"wall_s": 21.2}}))
    rows = gpu_check.stage_rows(tmp_path)
    assert [(r["stage"], r["wall_s"], r["key_metric"], r["backend"]) for r in rows] == [
        ("00_base_model", 21.2, 0.05, ""), ("01_generate_data", 30.0, 0.8, ""),
        ("03_mid_train", 900.0, 0.47, "transformers")]  # the runner's wall time where it has one
    text = gpu_check.table(rows, "NVIDIA H100")
    assert "| 03_mid_train | 900 | NVIDIA H100 | transformers | 0.470 |" in text.splitlines()


def test_a_stage_carried_from_a_cpu_run_is_not_labelled_with_the_gpu(tmp_path):
    """A check that continues a run whose early stages ran on a CPU (``--name``) shows where each ran."""
    for stage, device in [("05_rollout_dpo", "cpu"), ("06_rl", "cuda")]:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "manifest.json").write_text(json.dumps(
            {"elapsed_s": 10.0, "params": {"run": {"device": device, "name": "x"}}}))
        (tmp_path / stage / "metrics.json").write_text(json.dumps({"heldout_accuracy": 0.0}))
    rows = gpu_check.stage_rows(tmp_path)
    assert [r["device"] for r in rows] == ["cpu", "cuda"]
    lines = gpu_check.table(rows, "NVIDIA H200").splitlines()
    assert "| 05_rollout_dpo | 10 | cpu |  | 0.000 |" in lines
    assert "| 06_rl | 10 | NVIDIA H200 |  | 0.000 |" in lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_by_name(capsys):
    assert gpu_check.main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_device_overrides_fit_the_launchers_to_the_gpus_and_use_vllm_when_there():
    rehearsal = ROOT / "params" / "rehearsal.yaml"
    one = gpu_check.device_overrides(rehearsal, "cuda", 1, vllm=False)
    assert "run.device=cuda" in one and "model.dtype=bfloat16" in one
    assert {f"{s}.accelerate_config=configs/accelerate_cpu_1proc.yaml" for s in gpu_check.TRAINING} <= set(one)
    eight = gpu_check.device_overrides(rehearsal, "cuda", 8, vllm=True)
    assert "mid_train.accelerate_config=configs/accelerate_cpu_2proc.yaml" in eight
    assert eight[-3:] == ["eval.use_vllm=true", "rl.use_vllm=true", "rl.accelerate_config=null"]  # last wins
    cpu = gpu_check.device_overrides(rehearsal, "cpu", 0, vllm=True)
    assert "model.dtype=float32" in cpu and "rl.use_vllm=true" not in cpu
    # smoke trains in the notebook's process: no launcher is added
    smoke = gpu_check.device_overrides(ROOT / "params" / "smoke.yaml", "cuda", 1, vllm=False)
    assert not any("accelerate_config" in s for s in smoke)
    from lib import params as P

    for sets in (one, eight, cpu, smoke):  # every combination is a valid params set
        P.load(rehearsal, sets)


def test_a_sigterm_is_passed_to_the_run_and_its_exit_awaited(tmp_path):
    """A lease running out sends SIGTERM to gpu_check: the recipe gets it too (and can stop its
    server), gpu_check waits for it and reports which signal stopped it, so the table is written."""
    import signal
    import subprocess
    import sys
    import time

    ready, got = tmp_path / "ready", tmp_path / "got"
    child = tmp_path / "child.py"
    child.write_text("import signal, sys, time, pathlib\n"
                     f"def bye(n, f):\n    pathlib.Path({str(got)!r}).write_text('SIGTERM'); sys.exit(143)\n"
                     "signal.signal(signal.SIGTERM, bye)\n"
                     f"pathlib.Path({str(ready)!r}).write_text('1')\n"
                     "time.sleep(60)\n")
    driver = (f"import importlib.util, sys\nspec = importlib.util.spec_from_file_location('g', {str(ROOT / 'tools' / 'gpu_check.py')!r})\n"
              "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
              f"print(g.run_forwarding_sigterm([sys.executable, {str(child)!r}], g.ROOT))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the child never started"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert time.time() - t0 < 20  # it did not wait out the child's 60 s sleep
    assert got.read_text() == "SIGTERM"
    assert out.strip() == "(143, 'SIGTERM')"
    assert proc.returncode == 0
