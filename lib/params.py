"""Recipe parameters: layered YAML files validated against one typed schema.

A params file is a two-level mapping: ``section -> key -> value``. A file may start with
``extends: other.yaml`` (a path relative to it) and then holds only what differs from its
parent: ``params/base.yaml`` carries the values shared by every scale, ``tiny.yaml``,
``smoke.yaml`` and ``phi4-mini.yaml`` override it. Layers merge per key inside a section
(never deeper), so a file can never silently drop a sibling key.

Everything is validated before anything runs. An unknown key, a wrong type or an impossible
value stops the run with a message naming the key, the file that set it and what is
allowed. Each field below is the documentation of its parameter (``python -m lib.recipe
--describe`` prints them all).

Notebooks receive parameters flat, as ``<section>_<key>`` (e.g. ``model_hidden_size``),
because papermill's parameters are plain names and its ``-f`` files merge shallowly;
:func:`from_flat` rebuilds and re-validates the sections inside the notebook.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator



class ParamsError(ValueError):
    """A params file (or a notebook's parameters) is wrong; the message says where and how."""


class Section(BaseModel):
    # extra="forbid": a misspelled key is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True, validate_default=True)


# --------------------------------------------------------------------------- sections
class Run(Section):
    name: str = Field('base', pattern=r"^[A-Za-z0-9_.-]+$", description="Run name; artifacts go to <output_root>/<name>/.")
    seed: int = Field(0, ge=0, description="Master seed for data, initialisation and sampling.")
    device: Literal["auto", "cpu", "cuda"] = Field('auto', description="'auto' uses CUDA when available, else CPU.")
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 keeps torch's default (all cores).")
    sample_processes: int = Field(1, ge=1, description="On a CPU under Linux, split a sampling job's batches over this many forked processes of one torch thread each (the same batches and seeds, so the same samples where logits do not depend on the thread count: benchmarks/bench_threads.py). 1 samples in the stage's own process; ignored on GPU.")
    output_root: str = Field('outputs', description="Folder for runs, relative to the repo root unless absolute.")


class ProblemSource(Section):
    """One dataset of ``problems.sources`` (real scale: the paper mixes several public sets)."""
    dataset: str = Field(description="Hub id, or a local .jsonl/.json/.parquet/.csv file read through `datasets`.")
    config: str | None = Field(None, description="The dataset's configuration (hub 'name'), if it has several.")
    split: str = Field('train', description="Split to read.")
    field_map: dict[str, str] | None = Field(None, description="Our field -> this dataset's column (see problems.field_map).")
    cap: int | None = Field(None, ge=1, description="Most problems taken from this source (the first rows in "
                            "the dataset's order, after `where`); null takes all.")
    where: dict[str, str] | None = Field(None, description="Keep rows whose column equals the value, e.g. "
                                         "{domain: math} for OpenThoughts' math rows.")
    answer_from: Literal["field", "boxed"] = Field('field', description="'boxed': the mapped answer column is a "
        "worked solution and the reference answer is its last \\boxed{} (OpenThoughts' ground_truth_solution).")
    name: str | None = Field(None, description="Short name for counts and ids; default: the dataset's last path part.")


class Problems(Section):
    source: Literal["synthetic", "jsonl", "hub"] = Field('synthetic', 
        description="Where problems come from: the seeded synthetic generator (lib.problems), a local "
        "JSONL/Parquet file, or a Hugging Face hub dataset (real scale).")
    dataset: str | None = Field(None, description="Path or hub id when source is jsonl/hub; null for synthetic.")
    domains: list[str] = Field(['arithmetic', 'algebra', 'number_theory', 'counting_probability', 'geometry'], min_length=1, description="Synthetic domains to generate; any of lib.problems.DOMAINS.")
    levels: list[int] = Field([1, 2, 3, 4], min_length=1, description="Synthetic difficulty levels, 1 (elementary) to 4 (college); any of lib.problems.LEVELS.")
    n_train: int = Field(1500, ge=1, description="Training problems that get teacher rollouts (the pool every later stage draws on).")
    n_test: int = Field(200, ge=1, description="Held-out test problems (never overlap the training ones).")
    field_map: dict[str, str] | None = Field(None, 
        description="For jsonl/hub sources: our field -> the dataset's column, e.g. {problem: question, trace: "
        "generations} (a 'trace' column holds existing reasoning traces, used as they are); null for the defaults.")
    sources: list[dict] | None = Field(None, description="Several datasets for source hub/jsonl (the paper mixes "
        "OpenR1-Math, OpenThoughts, Bespoke-Stratos, ...): each a mapping of lib.params.ProblemSource keys "
        "(dataset, config, split, field_map, cap, where, answer_from, name), read in order and concatenated, "
        "repeated problem texts dropped; replaces dataset/field_map. n_train beyond what they hold is an error.")

    @field_validator("sources")
    @classmethod
    def _sources(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("sources must list at least one dataset (or be null)")
        out = []
        for i, src in enumerate(v):
            try:
                out.append(ProblemSource.model_validate(src).model_dump())
            except ValidationError as e:
                raise ValueError(f"sources[{i}]: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        names = [s["name"] or Path(s["dataset"].rstrip("/")).stem for s in out]  # as lib.problem_sources.source_name
        if len(set(names)) != len(names):
            raise ValueError(f"sources need distinct names (set 'name'); got {names}")
        return out

    @field_validator("domains")
    @classmethod
    def _domains(cls, v):
        from lib.problems import DOMAINS  # lazy: keeps `import lib.params` light

        bad = [d for d in v if d not in DOMAINS]
        if bad:
            raise ValueError(f"unknown domain(s) {bad}; allowed: {list(DOMAINS)}")
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        from lib.problems import LEVELS

        bad = [lv for lv in v if lv not in LEVELS]
        if bad:
            raise ValueError(f"unknown level(s) {bad}; allowed: {list(LEVELS)}")
        return v

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo):
        stage_only = (info.context or {}).get("stage_only")  # a stage that reads `source` but not the datasets
        if self.source != "synthetic" and not self.dataset and not self.sources and not stage_only:
            raise ValueError(f"source '{self.source}' needs 'dataset' (a path or hub id) or 'sources'")
        if self.sources and (self.dataset or self.field_map):
            raise ValueError("give either sources (each with its dataset and field_map) or dataset/field_map, not both")
        if self.sources and self.source == "synthetic":
            raise ValueError("sources are datasets: set source to 'hub' (or 'jsonl' for local files)")
        return self


class Teacher(Section):
    kind: Literal["embedded", "local", "endpoint"] = Field('embedded', 
        description="'embedded': the programmatic teacher for synthetic problems (lib.teachers.EmbeddedTeacher); "
        "'local': a transformers checkpoint; 'endpoint': an OpenAI-compatible server (vLLM/SGLang serving DeepSeek-R1).")
    n_rollouts: int = Field(8, ge=1, description="Rollouts per problem (paper: about 8).")
    top_up: bool = Field(True, description="A problem whose dataset carries fewer than n_rollouts traces "
                         "(OpenR1-Math: 2-4) gets the rest from the teacher; false keeps only the set's traces.")
    error_rate: dict[int, float] = Field({1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4}, description="Embedded teacher: chance of a plausible slip per level (harder levels err more).")
    verbosity: Literal["compact", "normal", "long"] = Field('normal', description="Embedded teacher: how much prose around the steps (every token costs CPU time).")
    repeat_rate: float = Field(0.02, ge=0, le=1, description="Embedded teacher: share of looping traces (gives the repetition tagger something to find).")
    checkpoint: str | None = Field(None, description="Local teacher: checkpoint path or hub id.")
    base_url: str | None = Field(None, description="Endpoint teacher: server URL, e.g. http://localhost:8000/v1.")
    model: str | None = Field(None, description="Endpoint teacher: served model name, e.g. deepseek-ai/DeepSeek-R1.")
    api_key_env: str = Field('OPENAI_API_KEY', description="Endpoint teacher: environment variable holding the API key (never put keys in params).")
    max_concurrency: int = Field(8, ge=1, description="Endpoint teacher: requests in flight at once.")
    timeout_s: float = Field(600, gt=0, description="Endpoint teacher: seconds per request before it is retried.")
    max_retries: int = Field(4, ge=0, description="Endpoint teacher: retries per request, with exponential backoff.")
    temperature: float = Field(0.6, ge=0, description="Local/endpoint teacher sampling temperature (paper: 0.6).")
    top_p: float = Field(0.95, gt=0, le=1, description="Local/endpoint teacher nucleus mass.")
    max_tokens: int = Field(32768, ge=1, description="Local/endpoint teacher: longest rollout in tokens.")
    shard_size: int = Field(256, ge=1, description="Problems per Parquet shard (a killed run resumes at shard granularity).")

    @field_validator("error_rate")
    @classmethod
    def _rates(cls, v):
        bad = {k: r for k, r in v.items() if not 0 <= r <= 1}
        if bad:
            raise ValueError(f"error rates must be in [0, 1], got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "local" and not self.checkpoint:
            raise ValueError("kind 'local' needs 'checkpoint' (a path or hub id)")
        if self.kind == "endpoint" and not (self.base_url and self.model):
            raise ValueError("kind 'endpoint' needs 'base_url' and 'model'")
        return self


class Tagging(Section):
    tagger: Literal["rule", "llm"] = Field('rule', 
        description="'rule': RuleTagger (synthetic problems, scored against the generator); 'llm': LLMTagger through the teacher.")
    decontaminate_against: list[str] = Field(['synthetic'], 
        description="Evaluation sets whose problems are removed from training (n-gram overlap); must cover eval.benchmarks.")
    ngram: int = Field(13, ge=1, description="n of the word n-grams compared (13 is the common choice for real text).")
    threshold: float = Field(0.0, ge=0, le=1, description="Share of a problem's n-grams found in a real eval set that marks it contaminated (0: any shared n-gram).")
    max_failure_share: float = Field(0.1, ge=0, le=1, description="LLM tagger: more than this share of problems with no answer from the server (after retries) stops the stage with TaggerOutageError instead of writing empty tags.")
    synthetic_threshold: float = Field(1.0, ge=0, le=1, description="Same for the synthetic test set, whose problems share templates: 1.0 removes exact copies only.")


class Subsets(Section):
    midtrain_max_per_problem: int | None = Field(None, ge=1, description="Mid-training: at most this many correct rollouts per problem; null for all.")
    sft_n_problems: int = Field(400, ge=1, description="SFT: problems in the compact high-quality subset.")
    sft_per_problem: int = Field(1, ge=1, description="SFT: distinct correct rollouts per problem.")
    sft_balance: Literal["difficulty", "domain", "none"] = Field('difficulty', description="SFT: balance the subset over this tag.")
    rl_n_problems: int | None = Field(400, ge=1, description="RL prompt pool size (problems not used for SFT first); null for all.")
    allow_empty: list[str] = Field(
        default_factory=list, description="Subsets that may come out empty without stopping stage 02 (e.g. "
        "[dpo_source] with a teacher that never errs); any other empty subset is an error naming the filter "
        "that emptied it.")

    @field_validator("allow_empty")
    @classmethod
    def _subset_names(cls, v: list[str]) -> list[str]:
        unknown = [x for x in v if x not in ("midtrain", "sft", "dpo_source", "rl_pool")]
        if unknown:
            raise ValueError(f"unknown subset(s) {unknown}; subsets are midtrain, sft, dpo_source, rl_pool")
        return v


class Model(Section):
    init: str = Field('scratch', description="'scratch' trains a tokenizer and a tiny transformer (the embedded "
                      "default); otherwise a hub id or local path of a causal LM to start from.")
    architecture: Literal["llama", "qwen2"] = Field('llama', description="transformers architecture for 'scratch'.")
    hidden_size: int = Field(128, ge=8, description="Width of the scratch model.")
    num_layers: int = Field(4, ge=1, description="Decoder layers of the scratch model.")
    num_heads: int = Field(4, ge=1, description="Attention heads (must divide hidden_size).")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads for grouped-query attention (divides num_heads).")
    intermediate_size: int = Field(512, ge=8, description="MLP width of the scratch model.")
    max_position_embeddings: int = Field(1024, ge=64, description="Longest sequence the scratch model supports.")
    vocab_size: int = Field(1024, ge=64, description="Target vocabulary of the tokenizer trained from scratch (number tokens included).")
    number_tokens: int = Field(0, ge=0, description="Scratch tokenizer: every integer 0..N is one token (with and without a leading space), longer digit runs are cut in groups of three as in o200k; 0 means one token per digit (LOG.md, whole-number tokens).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field('auto', 
        description="Training precision of every stage (bf16 means autocast; weights stay fp32): 'auto' is bf16 on CUDA and float32 on CPU. 'bfloat16' on a CPU with native bf16 (avx512_bf16/AMX) trains tiny 1.7x faster but scored lower (LOG.md); without native bf16 it is ~3x slower.")

    @model_validator(mode="after")
    def _check(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
        return self


class Train(Section):
    """Optimisation settings shared by every training stage (one class, not copies per stage)."""
    lr: float = Field(0.002, gt=0, le=1, description="Peak learning rate (reached after the warmup).")
    lr_scheduler: Literal["cosine", "constant_with_warmup", "linear"] = Field('cosine', 
        description="After the warmup: cosine or linear decay to zero over the stage, or constant (a stage that a "
        "later stage continues at the same rate and anneals, as warmup-stable-decay pipelines do).")
    epochs: float = Field(1, gt=0, description="Passes over the stage's data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps; -1 means: use epochs.")
    batch_size: int = Field(64, ge=1, description="Sequences per device per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step (the paper's batch of 128 is batch_size x grad_accum x devices); derived when global_batch_size is set.")
    global_batch_size: int | None = Field(None, ge=1, description="Sequences per optimizer step over all processes (the paper: 128); grad_accum is then derived from the processes and batch_size, which must divide it. null: batch_size x grad_accum x processes.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    max_length: int = Field(512, ge=16, description="Longest training sequence in tokens (longer ones are truncated and counted).")
    checkpoint_every: int = Field(50, ge=0, description="Save a resumable checkpoint every this many optimizer steps; 0 for none.")
    accelerate_config: str | None = Field(None, 
        description="null trains in the notebook's process; a path such as configs/accelerate_zero3_8gpu.yaml "
        "runs the same training under accelerate launch (python -m lib.launch), on several processes/GPUs.")
    eval_problems: int = Field(200, ge=1, description="Held-out test problems for the stage's own measurement "
                               "(greedy accuracy and EOS rate; RL: the problems tracked with pass@1 and cons@k).")
    use_unsloth: bool = Field(False, description="Load the model through unsloth when it is installed and a GPU is present; skipped otherwise.")
    activation_checkpointing: bool = Field(False, description="Recompute each layer's activations in the backward "
        "pass instead of keeping them: memory for ~30% more compute. On for the paper's 16K-32K sequences on GPU; "
        "off for the tiny model, which does not lack memory.")
    compile: bool = Field(False, description="torch.compile the model for training (the Trainer's torch_compile: "
        "inductor, on CPU and GPU); the same steps, rounded differently. The first step pays the compilation "
        "(~13 s for tiny's mid-training on a quiet 2-core CPU, more for small padded batches of changing shape). "
        "Off for tiny: its steady mid-training step was 1.02-1.22x faster, but mid-training's checkpoint is chaotic "
        "in rounding, so turning it on redraws the table (benchmarks/README.md).")


class BasePretrain(Train):
    n_problems: int = Field(6000, ge=1, description="Problems with direct answers (no reasoning) used to pretrain the scratch base.")


class MidTrain(Train):
    packing: bool = Field(True, description="Pack several examples per sequence (block-diagonal attention, lib/packing.py).")
    keep_eos: bool = Field(True, 
        description="Keep each packed example's closing EOS token, and so its loss (the recipe, as TRL's packing). false "
        "drops it, as packing pipelines that join raw texts do: an ablation in which mid-training never shows where "
        "an answer ends, so SFT (unpacked) has to teach the stop - the paper's reason for SFT without packing.")


class SFT(Train):
    init_from: Literal["mid_train", "base"] = Field('mid_train', 
        description="Start from the mid-trained model (the recipe) or straight from the base (the paper's "
        "LIMO/s1K ablation: SFT on a small set without mid-training).")
    ablation_from_base: bool = Field(True, 
        description="Also train the same SFT straight from the base (no mid-training), saved as model_from_base "
        "and evaluated by 07 as the paper's LIMO/s1K negative result.")


class DPO(Train):
    source: Literal["teacher", "on_policy", "both"] = Field('teacher', 
        description="Where pairs come from: the teacher's rollouts (the paper: the rejected ones stages 1-2 "
        "discarded), fresh samples of the SFT model, or both.")
    beta: float = Field(0.1, gt=0, description="DPO temperature: how far the policy may move from the SFT reference (default 0.1).")
    pairs_per_problem: int = Field(2, ge=1, description="Distinct (correct, incorrect) pairs per problem.")
    length_match: bool = Field(True, description="Pair each correct rollout with the incorrect one closest in length (so DPO learns correctness, not length).")
    balance_difficulty: bool = Field(False, description="Down-sample pairs to the same count per difficulty tag.")
    on_policy_samples: int = Field(4, ge=1, description="Samples per problem from the SFT model for the on-policy source.")
    on_policy_temperature: float = Field(1.0, gt=0, description="Sampling temperature of the on-policy rollouts.")
    on_policy_problems: int | None = Field(None, 
        ge=1, description="Sample only this many problems of the DPO source (a seeded draw) for on-policy pairs; "
        "null samples every problem.")
    heldout_share: float = Field(0.1, ge=0, lt=1, description="Share of problems whose pairs are held out to measure preference accuracy.")
    verified_chosen: bool = Field(False, description="Drop the pairs whose chosen answer writes a false arithmetic "
                                  "statement (a right answer by a lucky guess; lib.problems.arithmetic_slips).")
    nll_weight: float = Field(0.0, ge=0, description="Above 0: add the chosen answer's NLL to the DPO loss with this "
                              "weight (iterative RPO; TRL loss_type [sigmoid, sft]). Under several processes TRL takes it as a token mean "
                              "per process, which differs from one process (tests/test_distributed.py).")


RL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo")


class RL(Train):
    """Stage 4: GRPO with a +1/-1 verifiable reward and the paper's three stability tricks.

    ``max_length`` is the completion budget (GRPO's max_completion_length) and ``batch_size``
    counts completions per micro-batch (a multiple of ``num_generations``)."""
    init_from: Literal["dpo", "sft"] = Field('dpo', description="Start from the rollout-DPO model (the recipe) or the SFT model.")
    num_generations: int = Field(8, ge=2, description="Group size G: completions sampled per prompt (Phi-4-reasoning: 8).")
    loss_type: Literal[RL_LOSS_TYPES] = Field('grpo',   # type: ignore[valid-type]
        description="TRL GRPO loss: grpo, dr_grpo, dapo (DAPO's token-level loss), bnpo, cispo or sapo.")
    beta: float = Field(0.001, ge=0, description="KL coefficient against the starting model (0 means no reference model).")
    scale_rewards: Literal["group", "batch", "none"] = Field('group', 
        description="Advantage scaling: divide by the group's reward std, the batch's, or not at all.")
    unverifiable_reward: float = Field(-1.0, 
        description="Reward of an answer the checker cannot decide (no boxed answer, parse failure, timeout); counted.")
    prompt_optimization: bool = Field(True, 
        description="Trick 1: keep only prompts whose sampled response lengths are relatively uniform.")
    probe_samples: int = Field(8, ge=2, description="Samples per candidate prompt from the starting model (for tricks 1 and 2).")
    probe_temperature: float = Field(1.0, gt=0, description="Sampling temperature of the probe samples.")
    max_length_cv: float = Field(0.5, gt=0, description="Trick 1: keep a prompt when std/mean of its response lengths is at most this.")
    rebalance: bool = Field(True, 
        description="Trick 2: pass-rate filter and hard-problem oversampling of prompts, and balanced groups in "
        "training (all correct completions + as many random incorrect ones; all-equal groups give no gradient).")
    max_pass_rate: float = Field(0.5, ge=0, le=1, description="Trick 2: drop prompts whose probe pass rate is above this (paper: 0.5).")
    drop_unsolved: bool = Field(True, description="Trick 2: also drop prompts with no correct probe sample.")
    hard_below: float = Field(0.25, ge=0, le=1, description="Trick 2: a prompt with a probe pass rate below this counts as hard.")
    oversample_hard: int = Field(2, ge=1, description="Trick 2: hard prompts appear this many times in the RL prompt set.")
    temperature_annealing: bool = Field(True, 
        description="Trick 3: anneal the sampling (and log-probability) temperature from start to end.")
    temperature_start: float = Field(1.0, gt=0, description="Sampling temperature at step 0 (paper: 1.0); plain GRPO keeps it.")
    temperature_end: float = Field(0.6, gt=0, description="Temperature after annealing (paper: 0.6).")
    anneal_fraction: float = Field(0.5, ge=0, le=1, description="Share of the steps over which the temperature falls linearly (paper: 0.5).")
    compare_plain: bool = Field(True, description="Also run plain GRPO (no tricks, constant start temperature) with the same seed and budget.")
    arms_side_by_side: bool = Field(False, description="On a CPU, train the arms (tricks, plain) at once, each a "
        "`python -m lib.launch` process with its share of the torch threads, instead of one after the other in the "
        "notebook's process (benchmarks/bench_threads.py: two 1-thread processes sample 1.4x faster than one of "
        "2 threads). Ignored on a GPU and with accelerate_config: the arms then run one after the other.")
    eval_set: str = Field('synthetic', description="Set tracked during RL, as in eval.benchmarks: 'synthetic', a preset (the paper: aime24) or a .jsonl path.")
    eval_temperature: float = Field(0.6, gt=0, description="Sampling temperature of the tracked samples (paper's evaluation: 0.6).")
    eval_top_p: float = Field(0.95, gt=0, le=1, description="Nucleus mass of the tracked samples (paper's evaluation: 0.95).")
    eval_every: int = Field(10, ge=1, description="Track held-out pass@1 and cons@k every this many steps.")
    eval_samples: int = Field(16, ge=1, description="Samples per tracked problem: cons@k with k equal to this (paper: 16).")
    use_vllm: bool = Field(False, description="Generate rollouts with vLLM (colocated) when installed and a GPU is present.")
    prompt_source: Literal["pool", "stream"] = Field('pool',
        description="'pool': the tagged RL pool (02_tag_data), probed and filtered by the tricks; 'stream' "
        "(synthetic problems only): fresh generator problems, each used once, from the domain x level cells "
        "whose dev pass rate is within [stream_low, stream_high] (lib.curriculum).")
    reward: Literal["answer", "verified"] = Field('answer',
        description="'answer': +1 when the final answer verifies (the paper); 'verified': also every arithmetic "
        "statement of the completion must be true (lib.problems.arithmetic_slips), else -1.")
    dev_problems: int = Field(400, ge=20, description="prompt_source 'stream': dev problems (generator, training "
                              "split, a seed of their own; never the test split) sampled to find the cells.")
    dev_samples: int = Field(4, ge=1, description="prompt_source 'stream': samples per dev problem, at eval_temperature and eval_top_p.")
    stream_low: float = Field(0.2, ge=0, le=1, description="prompt_source 'stream': lowest dev pass rate of a cell drawn from.")
    stream_high: float = Field(0.8, ge=0, le=1, description="prompt_source 'stream': highest dev pass rate of a cell drawn from.")

    @model_validator(mode="after")
    def _check(self):
        if self.stream_low > self.stream_high:
            raise ValueError(f"stream_low={self.stream_low} is above stream_high={self.stream_high}")
        if self.prompt_source == "stream" and self.max_steps <= 0:
            raise ValueError("prompt_source 'stream' draws max_steps x prompts-per-step fresh problems: set "
                             "max_steps > 0")
        if self.batch_size % self.num_generations:
            raise ValueError(f"batch_size={self.batch_size} must be a multiple of num_generations="
                             f"{self.num_generations} (it counts completions, whole groups per micro-batch)")
        return self


class Eval(Section):
    benchmarks: list[str] = Field(['synthetic'], min_length=1, description="Evaluation sets: 'synthetic' (held-out generator "
                                  "problems), a preset of lib.eval_sets.PRESETS (hub, e.g. math500), or a .jsonl path "
                                  "with id, problem, answer.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many problems of each non-synthetic set; null for all.")
    n_runs: int = Field(3, ge=1, description="Independent sampling runs averaged for pass@1 (paper: 3).")
    n_samples: int = Field(8, ge=1, description="Samples per problem (at least n_runs): pass@k and cons@k for every k up to it.")
    temperature: float = Field(0.6, ge=0, description="Sampling temperature (paper: 0.6; 0 means greedy).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass (paper: 0.95).")
    max_new_tokens: int = Field(384, ge=1, description="Generation budget per answer (paper: 32K).")
    batch_size: int = Field(64, ge=1, description="Prompts generated together.")
    use_vllm: bool = Field(False, description="Generate with vLLM when it is installed and a GPU is present (real scale).")

    @model_validator(mode="after")
    def _check(self):
        if self.n_samples < self.n_runs:
            raise ValueError(f"n_samples={self.n_samples} must be at least n_runs={self.n_runs}")
        return self


class Verify(Section):
    workers: int = Field(2, ge=0, description="Checker worker processes (0 checks in-process; math-verify's "
                         "timeouts need processes, not threads).")
    timeout_s: float = Field(5.0, gt=0, description="Deadline per answer check in seconds (hung checks are killed).")
    second_opinion: Literal["rule", "llm", "none"] = Field('rule', 
        description="Re-check answers math-verify rejects: 'rule' (offline normaliser, recovers e.g. '2,125' vs 2125), "
        "'llm' (an LLM judge at judge_base_url, as the paper's GPT-4o-mini) or 'none'.")
    extract: Literal["strict", "lenient"] = Field(
        "strict", description="Answer extraction policy (lib.answers) where stages grade: 'strict' (the trained format, the last "
        "\\boxed{} after </think>; a model is paid only for the format it was taught) or 'lenient' (outputs from anywhere).")
    judge_base_url: str | None = Field(None, description="LLM judge (second_opinion 'llm'): URL of an OpenAI-compatible "
                                       "server, e.g. http://localhost:8001/v1; its own keys, so no stage needs the teacher's.")
    judge_model: str | None = Field(None, description="LLM judge: served model name (the paper: GPT-4o-mini).")
    judge_api_key_env: str = Field("OPENAI_API_KEY", description="LLM judge: environment variable holding the API key.")
    judge_max_concurrency: int = Field(8, ge=1, description="LLM judge: requests in flight at once.")
    judge_timeout_s: float = Field(60.0, gt=0, description="LLM judge: seconds per request before it is retried.")
    judge_max_retries: int = Field(4, ge=0, description="LLM judge: retries per request, with exponential backoff.")
    judge_max_tokens: int = Field(1024, ge=1, description="LLM judge: longest reply in tokens (its verdict comes first; "
                                  "a reasoning judge needs more).")
    judge_max_failure_share: float = Field(0.1, ge=0, le=1, description="LLM judge: a batch in which more than this share of judge calls fail (after retries) stops the stage with JudgeOutageError; the work written so far is kept.")

    @model_validator(mode="after")
    def _check(self):
        if self.second_opinion == "llm" and not (self.judge_base_url and self.judge_model):
            raise ValueError("second_opinion 'llm' needs 'judge_base_url' and 'judge_model' (an OpenAI-compatible judge)")
        return self


class Serve(Section):
    """A local OpenAI-compatible server the runner starts for the run (the rehearsal of the real-scale path)."""
    checkpoint: str | None = Field(None, description="A local checkpoint folder that `python -m lib.recipe` hosts with "
        "`transformers serve` on loopback (lib.serving) while the stages run, stopped at the end; teacher, judge and "
        "tagger then name it in their base_url/model. null: the endpoints are servers you start (vLLM, SGLang).")
    name: str = Field("served_model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="The model name requests send (the server refuses any other): teacher.model and verify.judge_model.")
    port: int = Field(8123, ge=1, le=65535, description="Loopback port: the endpoints' base_url is http://127.0.0.1:<port>/v1.")
    startup_timeout_s: float = Field(180, gt=0, description="Seconds for the server to answer its health check before the run stops.")


SECTIONS: dict[str, type[Section]] = {
    "run": Run,
    "problems": Problems,
    "model": Model,
    "base_pretrain": BasePretrain,
    "mid_train": MidTrain,
    "sft": SFT,
    "dpo": DPO,
    "rl": RL,
    "eval": Eval,
    "verify": Verify,
    "teacher": Teacher,
    "tagging": Tagging,
    "subsets": Subsets,
    "serve": Serve,
}


class Params(BaseModel):
    """The whole validated parameter set (one attribute per section)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    run: Run = Field(default_factory=Run)
    problems: Problems = Field(default_factory=Problems)
    model: Model = Field(default_factory=Model)
    base_pretrain: BasePretrain = Field(default_factory=BasePretrain)
    mid_train: MidTrain = Field(default_factory=MidTrain)
    sft: SFT = Field(default_factory=SFT)
    dpo: DPO = Field(default_factory=DPO)
    rl: RL = Field(default_factory=RL)
    eval: Eval = Field(default_factory=Eval)
    verify: Verify = Field(default_factory=Verify)
    teacher: Teacher = Field(default_factory=Teacher)
    tagging: Tagging = Field(default_factory=Tagging)
    subsets: Subsets = Field(default_factory=Subsets)
    serve: Serve = Field(default_factory=Serve)

    @model_validator(mode="after")
    def _decontaminated(self, info: ValidationInfo):
        if (info.context or {}).get("stage_only"):  # a notebook holds its own sections only; the runner checked the rest
            return self
        for key, sets in (("eval.benchmarks", self.eval.benchmarks), ("rl.eval_set", [self.rl.eval_set])):
            missing = [b for b in sets if b not in self.tagging.decontaminate_against]
            if missing:
                raise ValueError(f"{key} {missing} not in tagging.decontaminate_against: training data must be "
                                 "decontaminated against every evaluation set in use; add them there")
        if self.serve.checkpoint:
            self._check_served_endpoints()
        if self.rl.prompt_source == "stream" and self.problems.source != "synthetic":
            raise ValueError(f"rl.prompt_source 'stream' draws fresh problems from the synthetic generator, but "
                             f"problems.source is {self.problems.source!r}: use rl.prompt_source 'pool'")
        return self

    def _check_served_endpoints(self) -> None:
        """With ``serve.checkpoint`` set, every endpoint in use must be that server, by URL and model name."""
        url = f"http://127.0.0.1:{self.serve.port}/v1"
        using = []
        if self.teacher.kind == "endpoint":
            using.append(("teacher.base_url/teacher.model", self.teacher.base_url, self.teacher.model))
        if self.verify.second_opinion == "llm":
            using.append(("verify.judge_base_url/verify.judge_model", self.verify.judge_base_url, self.verify.judge_model))
        for who, base, model in using:
            if base.rstrip("/") not in (url, url.replace("127.0.0.1", "localhost")) or model != self.serve.name:
                raise ValueError(f"serve.checkpoint is set, so the run hosts its own server at {url} as model "
                                 f"{self.serve.name!r}, but {who} is {base} / {model!r}: set {who} to those, or "
                                 "serve.checkpoint to null to use a server of your own")

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name).model_dump()

    def subset(self, reads: list[str] | tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
        """The values a stage reads: ``reads`` names whole sections (``"verify"``) or single keys
        (``"model.dtype"``); None means everything."""
        out: dict[str, dict[str, Any]] = {}
        for section, key in keys_of(reads or tuple(SECTIONS)):
            out.setdefault(section, {})[key] = getattr(getattr(self, section), key)
        return out

    def hash(self, reads: list[str] | tuple[str, ...] | None = None) -> str:
        return params_hash(self.subset(reads))


def params_hash(obj: Any) -> str:
    """A short stable hash of JSON-able parameters (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading
def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The chain of files from the root ``extends`` ancestor down to ``path``."""
    path = path.resolve()
    if path in seen:
        raise ParamsError(f"{path}: 'extends' makes a cycle: {' -> '.join(str(p) for p in seen + (path,))}")
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: must be a mapping of sections, got {type(data).__name__}")
    parent = data.pop("extends", None)
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ParamsError(f"{path}: section '{section}' must be a mapping of key: value, "
                              f"got {type(body).__name__} ({body!r})")
    chain = _read_layers(path.parent / parent, seen + (path,)) if parent else []
    return chain + [(path, data)]


def _merge(layers: list[tuple[Path, dict]]) -> tuple[dict, dict]:
    """Merge per key inside each section; remember which file set each key."""
    merged: dict[str, dict] = {}
    origin: dict[tuple[str, str], Path] = {}
    for path, data in layers:
        for section, body in data.items():
            merged.setdefault(section, {}).update(body)
            for key in body:
                origin[(section, key)] = path
            origin.setdefault((section, ""), path)
    return merged, origin


def _rel(path: Path | None) -> str:
    if path is None:
        return "<parameters>"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _explain(err: ValidationError, origin: dict, chain: str) -> list[str]:
    lines = []
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        section = loc[0] if loc else ""
        key = loc[1] if len(loc) > 1 else ""
        where = _rel(origin.get((section, key)) or origin.get((section, "")))
        model = SECTIONS.get(section)
        if e["type"] == "extra_forbidden" and len(loc) == 1:
            hint = difflib.get_close_matches(section, SECTIONS, n=1)
            lines.append(f"{where}: unknown section '{section}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f". Allowed sections: {', '.join(SECTIONS)}.")
        elif e["type"] == "extra_forbidden" and model:
            hint = difflib.get_close_matches(key, model.model_fields, n=1)
            lines.append(f"{where}: unknown key '{section}.{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                         + f". Allowed keys in '{section}': {', '.join(model.model_fields)}.")
        elif e["type"] == "missing":
            name = f"{section}.{key}" if key else section
            doc = model.model_fields[key].description if model and key in model.model_fields else ""
            lines.append(f"missing '{name}' (set it in one of: {chain}){': ' + doc if doc else ''}.")
        elif not loc:  # a rule across sections: its reason first, then the keys it names and their files
            reason = e["msg"].removeprefix("Value error, ")
            named = sorted({(sec, k) for sec, k in re.findall(r"\b([a-z_]+)\.([a-z_]+)\b", reason)
                            if sec in SECTIONS and k in SECTIONS[sec].model_fields})
            where_set = ", ".join(f"{sec}.{k} ({_rel(origin[(sec, k)]) if (sec, k) in origin else 'default'})"
                                  for sec, k in named)
            lines.append(f"{reason}." + (f" Keys involved: {where_set}." if where_set else ""))
        elif len(loc) == 1:  # a rule across several keys of one section
            files = sorted({_rel(f) for (sec, k), f in origin.items() if sec == section and k}) or [where]
            lines.append(f"section '{section}' (set in {', '.join(files)}): {e['msg'].removeprefix('Value error, ')}.")
        else:
            name = ".".join(loc)
            doc = model.model_fields[key].description if model and key in model.model_fields else ""
            value = e.get("input")
            lines.append(f"{where}: '{name}' = {value!r} is not allowed: {e['msg']}" + (f". It is: {doc}" if doc else "."))
    return lines


def validate(merged: dict, origin: dict | None = None, chain: str = "<parameters>", stage_only: bool = False) -> Params:
    """Validate a merged ``section -> key -> value`` mapping; raise ParamsError listing every problem.

    ``stage_only`` skips the rules across sections (a notebook receives only what its stage reads)."""
    try:
        return Params.model_validate(merged, context={"stage_only": stage_only})
    except ValidationError as e:
        raise ParamsError("invalid parameters:\n  - " + "\n  - ".join(_explain(e, origin or {}, chain))) from None


def load(path: str | Path, overrides: list[str] | None = None) -> Params:
    """Load a params file with its ``extends`` chain, apply ``section.key=value`` overrides, validate."""
    layers = _read_layers(Path(path))
    merged, origin = _merge(layers)
    for item in overrides or []:
        name, sep, raw = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot:
            raise ParamsError(f"override '{item}' must look like section.key=value (e.g. run.seed=1)")
        merged.setdefault(section, {})[key] = yaml.safe_load(raw)
        origin[(section, key)] = Path(f"--set {name}")
    chain = " <- ".join(_rel(p) for p, _ in reversed(layers))
    return validate(merged, origin, chain)


# --------------------------------------------------------------------------- notebooks
def keys_of(reads: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``(section, key)`` pairs named by a stage's ``reads``: whole sections or ``section.key`` entries."""
    out = []
    for entry in reads:
        section, _, key = entry.partition(".")
        if section not in SECTIONS:
            raise KeyError(f"unknown params section {section!r} in {entry!r}; sections: {', '.join(SECTIONS)}")
        fields = SECTIONS[section].model_fields
        if key and key not in fields:
            raise KeyError(f"unknown params key {entry!r}; keys of {section!r}: {', '.join(fields)}")
        out += [(section, key)] if key else [(section, k) for k in fields]
    return out


def flat_names(reads: list[str] | tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """``{"model_hidden_size": ("model", "hidden_size"), ...}`` for what a stage reads."""
    out = {}
    for s, k in keys_of(reads):
        flat = f"{s}_{k}"
        if flat in out:
            raise AssertionError(f"flat parameter name collision: {flat}")
        out[flat] = (s, k)
    return out


def to_flat(params: Params, reads: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """The notebook parameters of a stage that reads ``reads``."""
    return {flat: params.section(s)[k] for flat, (s, k) in flat_names(reads).items()}


def from_flat(namespace: dict[str, Any], reads: list[str] | tuple[str, ...]) -> Params:
    """Rebuild and validate what the stage reads from a notebook's flat parameters.

    Everything the stage does not read keeps its schema default, so the object is complete but
    carries no other file's values; the rules across sections were checked by the runner when it
    loaded the params file (a notebook holds only its own keys).
    """
    missing = [flat for flat in flat_names(reads) if flat not in namespace]
    if missing:
        raise ParamsError(f"notebook parameters missing: {missing}; the parameters cell must define them")
    merged: dict[str, dict] = {}
    for flat, (s, k) in flat_names(reads).items():
        merged.setdefault(s, {})[k] = namespace[flat]
    return validate(merged, chain="the notebook's parameters cell", stage_only=True)


def describe() -> str:
    """Every parameter with its type and documentation, grouped by section."""
    lines = []
    for name, model in SECTIONS.items():
        lines.append(f"{name}:")
        for key, f in model.model_fields.items():
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
            lines.append(f"  {key:<24} {ann:<28} {f.description}")
    return "\n".join(lines)


def _type_name(annotation) -> str:
    """A type as papermill's parameter parser reads it (no ``|``): ``int``, ``list[str]``, ``Optional[str]``."""
    args = getattr(annotation, "__args__", None)
    if args is None:
        return annotation.__name__
    text = str(annotation).replace("typing.", "")
    if text.startswith("Literal["):
        return "str"
    if type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        return f"Optional[{_type_name(inner)}]"
    return text


def _short_help(description: str, width: int = 72) -> str:
    first = description.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


def parameters_cell(reads: list[str] | tuple[str, ...], values: Params) -> str:
    """The source of a stage notebook's ``parameters`` cell: ``name: type = value  # short help``
    for each key the stage reads.

    Defaults are the embedded default's (``params/tiny.yaml``) so the notebook runs as is in
    JupyterLab; the runner injects the chosen params file's values below it. Generated by
    ``python -m lib.recipe --sync-notebooks`` and checked by the tests, so it cannot drift.
    """
    lines = ["# Parameters (defaults: params/tiny.yaml). `python -m lib.recipe PARAMS.yaml` injects the file's",
             "# values below; every key's full documentation: `python -m lib.recipe --describe`.",
             "from typing import Optional  # noqa: F401  (the annotations below are evaluated)"]
    section = None
    for s, key in keys_of(reads):
        if s != section:
            lines.append(f"\n# --- {s}")
            section = s
        f = SECTIONS[s].model_fields[key]
        lines.append(f"{s}_{key}: {_type_name(f.annotation)} = {values.section(s)[key]!r}  # {_short_help(f.description)}")
    return "\n".join(lines)
