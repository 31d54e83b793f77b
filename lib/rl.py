"""Stage 4: RL with a verifiable reward, TRL's GRPO plus the paper's three stability tricks.

The paper's stage 4 (Xu et al. 2025, arXiv 2504.21233): reward +1 when the final answer verifies, -1 otherwise. Plain GRPO on a small
distilled model suffered from uneven response lengths within a group, vanishing gradients when
every reward in a group is equal, and a gap between training and evaluation temperature. The
fixes, each a function or class here with its own tests:

1. **Prompt optimisation** (:func:`probe`, :func:`select_prompts`): sample each candidate prompt
   ``k`` times with the starting model; keep the prompts whose response lengths are relatively
   uniform (coefficient of variation std/mean at most a threshold).
2. **Reward rebalancing** (:func:`select_prompts`, :func:`balance_mask`): drop prompts whose
   probe pass rate is above a threshold (paper: 50%), optionally those never solved, and repeat
   hard ones; during training keep, in each group, every correct completion and as many randomly
   chosen incorrect ones. Groups left with one reward value (all correct or all wrong) give no
   gradient and do not count in the loss normaliser: TRL does neither (docs/stack_notes.md), so
   :class:`RecipeGRPOTrainer` removes their rows before TRL computes the loss.
3. **Temperature annealing** (:func:`annealed_temperature`, :meth:`RecipeGRPOTrainer.set_temperature`):
   1.0 -> 0.6 linearly over the first half of the steps, then constant. The value reaches both
   the sampler and the temperature TRL divides logits by when it computes log-probabilities
   (fixed into the model's patched forward when the trainer is built, docs/stack_notes.md).

Generation goes through the shared sampler's token-level core (:func:`lib.sampling.generate_ids`)
unless TRL's vLLM path is on (``use_vllm`` with vLLM installed and a GPU).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from lib import chat, evaluation, metrics, problems, progress, sampling
from lib.training import last_checkpoint, match_compile_state, train_guarded, trainer_kwargs

# TRL losses whose normaliser counts the micro-batch's rows: grpo, sapo and luspo take a mean over rows,
# dr_grpo divides by rows x max completion length (TRL's GRPOTrainer._compute_loss)
ROW_NORMALISED_LOSSES = ("grpo", "sapo", "dr_grpo", "luspo")


class NoPromptsError(ValueError):
    """No RL prompt survived selection; the message says which filter removed them."""


# ============================================================================ reward
class VerifiableReward:
    """+1 when the final answer verifies against the reference, -1 otherwise (TRL reward function).

    Every call also counts the **lucky** right answers, those written with a false arithmetic
    statement (:func:`lib.problems.arithmetic_slips`), in :attr:`counts` and per call in
    :attr:`calls`; ``check_work=True`` (``rl.reward: verified``) scores them as wrong.

    Answers the checker cannot decide (no ``\\boxed{}``, unparsable, timed out) get
    ``unverifiable`` (a params choice, default -1) and are counted in :attr:`counts`.
    TRL calls it with the dataset's other columns as keyword lists; the reference answer is
    the ``answer`` column.
    """

    __name__ = "verifiable"  # TRL logs rewards under the function's name

    def __init__(self, verifier, correct: float = 1.0, wrong: float = -1.0, unverifiable: float = -1.0,
                 check_work: bool = False):
        self.verifier = verifier
        self.values = {True: correct, False: wrong, None: unverifiable}
        self.check_work = check_work
        self.counts: Counter = Counter()
        self.calls: list[dict] = []  # per call (one per generation batch): rollouts, correct, lucky

    @staticmethod
    def text_of(completion) -> str:
        """A completion as TRL passes it: a string, or a conversation whose last turn is the answer."""
        if isinstance(completion, str):
            return completion
        return completion[-1]["content"]

    def __call__(self, prompts=None, completions=None, answer=None, **kwargs) -> list[float]:
        if answer is None:
            raise ValueError("the RL dataset needs an 'answer' column with each prompt's reference answer")
        checks = self.verifier.check_many([(a, self.text_of(c)) for a, c in zip(answer, completions)])
        verdicts = [ch.equal for ch in checks]
        self.counts.update({True: "correct", False: "wrong", None: "unverifiable"}[v] for v in verdicts)
        lucky = [v is True and problems.arithmetic_slips(self.text_of(c))[1] > 0 for v, c in zip(verdicts, completions)]
        if any(lucky):
            self.counts["lucky"] += sum(lucky)
        self.calls.append({"rollouts": len(verdicts), "correct": sum(v is True for v in verdicts), "lucky": sum(lucky)})
        if self.check_work:
            verdicts = [False if bad else v for v, bad in zip(verdicts, lucky)]
        return [self.values[v] for v in verdicts]


# ============================================================================ trick 1 + 2: prompt selection
def length_cv(lengths) -> float:
    """Coefficient of variation std/mean (population std) of response lengths; 0 for one value."""
    x = np.asarray(lengths, dtype=float)
    if x.size == 0:
        raise ValueError("length_cv of no lengths")
    mean = x.mean()
    return float(x.std() / mean) if mean > 0 else 0.0


def probe(sampler, pool: pd.DataFrame, verifier, *, k: int, seed: int) -> pd.DataFrame:
    """Sample every candidate prompt ``k`` times; one row per prompt with its lengths and pass rate.

    ``pool`` needs columns ``problem`` and ``answer`` (02_tag_data's rl_pool); other columns are
    kept. Adds ``lengths`` (tokens per sample), ``n_correct``, ``pass_rate`` and ``length_cv``.
    """
    for col in ("problem", "answer"):
        if col not in pool.columns:
            raise ValueError(f"the RL prompt pool has no '{col}' column (columns: {list(pool.columns)})")
    completions = sampler.sample(pool["problem"].tolist(), n=k, seed=seed)
    pairs = [(a, c.text) for a, cs in zip(pool["answer"], completions) for c in cs]
    checks = verifier.check_many(pairs)
    out = pool.copy().reset_index(drop=True)
    out["lengths"] = [[c.n_tokens for c in cs] for cs in completions]
    out["n_correct"] = [sum(ch.equal is True for ch in checks[i * k:(i + 1) * k]) for i in range(len(out))]
    out["pass_rate"] = out["n_correct"] / k
    out["length_cv"] = [length_cv(ls) for ls in out["lengths"]]
    return out


def select_prompts(probed: pd.DataFrame, *, prompt_optimization: bool, max_length_cv: float, rebalance: bool,
                   max_pass_rate: float, drop_unsolved: bool, hard_below: float, oversample_hard: int,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Tricks 1 and 2 on probed prompts: the RL prompt set (hard prompts repeated) and the counts.

    Order of filters: length uniformity (trick 1), then pass rate (trick 2), then oversampling.
    Raises :class:`NoPromptsError` naming the filter that left nothing.
    """
    stats = {"candidates": len(probed)}
    df = probed
    if probed.empty:
        raise NoPromptsError("the RL prompt pool is empty: stage 02_tag_data wrote no rl_pool rows (its metrics.json "
                             "subset_stats.rl_pool.filters names the filter); nothing to select from")
    if prompt_optimization:
        keep = df["length_cv"] <= max_length_cv
        stats["dropped_length_cv"] = int((~keep).sum())
        df = df[keep]
        if df.empty:
            raise NoPromptsError(f"prompt optimisation kept none of {len(probed)} prompts: every prompt's response "
                                 f"length CV is above rl.max_length_cv={max_length_cv} (lowest "
                                 f"{probed['length_cv'].min():.3f}); raise the threshold")
    if rebalance:
        too_easy = df["pass_rate"] > max_pass_rate
        unsolved = (df["n_correct"] == 0) if drop_unsolved else pd.Series(False, index=df.index)
        stats["dropped_too_easy"] = int(too_easy.sum())
        stats["dropped_unsolved"] = int((unsolved & ~too_easy).sum())
        before = len(df)
        df = df[~too_easy & ~unsolved]
        if df.empty:
            raise NoPromptsError(
                f"the pass-rate filter kept none of {before} prompts ({stats['dropped_too_easy']} above "
                f"rl.max_pass_rate={max_pass_rate}, {stats['dropped_unsolved']} never solved"
                f"{' with rl.drop_unsolved' if drop_unsolved else ''}); the starting model is "
                "too strong or too weak for this pool: change the thresholds or the pool")
        hard = df["pass_rate"] < hard_below
        stats["hard"] = int(hard.sum())
        if oversample_hard > 1 and hard.any():
            df = pd.concat([df] + [df[hard]] * (oversample_hard - 1))
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    stats["selected_unique"] = int(df["problem"].nunique())
    stats["selected_rows"] = len(df)
    return df, stats


# ============================================================================ trick 2: balanced groups
def all_equal_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per group of ``group_size`` consecutive rewards: are they all equal (max - min < 1e-6)?"""
    r = rewards.view(-1, group_size)
    return (r.max(dim=1).values - r.min(dim=1).values) < 1e-6


def balance_mask(rewards: torch.Tensor, group_size: int, *, balance: bool, drop_all_equal: bool,
                 generator: torch.Generator | None = None, correct_above: float = 0.0) -> torch.Tensor:
    """Which completions of a generation batch take part in the update (bool, same shape).

    ``rewards`` is flat, groups of ``group_size`` consecutive completions (TRL's layout).
    - ``drop_all_equal``: a group whose rewards are all equal (max - min < 1e-6) is dropped.
    - ``balance``: in each group keep every correct completion (reward > ``correct_above``) and
      ``min(#correct, #incorrect)`` randomly chosen incorrect ones; a group without both kinds
      keeps nothing. So no update is all-positive or all-negative.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be flat with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.detach().float().cpu().view(-1, group_size)
    keep = torch.ones_like(r, dtype=torch.bool)
    if drop_all_equal:
        keep[all_equal_groups(r, group_size)] = False
    if balance:
        for g in range(r.size(0)):
            correct = r[g] > correct_above
            wrong = torch.nonzero(~correct).flatten()
            n_correct = int(correct.sum())
            if n_correct == 0 or len(wrong) == 0:
                keep[g] = False
                continue
            if len(wrong) > n_correct:
                chosen = wrong[torch.randperm(len(wrong), generator=generator)[:n_correct]]
                row = correct.clone()
                row[chosen] = True
                keep[g] &= row
    return keep.view(-1).to(rewards.device)


def group_advantages(rewards: torch.Tensor, keep: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """GRPO advantages computed over the kept completions only; 0 for the others.

    ``scale``: "group" divides by each group's std of kept rewards (unbiased, as TRL), "batch"
    by the std over all kept rewards, "none" does not divide.
    """
    r = rewards.detach().float().view(-1, group_size)
    k = keep.view(-1, group_size).to(r.device)
    n = k.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (r * k).sum(dim=1, keepdim=True) / n
    adv = (r - mean) * k
    if scale == "group":
        var = ((r - mean) ** 2 * k).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
        adv = adv / (var.sqrt() + 1e-4)
    elif scale == "batch":
        kept = r[k]
        std = kept.std() if kept.numel() > 1 else torch.tensor(0.0)
        adv = adv / (std + 1e-4)
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}")
    return (adv * k).view(-1)


# ============================================================================ trick 3: temperature
def annealed_temperature(step: int, total_steps: int, start: float, end: float, fraction: float) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``fraction * total_steps``, then constant."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    span = fraction * total_steps
    if span <= 0:
        return float(end)
    t = min(max(step, 0) / span, 1.0)
    return float(start + (end - start) * t)


def _fused_forward_functions(model) -> list:
    """The functions TRL's ``add_fused_lm_head`` installed on ``model`` (they hold its temperature)."""
    found, seen = [], set()
    todo = [model.__dict__.get("forward"), getattr(model, "_original_forward", None)]
    while todo:
        f = todo.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        fn = getattr(f, "__func__", f)
        code = getattr(fn, "__code__", None)
        if code is not None and "temperature" in code.co_freevars and code.co_name == "_fused_forward":
            found.append(fn)
        todo.append(getattr(f, "__wrapped__", None))
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            if callable(v):
                todo.append(v)
    return found


def set_logprob_temperature(model, temperature: float) -> int:
    """Change the temperature TRL's fused LM head divides logits by; returns how many heads changed."""
    fns = _fused_forward_functions(model)
    for fn in fns:
        fn.__closure__[fn.__code__.co_freevars.index("temperature")].cell_contents = float(temperature)
    return len(fns)


def logprob_temperature(model) -> float | None:
    """The temperature currently fixed into ``model``'s fused LM head (None if not patched)."""
    fns = _fused_forward_functions(model)
    if not fns:
        return None
    fn = fns[0]
    return fn.__closure__[fn.__code__.co_freevars.index("temperature")].cell_contents


_LEFT_PADDED = {"prompt_ids", "prompt_mask"}
_RIGHT_PADDED = {"completion_ids", "completion_mask", "ref_per_token_logps", "old_per_token_logps",
                 "sampling_per_token_logps", "tool_mask", "importance_sampling_ratio"}
_PER_ROW = {"advantages"}


def _pad_to(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    if t.size(1) >= width:
        return t
    pad = t.new_full((t.size(0), width - t.size(1)) + tuple(t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def replace_group_rows(out: dict, extra: dict, slot: int, donor: int, group_size: int, *, pad_token_id: int) -> dict:
    """``out`` (a scored generation batch as TRL's ``_generate_and_score_completions`` returns it) with
    group ``slot``'s rows replaced by group ``donor`` of ``extra``. Prompts are left-padded and
    completions right-padded to the wider of the two batches; ``num_items_in_batch`` is recounted.
    Raises ``NotImplementedError`` naming a per-row field it does not know how to merge."""
    n = out["completion_ids"].size(0)
    dst, src = slice(slot * group_size, (slot + 1) * group_size), slice(donor * group_size, (donor + 1) * group_size)
    merged = dict(out)
    for key, value in out.items():
        other = extra.get(key)
        if isinstance(value, list) and len(value) == n:
            raise NotImplementedError(f"cannot refill groups: per-row list '{key}' (multimodal batches) is not merged")
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.size(0) != n:
            continue
        if not isinstance(other, torch.Tensor):
            raise NotImplementedError(f"cannot refill groups: the refill batch has no tensor '{key}'")
        if key in _LEFT_PADDED or key in _RIGHT_PADDED:
            left = key in _LEFT_PADDED
            fill = pad_token_id if key.endswith("_ids") else 0
            width = max(value.size(1), other.size(1))
            value, other = _pad_to(value, width, fill, left), _pad_to(other, width, fill, left)
            value = value.clone()
            value[dst] = other[src].to(value.dtype)
        elif key in _PER_ROW:
            value = value.clone()
            value[dst] = other[src].to(value.dtype)
        else:
            raise NotImplementedError(f"cannot refill groups: unknown per-row field '{key}' of TRL's batch")
        merged[key] = value
    if "num_items_in_batch" in merged and isinstance(merged["num_items_in_batch"], torch.Tensor):
        merged["num_items_in_batch"] = merged["completion_mask"].sum().to(merged["num_items_in_batch"].dtype)
    return merged


# ============================================================================ the trainer
class RecipeGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with balanced groups, all-equal-group exclusion, a temperature
    schedule and the shared sampler for generation.

    - ``balance`` / ``drop_all_equal``: see :func:`balance_mask`. Dropped completions get
      advantage 0 and an all-zero completion mask; their rows are removed from each micro-batch
      before TRL's loss, so they count in no normaliser (per-sequence mean for grpo, rows x
      max length for dr_grpo, token counts for bnpo/dapo: ``num_items_in_batch`` is recounted).
    - Rows whose advantage is exactly 0 (plain GRPO's all-equal groups, which stay in its
      normaliser) are left out of the forward and backward when nothing but the policy term acts on
      them (``beta`` 0, no entropy bonus or mask, no router loss, a loss in
      :data:`ROW_NORMALISED_LOSSES`, one process), and the loss of the other rows is rescaled to the
      full count: the same loss and gradient up to rounding, without the rows that carry no signal.
    - ``temperature_schedule(step, max_steps) -> T``: applied before each training step to
      the sampling temperature and the log-probability temperature (:meth:`set_temperature`).
    - :attr:`temperature_log`: (global step, sampling T, log-prob T) of every generation.
    - :attr:`timings`: seconds spent generating, checking (reward) and in the whole step.
    - ``token_entropy`` (off by default): TRL's fused LM head also computes every completion token's
      entropy, for its ``entropy`` metric only when no entropy bonus or high-entropy mask is set (the
      recipe sets neither). Off, the head is re-added asking for log-probabilities only and the metric
      is not logged: the loss and the gradients are bit for bit TRL's (the head's log-probabilities do
      not depend on which extra fields it computes; ``tests/test_rl.py``), with one full-vocabulary
      pass less per step. With an entropy bonus or mask TRL's path is kept whatever this says.
    - ``refill`` (DAPO-style dynamic sampling): an iterator of new prompt rows (``{"prompt",
      "answer"}`` as :func:`to_dataset` makes them). After a generation batch is scored, each group
      whose rewards are all equal is replaced by a mixed group sampled from new prompts, up to
      ``refill_rounds`` extra generation rounds per step (one process only). :attr:`group_log`
      counts the groups refilled; the reward function's per-call records of a step are merged.
    """

    def __init__(self, *args, balance: bool = False, drop_all_equal: bool = False,
                 temperature_schedule: Callable[[int, int], float] | None = None,
                 sampler_batch_size: int = 64, refill: Iterator[dict] | None = None, refill_rounds: int = 1,
                 token_entropy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        # TRL needs each token's entropy only for a bonus, a high-entropy mask, or its metric
        self._lean_entropy = (not token_entropy and self.top_entropy_quantile >= 1.0
                              and not getattr(self, "_entropy_bonus_enabled", True))
        if self._lean_entropy:
            add_fused_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model,
                              temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
                              outputs=("log_probs",))
        # A completion whose advantage is exactly 0 (every completion of an all-equal group, when the
        # groups are not dropped: plain GRPO) adds exactly 0 to the loss and its gradient when nothing but
        # the policy term acts on it: no KL term, no entropy bonus or mask, no router loss, and a loss
        # whose normaliser counts rows (grpo, sapo, luspo: mean over rows; dr_grpo: rows x max length).
        # Such rows are then left out of the forward and backward and the loss of the others is rescaled to
        # the rows it normalises over: the same gradient up to rounding, for the cost of the rows with signal.
        self._skip_zero_advantage = (self.beta == 0.0 and self.loss_type in ROW_NORMALISED_LOSSES
                                     and self.top_entropy_quantile >= 1.0
                                     and not getattr(self, "_entropy_bonus_enabled", True)
                                     and not getattr(self, "aux_loss_enabled", True))
        self.balance = balance
        self.drop_all_equal = drop_all_equal
        self.refill = refill
        self.refill_rounds = refill_rounds
        self._generation_round = 0
        self.temperature_schedule = temperature_schedule
        self.sampler_batch_size = sampler_batch_size
        self._last_rewards: torch.Tensor | None = None
        self.temperature_log: list[tuple[int, float, float | None]] = []
        self.group_log: list[dict] = []
        self.timings: Counter = Counter()
        if temperature_schedule is not None:
            self.set_temperature(temperature_schedule(0, max(self.args.max_steps, 1)))

    # ---------------------------------------------------------------- temperature
    def set_temperature(self, temperature: float) -> None:
        """One temperature for sampling and for the log-probabilities of the loss (policy and reference)."""
        t = float(temperature)
        self.temperature = t
        if getattr(self, "generation_config", None) is not None:
            self.generation_config.temperature = t
        if getattr(self, "generation_kwargs", None) is not None:
            self.generation_kwargs["temperature"] = t
        if getattr(self, "use_vllm", False):
            self.vllm_generation.temperature = t
        models = [self.accelerator.unwrap_model(self.model)]
        if self.ref_model is not None:
            models.append(self.accelerator.unwrap_model(self.ref_model))
        for m in models:
            base = m.get_base_model() if hasattr(m, "get_base_model") else m
            if set_logprob_temperature(base, t) == 0:
                raise RuntimeError("could not find TRL's fused LM head on the model to set its temperature; "
                                   "this TRL version patches the model differently (see lib/rl.py)")

    def training_step(self, model, inputs, num_items_in_batch):
        if self.temperature_schedule is not None:
            t = self.temperature_schedule(self.state.global_step, self.state.max_steps)
            if t != self.temperature:
                self.set_temperature(t)
        start = time.perf_counter()
        out = super().training_step(model, inputs, num_items_in_batch)
        self.timings["step_s"] += time.perf_counter() - start
        self.timings["steps"] += 1
        return out

    # ---------------------------------------------------------------- generation (shared sampler)
    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        start = time.perf_counter()
        if self.use_vllm or images is not None or multimodal_fields:
            out = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                has_tool_images)
        else:
            from trl.models import unwrap_model_for_generation

            with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                             gather_deepspeed3_params=self.args.ds3_gather_for_generation) as m:
                seed = ((self.args.seed * 1_000_003 + self.state.global_step) * 97 + self.accelerator.process_index
                        + 7_919 * self._generation_round)  # refill rounds draw fresh streams; round 0 as before
                gens = sampling.generate_ids(
                    m, [list(p) for p in prompt_ids], eos_token_id=self._tokenizer.eos_token_id,
                    pad_token_id=self._tokenizer.pad_token_id, temperature=self.generation_config.temperature,
                    top_p=self.generation_config.top_p, max_new_tokens=self.max_completion_length,
                    batch_size=self.sampler_batch_size, seed=seed,
                    processes=1)  # in the training process: no forks beside its optimizer and process group
            out = ([ids for ids, _ in gens], None)
        unwrapped = self.accelerator.unwrap_model(self.model)
        self.temperature_log.append((self.state.global_step, float(self.generation_config.temperature
                                                                   if not self.use_vllm else self.temperature),
                                     logprob_temperature(unwrapped)))
        self.timings["generate_s"] += time.perf_counter() - start
        return out

    # ---------------------------------------------------------------- rewards and balancing
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        start = time.perf_counter()
        r = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.timings["reward_s"] += time.perf_counter() - start
        self._last_rewards = r  # gathered over processes, one column per reward function
        return r

    def _combined_rewards(self) -> torch.Tensor:
        weights = self.reward_weights.to(self._last_rewards.device)
        return (self._last_rewards * weights.unsqueeze(0)).nansum(dim=1)

    def _refill_all_equal(self, out: dict, rewards: torch.Tensor) -> tuple[dict, torch.Tensor, int]:
        """Replace all-equal groups of ``out`` by mixed groups of new prompts (see the class docstring)."""
        g, filled = self.num_generations, 0
        reward_fn = next((f for f in self.reward_funcs if isinstance(f, VerifiableReward)), None)
        n_calls = len(reward_fn.calls) if reward_fn is not None else 0
        for round_ in range(1, self.refill_rounds + 1):
            equal = all_equal_groups(rewards, g)
            if not bool(equal.any()):
                break
            rows = []
            for _ in range(int(equal.sum())):
                try:
                    rows.append(next(self.refill))
                except StopIteration:
                    break
            if not rows:
                break
            self._generation_round = round_
            try:
                extra = super()._generate_and_score_completions([r for r in rows for _ in range(g)])
            finally:
                self._generation_round = 0
            extra_rewards = self._combined_rewards()
            donors = torch.nonzero(~all_equal_groups(extra_rewards, g)).flatten().tolist()
            slots = torch.nonzero(equal).flatten().tolist()
            rewards = rewards.clone()
            for slot, donor in zip(slots, donors):
                out = replace_group_rows(out, extra, slot, donor, g, pad_token_id=self._tokenizer.pad_token_id)
                rewards[slot * g:(slot + 1) * g] = extra_rewards[donor * g:(donor + 1) * g]
                filled += 1
        if reward_fn is not None and len(reward_fn.calls) > n_calls:  # one record per step, as step_curve reads
            merged = reward_fn.calls[n_calls - 1]
            for c in reward_fn.calls[n_calls:]:
                for k in merged:
                    merged[k] += c[k]
            del reward_fn.calls[n_calls:]
        return out, rewards, filled

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.model.training or self._last_rewards is None:
            return out
        rewards = self._combined_rewards()
        g = self.num_generations
        refilled = 0
        if self.refill is not None:
            if self.accelerator.num_processes > 1:
                raise NotImplementedError("refilling all-equal groups runs on one process; set no refill (or "
                                          "rl.accelerate_config: null)")
            out, rewards, refilled = self._refill_all_equal(out, rewards)
        equal = all_equal_groups(rewards, g)
        record = {"step": self.state.global_step, "groups": int(equal.numel()), "all_equal_groups": int(equal.sum()),
                  "refilled_groups": refilled}
        if self.balance or self.drop_all_equal:
            gen = torch.Generator().manual_seed(self.args.seed * 7919 + self.state.global_step)
            keep = balance_mask(rewards, g, balance=self.balance, drop_all_equal=self.drop_all_equal, generator=gen)
            adv = group_advantages(rewards, keep, g, self.scale_rewards)
            n_local = len(inputs)
            local = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
            device = out["advantages"].device
            out["advantages"] = adv[local].to(device=device, dtype=out["advantages"].dtype)
            keep_local = keep[local].to(device)
            out["completion_mask"] = out["completion_mask"] * keep_local.unsqueeze(1).to(out["completion_mask"].dtype)
            loss_mask = out["completion_mask"] if "tool_mask" not in out else out["completion_mask"] * out["tool_mask"]
            out["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
            kept_groups = keep.view(-1, g).any(dim=1)
            record.update(kept_completions=int(keep.sum()), completions=int(keep.numel()),
                          filtered_groups=int((~kept_groups).sum()))
            self._metrics["train"]["groups/filtered_share"].append(float((~kept_groups).float().mean()))
            self._metrics["train"]["groups/kept_completions_share"].append(float(keep.float().mean()))
        else:
            record.update(kept_completions=int(rewards.numel()), completions=int(rewards.numel()), filtered_groups=0)
        self.group_log.append(record)
        return out

    # ---------------------------------------------------------------- loss
    def _get_per_token_logps_and_entropies(self, *args, compute_entropy=False, **kwargs):
        if not (self._lean_entropy and compute_entropy):
            return super()._get_per_token_logps_and_entropies(*args, compute_entropy=compute_entropy, **kwargs)
        # _compute_loss asks for entropies; with neither bonus nor mask they feed only the metric,
        # which _compute_loss removes again (zeros stand in so TRL's arithmetic runs unchanged)
        logps, _, aux_loss = super()._get_per_token_logps_and_entropies(*args, compute_entropy=False, **kwargs)
        return logps, torch.zeros_like(logps), aux_loss

    def _compute_loss(self, model, inputs):
        loss = self._compute_loss_of_kept_rows(model, inputs)
        if self._lean_entropy:  # the stand-in zeros are not a measured entropy
            self._metrics["train" if model.training else "eval"].pop("entropy", None)
        return loss

    def _compute_loss_of_kept_rows(self, model, inputs):
        rows = inputs["completion_mask"].sum(dim=1) > 0
        if self.accelerator.num_processes > 1:
            if bool(rows.all()):
                return super()._compute_loss(model, inputs)
            # Several processes: every one must run the same collectives with tensors of the same
            # shapes (DDP's forward and backward; TRL gathers per-row metrics), so no row is removed.
            # Dropped rows have an all-zero mask and add nothing to the sums; where TRL divides by the
            # rows (grpo/sapo: mean over rows; dr_grpo: rows x max length), the loss is rescaled to the
            # kept rows, which gives the gradient of the loss over the kept rows alone.
            loss = super()._compute_loss(model, inputs)
            kept = int(rows.sum())
            if kept == 0:
                return loss * 0.0
            return loss * (rows.numel() / kept) if self.loss_type in ROW_NORMALISED_LOSSES else loss
        # One process: the forward and backward run on the kept rows, and of those only on the rows with
        # a nonzero advantage where nothing else acts on a row (_skip_zero_advantage); the loss of those
        # is rescaled to the kept rows, the normaliser (the factor is 1 unless zero-advantage rows were left out)
        active = rows
        if self._skip_zero_advantage:
            adv = inputs["advantages"]
            active = rows & (adv.reshape(adv.size(0), -1) != 0).any(dim=1).to(rows.device)
        if bool(active.all()):
            return super()._compute_loss(model, inputs)
        if not bool(active.any()):
            # no completion of this micro-batch takes part: a zero loss that still touches every parameter
            return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        n = active.numel()
        loss = super()._compute_loss(model, {k: (v[active] if isinstance(v, torch.Tensor) and v.dim() > 0
                                                 and v.size(0) == n else v) for k, v in inputs.items()})
        n_active, n_rows = int(active.sum()), int(rows.sum())
        return loss if n_active == n_rows else loss * (n_active / n_rows)


# ============================================================================ tracking callback
class HeldoutTracker(TrainerCallback):
    """Every ``every`` steps (and at the start and end): held-out pass@1 and cons@k.

    Samples ``n_samples`` completions per held-out problem with the shared sampler at the
    evaluation temperature, checks them with the shared verifier and records pass@1 (mean over
    samples) and cons@``n_samples`` (majority vote) -- the paper's stability signal.

    ``start``: a step-0 row measured by another tracker with the same settings on the same starting
    model (two RL variants from one checkpoint); it is reused instead of sampled again.
    """

    def __init__(self, tokenizer, eval_set, verifier, *, every: int, n_samples: int, temperature: float,
                 top_p: float, max_new_tokens: int, batch_size: int, seed: int, start: dict | None = None):
        self.tokenizer, self.eval_set, self.verifier = tokenizer, eval_set, verifier
        self.every, self.n_samples = every, n_samples
        self.sampling = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, progress=False)
        self.seed = seed
        if start is not None and start.get("step") != 0:
            raise ValueError(f"HeldoutTracker: start must be a step-0 row, got step {start.get('step')!r}")
        self.history: list[dict] = [dict(start)] if start is not None else []
        self.seconds = 0.0

    def measure(self, model, step: int) -> dict:
        start = time.perf_counter()
        sampler = sampling.HFSampler(model, self.tokenizer, **self.sampling)
        records = evaluation.evaluate(sampler, self.eval_set, self.verifier, n_samples=self.n_samples,
                                      seed=self.seed)
        summary = evaluation.summarize(records, self.verifier, n_runs=1, seed=self.seed)
        k = self.n_samples
        row = {"step": step, "pass1": float(records["correct"].eq(True).mean()),
               f"cons@{k}": summary["cons_at_k"].get(k, math.nan),
               "mean_tokens": float(records["n_tokens"].mean()),
               "finished_share": float(records["finished"].mean()),
               # each problem's majority right (1.0) or not: paired cons@k between steps and arms
               "cons_by_problem": summary["cons_per_problem"]}
        self.history.append(row)
        self.seconds += time.perf_counter() - start
        return row

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not self.history:
            self.measure(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.measure(model, state.global_step)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self.measure(model, state.global_step)


# ============================================================================ config and run
def grpo_config(section, out_dir, *, device: torch.device, dtype: torch.dtype, seed: int,
                temperature: float, top_p: float = 1.0, use_vllm: bool = False) -> GRPOConfig:
    """A GRPOConfig from the ``rl`` params section, with the device settings every stage shares."""
    kwargs = trainer_kwargs(section, out_dir, device=device, dtype=dtype, seed=seed)
    kwargs.pop("max_length")
    kwargs.pop("include_num_input_tokens_seen")
    kwargs.update(
        max_completion_length=section.max_length,
        num_generations=section.num_generations,
        loss_type=section.loss_type,
        beta=section.beta,
        scale_rewards=section.scale_rewards,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        logging_steps=1,
        log_completions=False,
        disable_dropout=True,
    )
    return GRPOConfig(**kwargs)


def to_dataset(prompts: pd.DataFrame):
    """TRL's prompt dataset: conversational prompts (the chat template applies, as in evaluation)
    plus the reference ``answer`` the reward reads."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [chat.prompt_messages(p) for p in prompts["problem"]],
                              "answer": [str(a) for a in prompts["answer"]]})


def run_grpo(model, tokenizer, prompts: pd.DataFrame, section, out_dir, *, verifier, device, dtype, seed: int,
             tricks: bool, tracker: HeldoutTracker | None = None, use_vllm: bool = False,
             resume: bool = True, refill_prompts: pd.DataFrame | None = None,
             refill_rounds: int = 1) -> tuple[RecipeGRPOTrainer, dict]:
    """Train ``model`` with GRPO on ``prompts``; ``tricks`` switches balancing and annealing on.

    With ``tricks=False`` this is plain GRPO: TRL's behaviour for groups, constant temperature
    ``temperature_start``. ``refill_prompts`` (``problem, answer``): new prompts that replace
    all-equal groups, DAPO-style (:class:`RecipeGRPOTrainer`'s ``refill``), each used at most once.
    Returns the trainer and a summary (reward counts, timings, logs).
    """

    anneal = tricks and section.temperature_annealing
    start_t = section.temperature_start
    schedule = None
    if anneal:
        def schedule(step, total, s=section):
            return annealed_temperature(step, total, s.temperature_start, s.temperature_end, s.anneal_fraction)
    cfg = grpo_config(section, out_dir, device=device, dtype=dtype, seed=seed, temperature=start_t,
                      use_vllm=use_vllm)
    reward = VerifiableReward(verifier, unverifiable=section.unverifiable_reward,
                              check_work=section.reward == "verified")
    name = str(model.config._name_or_path or "")
    if section.beta > 0 and not (name and Path(name).is_dir()):
        # TRL builds the KL reference from the policy's path: give an in-memory model one
        ref_dir = Path(out_dir) / "reference"
        model.save_pretrained(ref_dir)
        model.config._name_or_path = str(ref_dir)
    match_compile_state(cfg)
    trainer = RecipeGRPOTrainer(
        model=model, args=cfg, reward_funcs=[reward], train_dataset=to_dataset(prompts),
        processing_class=tokenizer, callbacks=[tracker] if tracker else None,
        balance=tricks and section.rebalance, drop_all_equal=tricks and section.rebalance,
        temperature_schedule=schedule,
        refill=iter(to_dataset(refill_prompts)) if refill_prompts is not None else None, refill_rounds=refill_rounds)
    trainer.add_callback(progress.callback())
    ckpt = last_checkpoint(out_dir) if resume else None
    start = time.perf_counter()
    result = train_guarded(trainer, ckpt)
    seconds = time.perf_counter() - start
    logs = [r for r in trainer.state.log_history if "loss" in r or "reward" in r]
    summary = {
        "steps": trainer.state.global_step, "train_seconds": seconds, "resumed_from": ckpt,
        "train_loss": result.training_loss, "reward_counts": dict(reward.counts), "reward_calls": reward.calls,
        "distinct_prompts": int(prompts["problem"].nunique()),
        "timings": dict(trainer.timings), "log": logs, "groups": trainer.group_log,
        "temperatures": trainer.temperature_log,
    }
    return trainer, summary


def step_curve(summary: dict) -> pd.DataFrame:
    """Per-step reward, length, temperature, filtered-group share and the share of right answers
    with all their arithmetic true (``verified_share``) from a :func:`run_grpo` summary."""
    rows = []
    temps = {s: t for s, t, _ in summary["temperatures"]}
    groups = {g["step"]: g for g in summary["groups"]}
    calls = summary.get("reward_calls") or []
    for r in summary["log"]:
        step = int(r.get("step", 0))
        g = groups.get(step - 1, {})
        c = calls[step - 1] if 0 < step <= len(calls) else {}
        rows.append({"step": step, "reward": r.get("reward"), "reward_std": r.get("reward_std"),
                     "length": r.get("completions/mean_length"), "loss": r.get("loss"),
                     "temperature": temps.get(step - 1), "all_equal_share":
                     g.get("all_equal_groups", 0) / g["groups"] if g.get("groups") else None,
                     "filtered_share": g.get("filtered_groups", 0) / g["groups"] if g.get("groups") else None,
                     "verified_share": (c["correct"] - c["lucky"]) / c["correct"] if c.get("correct") else None})
    return pd.DataFrame(rows)


@dataclass
class ArmResult:
    """One RL arm (GRPO with the tricks, or plain GRPO): the run's summary (:func:`run_grpo`), its
    held-out tracking table (:class:`HeldoutTracker`'s rows), the seconds the tracking took, and per
    tracked step each problem's cons@k hit (``cons_by_step[step][problem id]``, 1.0 or 0.0)."""
    summary: dict
    history: pd.DataFrame
    tracking_s: float
    cons_by_step: dict = field(default_factory=dict)

    @classmethod
    def from_rows(cls, summary: dict, rows: list[dict], tracking_s: float) -> "ArmResult":
        """From a tracker's history rows: the table without the per-problem column, which goes to
        ``cons_by_step``."""
        table = pd.DataFrame([{k: v for k, v in r.items() if k != "cons_by_problem"} for r in rows])
        cons = {int(r["step"]): dict(r["cons_by_problem"]) for r in rows if r.get("cons_by_problem")}
        return cls(summary, table, tracking_s, cons)


def cons_comparison(runs: dict[str, "ArmResult"], *, seed: int = 0) -> pd.DataFrame:
    """Paired cons@k differences on the tracked problems (percentile bootstrap over problems,
    :func:`lib.metrics.paired_difference`): each arm's last tracked step against its step 0, and,
    with two arms or more, the first arm's last step against each other arm's. Columns: ``comparison,
    mean, lo, hi, n_problems, better, worse``. Arms without per-problem rows (a resumed run that
    has no step 0) are left out of the comparisons that need them."""
    rows = []
    for name, arm in runs.items():
        if arm.cons_by_step and 0 in arm.cons_by_step and len(arm.cons_by_step) > 1:
            last = max(arm.cons_by_step)
            d = metrics.paired_difference(arm.cons_by_step[last], arm.cons_by_step[0], seed=seed)
            rows.append({"comparison": f"{name}: step {last} - step 0", **d.to_dict()})
    names = list(runs)
    first = runs[names[0]] if names else None
    for other in names[1:]:
        a, b = first.cons_by_step, runs[other].cons_by_step
        if a and b and max(a) == max(b):
            d = metrics.paired_difference(a[max(a)], b[max(b)], seed=seed)
            rows.append({"comparison": f"{names[0]} - {other} at step {max(a)}", **d.to_dict()})
    return pd.DataFrame(rows, columns=["comparison", "mean", "lo", "hi", "n_problems", "better", "worse"])


def tracker_for(section, tokenizer, eval_set, verifier, *, seed: int, start: dict | None = None) -> HeldoutTracker:
    """The :class:`HeldoutTracker` params section ``rl`` describes (every arm is tracked alike)."""
    return HeldoutTracker(tokenizer, eval_set, verifier, every=section.eval_every, n_samples=section.eval_samples,
                          temperature=section.eval_temperature, top_p=section.eval_top_p,
                          max_new_tokens=section.max_length, batch_size=64, seed=seed, start=start)


def step_timing(summary: dict) -> dict:
    """Seconds per optimizer step of a :func:`run_grpo` summary: in all, and split into generation,
    answer checking (the reward) and the update (the rest)."""
    t = summary["timings"]
    steps = max(summary["steps"], 1)
    gen, rew, total = t.get("generate_s", 0.0), t.get("reward_s", 0.0), t.get("step_s", 0.0)
    return {"s_per_step": total / steps, "generation_s": gen / steps, "checking_s": rew / steps,
            "update_s": (total - gen - rew) / steps}
