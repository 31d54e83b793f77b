"""Multi-process training: two CPU processes (gloo, DDP) match one process within tolerance."""
from __future__ import annotations

import pytest

from lib import chat, launch, problems
from lib import model as modellib
from lib.paths import ROOT


@pytest.mark.slow
def test_two_processes_match_one(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    # fp32 (launch's default dtype "auto" on CPU): bf16 autocast rounds a batch of 8 and two of 4
    # differently (measured: 6.5% of the update), which would hide a DDP error
    base = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "base")
    rows = [chat.conversation(p.problem, problems.cot_solution(p)) for p in problems.generate(32, seed=2)]
    one_proc = smoke_params.sft.model_copy(update={"max_steps": 3, "batch_size": 8, "checkpoint_every": 0, "lr": 5e-3})
    two_proc = one_proc.model_copy(update={"batch_size": 4})  # same global batch of 8
    single = launch.launch(base, rows, one_proc, 0, tmp_path / "one")
    double = launch.launch(base, rows, two_proc, 0, tmp_path / "two",
                          accelerate_config=ROOT / "configs" / "accelerate_cpu_2proc.yaml")
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert double["steps"] == single["steps"] == 3
    a, _ = modellib.load(tmp_path / "one" / "model")
    b, _ = modellib.load(tmp_path / "two" / "model")
    start, _ = modellib.load(base)
    moved = max((pa - p0).abs().max().item() for pa, p0 in zip(a.parameters(), start.parameters()))
    diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    print(f"max |param change| {moved:.2e}; max |1-proc - 2-proc| {diff:.2e}; "
          f"train loss {single['train_loss']:.5f} vs {double['train_loss']:.5f}")
    assert moved > 1e-3  # training did something
    assert diff < 0.02 * moved, (diff, moved)  # DDP = same global batches and averaged gradients
    assert double["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)


def _pairs(n: int, seed: int):
    """Preference pairs: the worked solution is chosen, another problem's solution (a wrong answer) rejected."""
    import pandas as pd

    ps = problems.generate(n + 1, seed=seed)
    return pd.DataFrame([{"prompt": p.problem, "chosen": problems.cot_solution(p),
                          "rejected": problems.cot_solution(ps[i + 1]), "problem_id": p.id, "difficulty": "easy"}
                         for i, p in enumerate(ps[:n])])


@pytest.mark.slow
def test_dpo_two_processes_match_one_and_the_in_process_stage(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    """Rollout DPO under `accelerate launch` (2 CPU processes, DDP) = 1 launched process = in process."""
    import torch

    base = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "base")
    train, heldout = _pairs(24, seed=3), _pairs(4, seed=4)
    one_proc = smoke_params.dpo.model_copy(update={"max_steps": 3, "batch_size": 8, "lr": 5e-3, "checkpoint_every": 0,
                                                   "nll_weight": 0.0})  # DPO's loss alone (the NLL term: below)
    two_proc = one_proc.model_copy(update={"batch_size": 4,  # the same global batch of 8
                                           "accelerate_config": "configs/accelerate_cpu_2proc.yaml"})
    cpu = torch.device("cpu")
    a, _, single = launch.train_dpo_stage(base, train, heldout, one_proc, tmp_path / "in_process", device=cpu, seed=0)
    one = launch.launch(base, train, one_proc, 0, tmp_path / "one", task="dpo", eval_rows=heldout)
    b, _, double = launch.train_dpo_stage(base, train, heldout, two_proc, tmp_path / "two", device=cpu, seed=0)
    assert single["backend"] == "transformers" and double["backend"].startswith("accelerate launch")
    assert one["world_size"] == 1 and double["world_size"] == 2
    assert single["steps"] == one["steps"] == double["steps"] == 3
    # held-out preference accuracy is measured on every path (a coin flip is 0.5; before training it is 0)
    assert double["heldout_pref_accuracy_after"] is not None and single["heldout_pref_accuracy_before"] == 0
    c, _ = modellib.load(tmp_path / "one" / "model")
    start, _ = modellib.load(base)
    moved = max((pa - p0).abs().max().item() for pa, p0 in zip(a.parameters(), start.parameters()))
    launched = max((pa - pc).abs().max().item() for pa, pc in zip(a.parameters(), c.parameters()))
    ddp = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    print(f"max |param change| {moved:.2e}; in-process vs launched {launched:.2e}; 1-proc vs 2-proc {ddp:.2e}; "
          f"loss {single['train_loss']:.5f} / {one['train_loss']:.5f} / {double['train_loss']:.5f}")
    assert moved > 1e-3  # DPO moved the policy
    assert launched < 1e-4 * moved  # the command is the same work as the notebook's process
    assert ddp < 0.02 * moved, (ddp, moved)  # DDP = the same global batches, averaged gradients
    assert double["train_loss"] == pytest.approx(single["train_loss"], rel=1e-3)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="dpo.nll_weight > 0: TRL's sft term is a token mean per process, so 2 processes "
                   "weight the chosen answers differently from 1 (measured 2026-12-03: 2.4e-3 against an update of "
                   "7.5e-3); DPO's own loss matches to 2e-7")
def test_dpo_with_the_nll_term_two_processes_match_one(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    import torch

    base = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "base")
    train, heldout = _pairs(24, seed=3), _pairs(4, seed=4)
    one_proc = smoke_params.dpo.model_copy(update={"max_steps": 3, "batch_size": 8, "lr": 5e-3, "checkpoint_every": 0,
                                                   "nll_weight": 1.0})
    two_proc = one_proc.model_copy(update={"batch_size": 4, "accelerate_config": "configs/accelerate_cpu_2proc.yaml"})
    cpu = torch.device("cpu")
    a, _, _ = launch.train_dpo_stage(base, train, heldout, one_proc, tmp_path / "in_process", device=cpu, seed=0)
    b, _, _ = launch.train_dpo_stage(base, train, heldout, two_proc, tmp_path / "two", device=cpu, seed=0)
    start, _ = modellib.load(base)
    moved = max((pa - p0).abs().max().item() for pa, p0 in zip(a.parameters(), start.parameters()))
    ddp = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
    assert moved > 1e-3
    assert ddp < 0.02 * moved, (ddp, moved)


@pytest.mark.slow
def test_rl_arm_runs_in_two_processes_and_the_command_equals_the_notebook_path(smoke_params, tiny_model,
                                                                               tiny_tokenizer, tmp_path):
    """GRPO under `accelerate launch`: one launched process = in process (same samples, same tracker);
    two processes (DDP) train on the same global batch of completions, the main process tracking.

    An untrained model earns -1 on almost every completion, so most groups are all-equal and
    filtered: the processes then hold different rows to train on (some on one, none on the other),
    which deadlocked DDP before lib.rl kept every process's shapes and collectives the same. Sampling is seeded per process,
    so two processes draw other completions than one; weights are not compared across them."""
    import torch

    from lib import evaluation
    from lib import launch as L

    base = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "base")
    import pandas as pd
    prompts = pd.DataFrame([{"problem": p.problem, "answer": p.answer} for p in problems.generate(12, seed=5)])
    tracked = evaluation.synthetic_test_set(4, 0, smoke_params.problems.domains, smoke_params.problems.levels)
    one = smoke_params.rl.model_copy(update={"max_steps": 2, "batch_size": 8, "num_generations": 4, "lr": 5e-3,
                                             "eval_every": 10, "eval_samples": 2, "checkpoint_every": 0,
                                             "arms_side_by_side": False})
    two = one.model_copy(update={"batch_size": 4, "accelerate_config": "configs/accelerate_cpu_2proc.yaml"})
    one_cmd = one.model_copy(update={"accelerate_config": "configs/accelerate_cpu_1proc.yaml"})
    verify = smoke_params.verify.model_copy(update={"workers": 0})
    cpu = torch.device("cpu")
    arm = dict(verify_section=verify, tracked=tracked, device=cpu, seed=0, tricks=True)
    a, _, s_in, h_in, _ = L.train_rl_arm(base, prompts, one, tmp_path / "in_process", **arm)
    c, _, s_one, h_one, _ = L.train_rl_arm(base, prompts, one_cmd, tmp_path / "one", **arm)
    b, _, s_two, h_two, _ = L.train_rl_arm(base, prompts, two, tmp_path / "two", **arm)
    assert s_in["steps"] == s_one["steps"] == s_two["steps"] == 2
    assert s_one["world_size"] == 1 and s_two["world_size"] == 2
    assert [g["completions"] for g in s_two["groups"]] == [g["completions"] for g in s_in["groups"]] == [8, 8]
    assert [r["step"] for r in h_two] == [r["step"] for r in h_in] == [0, 2]  # tracked on the main process
    assert h_two[0] == h_in[0]  # the same starting model, measured alike
    assert s_in["reward_counts"] == s_one["reward_counts"] and h_one == h_in  # the command = the notebook path
    launched = max((pa - pc).abs().max().item() for pa, pc in zip(a.parameters(), c.parameters()))
    assert launched == 0.0
    assert sum(s_two["reward_counts"].values()) == 8  # the main process rewarded its half of 2 steps x 8
    # where a process kept rows and the other none, both still ran the same collectives (no deadlock),
    # and the kept rows moved the weights; all-filtered steps leave them alone
    start, _ = modellib.load(base)
    moved = max((pb - p0).abs().max().item() for pb, p0 in zip(b.parameters(), start.parameters()))
    kept = [g["kept_completions"] for g in s_two["groups"]]
    print(f"2 processes: kept completions per step {kept}, reward counts {s_two['reward_counts']}, "
          f"max |weight change| {moved:.2e}")
    assert (moved > 0) == (sum(kept) > 0)


def test_launched_process_keeps_the_callers_pythonpath_after_this_checkout(tmp_path):
    """A package found only through the caller's PYTHONPATH (pip --target) is importable in the child."""
    import os
    import subprocess
    import sys

    (tmp_path / "carried_pkg_marker.py").write_text("WHERE = 'carried'\n")
    env = launch.child_env({"PATH": os.environ.get("PATH", ""),
                                "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    parts = env["PYTHONPATH"].split(os.pathsep)
    assert parts == [str(ROOT), str(tmp_path)]  # the checkout first, once; the caller's entry kept
    out = subprocess.run([sys.executable, "-c", "import carried_pkg_marker, lib; print(carried_pkg_marker.WHERE)"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "carried"
    assert launch.child_env({})["PYTHONPATH"] == str(ROOT)


def _rl_arms_setup(smoke_params, tiny_model, tiny_tokenizer, tmp_path, **update):
    import pandas as pd

    from lib import evaluation

    base = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "base")
    ps = problems.generate(20, seed=5)  # 8 prompts for one arm, 12 for the other: a swap would show
    tricks = pd.DataFrame([{"problem": p.problem, "answer": p.answer} for p in ps[:8]])
    plain = pd.DataFrame([{"problem": p.problem, "answer": p.answer} for p in ps[8:]])
    tracked = evaluation.synthetic_test_set(4, 0, smoke_params.problems.domains, smoke_params.problems.levels)
    section = smoke_params.rl.model_copy(update={"max_steps": 2, "batch_size": 8, "num_generations": 4, "lr": 5e-3,
                                                 "eval_every": 10, "eval_samples": 2, "checkpoint_every": 0,
                                                 "arms_side_by_side": False, **update})
    verify = smoke_params.verify.model_copy(update={"workers": 0})
    return base, {"GRPO + tricks": (tricks, True), "plain GRPO": (plain, False)}, section, verify, tracked


@pytest.mark.slow
def test_rl_arms_side_by_side_equal_the_arms_one_after_the_other(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    """rl.arms_side_by_side: each arm in its own 1-thread process, at once, gives bit for bit what the
    arms give one after the other in this process at 1 thread (same samples, rewards, tracker rows,
    weights); only the plain arm writes to the progress file. (An untrained model earns -1 nearly
    everywhere, so the weights may not move; the tracker rows and per-step logs are the sharper check.)"""
    import json
    import os

    import torch

    from lib import progress

    base, arms, section, verify, tracked = _rl_arms_setup(smoke_params, tiny_model, tiny_tokenizer, tmp_path)
    kw = dict(verify_section=verify, tracked=tracked, device=torch.device("cpu"), seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = launch.train_rl_arms(base, arms, section, tmp_path / "sequential", **kw)
    finally:
        torch.set_num_threads(threads)
    old = os.environ.get(progress.ENV)
    sink = progress.start(tmp_path / "progress.jsonl")
    try:
        side = launch.train_rl_arms(base, arms, section.model_copy(update={"arms_side_by_side": True}),
                                    tmp_path / "side", **kw)
    finally:
        if old is None:
            os.environ.pop(progress.ENV, None)
        else:
            os.environ[progress.ENV] = old
    assert list(side) == list(seq) == ["GRPO + tricks", "plain GRPO"]
    start, _ = modellib.load(base)
    for name in arms:
        a, _, s_seq, h_seq, _ = seq[name]
        b, _, s_side, h_side, _ = side[name]
        assert s_side["backend"].startswith("side by side: 2 processes of ") and s_side["world_size"] == 1
        assert s_side["torch_threads"] == max(1, threads // 2)
        assert s_side["steps"] == s_seq["steps"] == 2
        assert s_side["reward_counts"] == s_seq["reward_counts"], name
        assert [g["completions"] for g in s_side["groups"]] == [g["completions"] for g in s_seq["groups"]]
        assert [r["step"] for r in h_side] == [r["step"] for r in h_seq] == [0, 2]
        assert h_side[0]["pass1"] == h_seq[0]["pass1"] and h_side[0]["cons@2"] == h_seq[0]["cons@2"]
        moved = max((pa - p0).abs().max().item() for pa, p0 in zip(a.parameters(), start.parameters()))
        diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))
        print(f"{name}: moved {moved:.2e}, side by side vs one after the other {diff:.2e}")
        assert s_side["distinct_prompts"] == s_seq["distinct_prompts"] == len(arms[name][0])
        untimed = [[{k: v for k, v in r.items() if "time" not in k and "per_second" not in k} for r in s["log"]]
                   for s in (s_side, s_seq)]
        assert untimed[0] == untimed[1], name  # lengths, rewards, losses, grad norms per step
        if max(1, threads // 2) == 1:
            assert diff == 0.0, name  # the same work at the same thread count (a 2-core machine)
        else:
            assert diff <= 1e-3 * moved, name  # more threads per arm than the sequential run's one: rounding
    records = [json.loads(line) for line in sink.read_text().splitlines()]
    train = [r for r in records if r["task"] == "train"]
    assert train and all(r["total"] == 2 for r in train)
    assert sum(1 for r in train if r.get("start")) == 1  # one arm reports: the runner follows one task


@pytest.mark.slow
def test_a_failed_side_by_side_arm_stops_the_others_and_is_named(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    import time

    base, arms, section, verify, tracked = _rl_arms_setup(smoke_params, tiny_model, tiny_tokenizer, tmp_path,
                                                          max_steps=10_000)
    def job(model_dir, out):  # the command stage 06 runs for its tricks arm
        return launch._grpo_job(model_dir, arms["GRPO + tricks"][0], section, out, verify_section=verify,
                                tracked=tracked, seed=0, tricks=True, start=None, dtype="auto")

    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"broken exited with code [1-9].*stopped long"):
        launch.launch_side_by_side({"broken": job(tmp_path / "no_such_checkpoint", tmp_path / "b"),
                                    "long": job(base, tmp_path / "l")})
    assert time.monotonic() - t0 < 120  # the long job (10,000 steps) was stopped, not waited for
    assert not (tmp_path / "l" / "train_stats.json").exists()


def test_rl_arms_run_side_by_side_only_on_a_cpu_without_a_launcher_and_never_in_one_folder(smoke_params):
    import torch

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    on = smoke_params.rl.model_copy(update={"arms_side_by_side": True, "accelerate_config": None})
    assert launch.arms_side_by_side(on, 2, cpu)
    assert not launch.arms_side_by_side(on, 1, cpu)  # one arm (compare_plain off): in the notebook's process
    assert not launch.arms_side_by_side(on, 2, gpu)  # a GPU trains the arms one after the other
    assert not launch.arms_side_by_side(on.model_copy(update={"accelerate_config": "configs/accelerate_cpu_2proc.yaml"}),
                                        2, cpu)  # the launcher decides the processes
    assert not launch.arms_side_by_side(on.model_copy(update={"arms_side_by_side": False}), 2, cpu)
    with pytest.raises(ValueError, match="share a folder"):
        launch.train_rl_arms("unused", {"a": (None, True), "b": (None, True)}, on, "unused",
                             verify_section=smoke_params.verify, tracked=None, device=cpu, seed=0)
