"""--dry-run's stage checks (lib.preflight): every shipped params file passes for every stage, built
exactly as its notebooks receive it; each fault a stage would hit later is named now."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lib import params as P
from lib import preflight, stages
from lib.paths import PARAMS_DIR, ROOT

SHIPPED = sorted(PARAMS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_stage_of_every_shipped_params_file_builds(path):
    p = P.load(path)
    for s in stages.STAGES:
        done = preflight.check_stage(p, s)
        assert done[0].endswith("parameters"), (s.name, done)
        if "verify" in {x.partition(".")[0] for x in s.sections}:
            assert any(d.startswith("verifier") for d in done), (s.name, done)


def test_real_scale_judge_and_teacher_are_built_from_their_own_keys():
    p = P.load(PARAMS_DIR / "phi4-mini.yaml")
    assert "verifier (second opinion: endpoint:gpt-4o-mini)" in preflight.check_stage(p, stages.get("03"))
    assert "LLM tagger, 128 at a time" in preflight.check_stage(p, stages.get("02"))
    for stage in ("00", "03", "04", "05", "06"):  # real data: each stage's key metric is MATH-500, not synthetic
        assert "key metric on math500" in preflight.check_stage(p, stages.get(stage))
    assert "key metric on synthetic" in preflight.check_stage(P.load(PARAMS_DIR / "tiny.yaml"), stages.get("04"))


@pytest.mark.parametrize("overrides,stage,message", [
    (["eval.benchmarks=[synthetic, mmlu]", "tagging.decontaminate_against=[synthetic, mmlu]"], "07",
     "07_eval: eval.benchmarks: unknown evaluation set 'mmlu'"),
    (["rl.eval_set=missing.jsonl", "tagging.decontaminate_against=[synthetic, missing.jsonl]"], "06",
     "06_rl: rl.eval_set: evaluation set file not found"),
    (["rl.accelerate_config=configs/accelerate_cpu_2proc.yaml", "rl.use_vllm=true"], "06",
     "rl.use_vllm with rl.accelerate_config"),
    (["dpo.accelerate_config=configs/accelerate_cpu_2proc.yaml", "dpo.batch_size=4", "dpo.global_batch_size=12"],
     "05", "global_batch_size=12 is not a multiple of batch_size=4 x 2 process"),
    (["sft.accelerate_config=configs/nope.yaml"], "04", "sft.accelerate_config not found"),
    (["mid_train.accelerate_config=configs/accelerate_cpu_2proc.yaml", "mid_train.batch_size=3",
      "mid_train.global_batch_size=16"], "03", "global_batch_size=16 is not a multiple of batch_size=3 x 2 process"),
    (["problems.source=jsonl", "rl.prompt_source=pool", "problems.dataset=nowhere.jsonl"], "01", "problems.dataset not found"),
    (["problems.source=jsonl", "rl.prompt_source=pool", "problems.dataset=README.md", "problems.field_map={question: q}"], "01",
     "problems.field_map maps unknown field(s) ['question']"),
    (["problems.source=hub", "rl.prompt_source=pool", "problems.dataset=a/b", "eval.benchmarks=[gpqa_diamond]",
      "tagging.decontaminate_against=[gpqa_diamond, synthetic]"], "04", "04_sft: problems.source is 'hub' (real data)"),
    (["problems.source=hub", "rl.prompt_source=pool", "problems.sources=[{dataset: a/b}, {dataset: nowhere.parquet}]"], "01",
     "problems.sources[1].dataset not found"),
    (["problems.source=hub", "rl.prompt_source=pool", "problems.sources=[{dataset: a/b, field_map: {solution: s}}]"], "01",
     "problems.sources[0].field_map maps unknown field(s) ['solution']"),
])
def test_a_fault_is_named_before_anything_runs(overrides, stage, message):
    # (real data on tiny's params: RL's fresh stream needs the generator, so those cases set rl.prompt_source=pool)
    p = P.load(PARAMS_DIR / "tiny.yaml", overrides)
    with pytest.raises(preflight.PreflightError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        preflight.check_stage(p, stages.get(stage))


def test_dry_run_exits_2_naming_the_stage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lib.recipe", "params/tiny.yaml", "--dry-run", "--set",
                        "rl.accelerate_config=configs/accelerate_cpu_2proc.yaml", "--set", "rl.use_vllm=true",
                        "--set", f"run.output_root={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "✗ 06_rl: rl.use_vllm with rl.accelerate_config" in r.stderr and "✓ 05_rollout_dpo" in r.stdout
    assert not (tmp_path / "tiny").exists()
