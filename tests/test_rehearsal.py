"""params/rehearsal.yaml: the real-scale path (phi4-mini.yaml) run end to end on a CPU.

The slow test runs ``python -m lib.recipe params/rehearsal.yaml`` as a user would: the runner hosts
a tiny checkpoint with ``transformers serve`` on loopback, the teacher, the LLM judge and the LLM
tagger talk to it over HTTP, problems come from files in the hub datasets' schemas through
`datasets`, and mid-training, SFT, DPO and RL each run under ``accelerate launch`` in 2 processes.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lib import artifacts, serving, stages
from lib import params as P
from lib.paths import PARAMS_DIR, ROOT

DATA = ROOT / "data" / "rehearsal"

# What the rehearsal may change from phi4-mini.yaml (its header says why); anything else differing
# would make it rehearse another path than the GPU run's.
SIZES = {
    "problems.n_train", "problems.n_test", "teacher.n_rollouts", "teacher.max_tokens", "teacher.shard_size",
    "subsets.sft_n_problems", "subsets.rl_n_problems", "eval.n_runs", "eval.n_samples", "eval.max_new_tokens",
    "eval.batch_size", "verify.workers", "verify.judge_max_tokens", "run.threads",
    *(f"{s}.{k}" for s in ("mid_train", "sft", "dpo", "rl") for k in (
        "max_steps", "global_batch_size", "batch_size", "grad_accum", "max_length", "checkpoint_every", "eval_problems")),
    "rl.num_generations", "rl.probe_samples", "rl.eval_every", "rl.eval_samples",
}
INPUTS = {"problems.sources", "model.init", "eval.benchmarks", "tagging.decontaminate_against", "rl.eval_set"}
ENDPOINTS = {"serve.checkpoint", "serve.name", "teacher.base_url", "teacher.model", "teacher.max_concurrency",
             "teacher.timeout_s", "teacher.max_retries", "verify.judge_base_url", "verify.judge_model",
             "verify.judge_max_retries"}
MACHINE = {"run.name", "run.device", "mid_train.accelerate_config", "sft.accelerate_config", "dpo.accelerate_config",
           "rl.accelerate_config", "rl.use_vllm", "eval.use_vllm"}
RANDOM_MODEL = {"rl.max_length_cv", "rl.max_pass_rate", "rl.drop_unsolved", "subsets.sft_balance"}


def differing(a: P.Params, b: P.Params) -> set[str]:
    return {f"{s}.{k}" for s in P.SECTIONS for k, v in b.section(s).items() if a.section(s)[k] != v}


def test_the_rehearsal_changes_only_sizes_inputs_endpoints_and_the_machine():
    real, rehearsal = P.load(PARAMS_DIR / "phi4-mini.yaml"), P.load(PARAMS_DIR / "rehearsal.yaml")
    changed = differing(real, rehearsal)
    assert changed - (SIZES | INPUTS | ENDPOINTS | MACHINE | RANDOM_MODEL) == set()
    # the real-scale choices that make it the GPU run's path
    for key in ("problems.source", "teacher.kind", "tagging.tagger", "verify.second_opinion", "model.dtype",
                "mid_train.activation_checkpointing", "dpo.activation_checkpointing", "mid_train.packing",
                "sft.lr", "dpo.lr", "dpo.beta", "rl.loss_type", "rl.temperature_annealing", "rl.rebalance"):
        s, k = key.split(".")
        assert getattr(getattr(rehearsal, s), k) == getattr(getattr(real, s), k), key
    assert [s["name"] for s in rehearsal.problems.sources] == [s["name"] for s in real.problems.sources]
    for ours, theirs in zip(rehearsal.problems.sources, real.problems.sources):
        assert {k: v for k, v in ours.items() if k != "dataset"} == {k: v for k, v in theirs.items() if k not in ("dataset", "config")} | {"config": None}


def test_serve_must_be_the_endpoints_it_replaces():
    with pytest.raises(P.ParamsError, match=r"teacher.base_url/teacher.model is http://localhost:9000/v1"):
        P.load(PARAMS_DIR / "rehearsal.yaml", ["teacher.base_url=http://localhost:9000/v1"])
    with pytest.raises(P.ParamsError, match=r"verify.judge_base_url/verify.judge_model .* 'gpt-4o-mini'"):
        P.load(PARAMS_DIR / "rehearsal.yaml", ["verify.judge_model=gpt-4o-mini"])
    P.load(PARAMS_DIR / "rehearsal.yaml", ["serve.checkpoint=null", "verify.judge_model=gpt-4o-mini"])  # own servers


# The columns of the real datasets (their hub cards, 2025): the files must be readable by the same
# source definitions as phi4-mini.yaml's, so they carry the same columns.
OPENR1_COLUMNS = ["problem", "solution", "answer", "problem_type", "question_type", "source", "uuid",
                  "is_reasoning_complete", "generations", "correctness_math_verify", "correctness_llama",
                  "finish_reasons", "correctness_count", "messages"]
OPENTHOUGHTS_METADATA_COLUMNS = ["problem", "deepseek_reasoning", "deepseek_solution", "ground_truth_solution",
                                 "domain", "source", "test_cases", "starter_code"]


def test_rehearsal_files_have_the_hub_schemas():
    import datasets

    r1 = datasets.load_dataset("json", data_files=str(DATA / "openr1_math.jsonl"), split="train")
    ot = datasets.load_dataset("json", data_files=str(DATA / "openthoughts_metadata.jsonl"), split="train")
    assert r1.column_names == OPENR1_COLUMNS and ot.column_names == OPENTHOUGHTS_METADATA_COLUMNS
    assert all(2 <= len(g) <= 4 for g in r1["generations"])
    verdicts = [v for vs in r1["correctness_math_verify"] for v in vs]
    assert 0 < sum(verdicts) < len(verdicts)  # right and wrong traces, as in the real set
    assert {"math", "code"} <= set(ot["domain"])  # the `where` filter has rows to drop
    cfg = json.loads((DATA / "model" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16" and cfg["tie_word_embeddings"] is True  # saved as hub checkpoints are


@pytest.mark.slow
def test_the_committed_rehearsal_data_is_what_the_tool_writes():
    r = subprocess.run([sys.executable, "tools/make_rehearsal_data.py", "--check"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(not serving.serve_available(), reason='needs pip install -e ".[serving]"')
@pytest.mark.slow
def test_the_rehearsal_runs_every_stage_through_real_servers_and_launchers(tmp_path):
    port = serving.free_port()  # params' 8123 may be taken on a shared machine; the URLs follow the port
    url = f"http://127.0.0.1:{port}/v1"
    sets = [f"run.output_root={tmp_path}", f"serve.port={port}", f"teacher.base_url={url}", f"verify.judge_base_url={url}"]
    r = subprocess.run([sys.executable, "-m", "lib.recipe", "params/rehearsal.yaml", *(x for s in sets for x in ("--set", s))],
                       cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    p = P.load(PARAMS_DIR / "rehearsal.yaml", sets)
    metrics = {s.name: json.loads((artifacts.stage_dir(p, s.name) / artifacts.METRICS).read_text()) for s in stages.STAGES}
    assert "serving data/rehearsal/model as 'rehearsal-teacher'" in r.stdout

    # 01: both sources read through `datasets` with their field maps; OpenThoughts' code rows filtered out
    m01 = metrics["01_generate_data"]
    assert m01["sources"]["openr1"]["read"] == 100 and m01["sources"]["openthoughts"]["read"] == 40
    assert m01["problems"] == 120 and m01["rollouts"] == 480  # every problem topped up to teacher.n_rollouts
    assert m01["teacher"] == "endpoint:rehearsal-teacher"
    assert m01["verifier"]["judge_calls"] > 0 and m01["verifier"]["judge_failed"] <= m01["verifier"]["judge_calls"]
    # 02: the LLM tagger asked the server about every problem, and every request was answered
    tagger = metrics["02_tag_data"]["tagger_requests"]
    assert tagger["error"] == 0 and sum(tagger.values()) == metrics["02_tag_data"]["problems"]
    # the server answered teacher, judge and tagger: every request it logged succeeded
    log = (tmp_path / "rehearsal" / "server" / "server.log").read_text()
    posts = [line for line in log.splitlines() if "POST /v1/chat/completions" in line]
    assert len(posts) > 480 and all("200 OK" in line for line in posts)

    # 03-06 trained in 2 processes under accelerate launch
    for name in ("03_mid_train", "04_sft", "05_rollout_dpo", "06_rl"):
        assert metrics[name]["world_size"] == 2, name
        assert metrics[name]["backend"].startswith("accelerate launch --config_file configs/accelerate_cpu_2proc"), name
    # each stage's key metric is measured on the params' eval set, not the synthetic split
    assert {metrics[s]["heldout_set"] for s in ("00_base_model", "03_mid_train", "04_sft", "05_rollout_dpo", "06_rl")} == {"math500"}
    assert (tmp_path / "rehearsal" / "REPORT.md").is_file()
    # the server was stopped with the run: nothing listens on its port any more
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", p.serve.port)) != 0
