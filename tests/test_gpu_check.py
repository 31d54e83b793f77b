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
