"""The recipe's stages, in order: which params sections each reads, which stages it builds on,
and the metric shown on its progress line. One entry per notebook in ``notebooks/``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str                     # notebook stem and output folder, e.g. "00_base_model"
    title: str
    sections: tuple[str, ...]     # what the notebook reads (hashed for reruns): sections, or 'section.key'
    deps: tuple[str, ...] = ()    # stages whose artifacts it reads
    key_metric: str = ""          # metrics.json key shown on the runner's progress line
    checkpoint: str | None = None  # subfolder holding a save_pretrained model, if the stage makes one
    label: str = ""               # row name in the stage table (paper style: "base", "+ SFT", ...)
    optional_deps: tuple[str, ...] = ()  # stages used when present (hashed into the fingerprint then)
    # ablation checkpoints the stage may also write: (subfolder, row label); 07 evaluates those present
    ablations: tuple[tuple[str, str], ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("00_base_model", "Base model", ("run", "problems", "model", "base_pretrain", "eval.benchmarks", "verify"),
          key_metric="heldout_accuracy", checkpoint="model", label="base"),
    Stage("01_generate_data", "Teacher distillation data", ("run", "problems", "teacher", "verify"),
          deps=("00_base_model",), key_metric="correct_share"),
    Stage("02_tag_data", "Tagging, decontamination, stage subsets", ("run", "problems.domains", "problems.levels", "problems.n_test", "teacher", "tagging", "subsets"),
          deps=("01_generate_data",), key_metric="sft_rollouts"),
    Stage("03_mid_train", "Distillation as mid-training", ("run", "problems.domains", "problems.levels", "problems.n_test", "problems.source", "eval.benchmarks", "model.dtype", "mid_train", "verify"),
          deps=("00_base_model", "02_tag_data"), key_metric="heldout_accuracy", checkpoint="model",
          label="+ mid-training"),
    Stage("04_sft", "Distillation as SFT", ("run", "problems.domains", "problems.levels", "problems.n_test", "problems.source", "eval.benchmarks", "model.dtype", "sft", "verify"),
          deps=("00_base_model", "02_tag_data"), optional_deps=("03_mid_train",), key_metric="heldout_accuracy",
          checkpoint="model", label="+ SFT",
          ablations=(("model_from_base", "base + SFT, no mid-training (LIMO/s1K ablation)"),)),
    Stage("05_rollout_dpo", "Rollout DPO", ("run", "problems.domains", "problems.levels", "problems.n_test", "problems.source", "eval.benchmarks", "model.dtype", "dpo", "verify"),
          deps=("02_tag_data", "04_sft"), key_metric="heldout_accuracy", checkpoint="model", label="+ rollout DPO"),
    Stage("06_rl", "RL with verifiable reward", ("run", "problems.domains", "problems.levels", "problems.n_test", "problems.source", "eval.benchmarks", "model.dtype", "rl", "verify"),
          deps=("02_tag_data", "04_sft"), optional_deps=("05_rollout_dpo",), key_metric="heldout_accuracy",
          checkpoint="model", label="+ RL"),
)
# Evaluation reads every checkpoint stage present in the run, so it is registered after them.
STAGES = STAGES + (
    Stage("07_eval", "Evaluation and report", ("run", "problems.domains", "problems.levels", "problems.n_test", "eval", "verify"),
          deps=("00_base_model",), key_metric="final_pass1",
          optional_deps=tuple(s.name for s in STAGES if s.checkpoint)),
)

BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    """A stage by full name or by its number/prefix (``"00"`` or ``"00_base"``)."""
    if name in BY_NAME:
        return BY_NAME[name]
    hits = [s for s in STAGES if s.name.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise KeyError(f"unknown stage '{name}'; stages: {', '.join(BY_NAME)}")
