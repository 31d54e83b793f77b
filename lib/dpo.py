"""Rollout DPO (stage 3): preference pairs from correct vs. incorrect rollouts, TRL's DPO trainer.

Pairs (the paper, stage 3): for a problem with at least one verified-correct and one incorrect
rollout, chosen = a correct rollout, rejected = an incorrect one (:func:`lib.subsets.dpo_pairs`:
pairs per problem, length matching). Sources: the teacher's rollouts that stages 1-2 threw away
(the paper's choice), fresh rollouts sampled from the SFT model (on-policy), or both. The
reference model is the SFT checkpoint; the loss is TRL's standard sigmoid DPO loss.
"""
from __future__ import annotations

import random
import time

import datasets
import pandas as pd
import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer

from lib import chat, metrics, problems, subsets, training
from lib.training import run_trainer, trainer_kwargs

PAIR_COLUMNS = ("prompt", "chosen", "rejected", "problem_id", "difficulty")


class NoPairsError(ValueError):
    """A DPO source gave no usable (correct, incorrect) pair; the message says why."""


def on_policy_rollouts(sampler, source: pd.DataFrame, verifier, n: int, seed: int,
                       max_problems: int | None = None) -> pd.DataFrame:
    """Sample ``n`` completions per problem from the model being trained and verify them.

    ``source``: rows with ``problem_id, problem, answer`` (+ tag columns, kept); each problem is
    sampled once however many rows it has. ``max_problems``: sample only this many problems, a
    seeded draw (sampling is most of the stage's time).
    Returns rollout rows in the same columns as the teacher's (``text``, ``correct``, ``length``).
    """
    probs = source.drop_duplicates("problem_id").reset_index(drop=True)
    if max_problems is not None and max_problems < len(probs):
        probs = probs.sample(n=max_problems, random_state=seed).reset_index(drop=True)
    completions = sampler.sample(list(probs["problem"]), n=n, seed=seed)
    checks = verifier.check_many([(a, c.text) for a, cs in zip(probs["answer"], completions) for c in cs])
    rows, k = [], 0
    for (_, p), cs in zip(probs.iterrows(), completions):
        for j, c in enumerate(cs):
            rows.append({**p.to_dict(), "sample_index": j, "text": c.text, "correct": checks[k].equal,
                         "checker": checks[k].checker, "length": c.n_tokens, "n_tokens": c.n_tokens,
                         "finished": c.finished, "repetitive": metrics.is_repetitive(c.text), "teacher": "on_policy"})
            k += 1
    return pd.DataFrame(rows)


def build_pairs(sources: dict[str, pd.DataFrame], pairs_per_problem: int, length_match: bool,
                seed: int) -> tuple[pd.DataFrame, dict]:
    """Pairs from each source (tagged rollout tables), concatenated; stats per source.

    Raises :class:`NoPairsError` naming every source and why it gave nothing, when none gave a pair.
    """
    parts, stats, reasons = [], {}, {}
    for name, df in sources.items():
        try:
            pairs, st = subsets.dpo_pairs(df, pairs_per_problem=pairs_per_problem, length_match=length_match,
                                          seed=seed)
        except ValueError as e:
            reasons[name] = str(e)
            stats[name] = {"pairs": 0, "reason": str(e)}
            continue
        parts.append(pairs.assign(source=name))
        stats[name] = {"pairs": len(pairs), "problems": int(pairs.problem_id.nunique()),
                       "by_difficulty": pairs.difficulty.value_counts().to_dict()}
    if not parts:
        raise NoPairsError("no DPO pairs: " + "; ".join(f"source '{k}': {v}" for k, v in reasons.items())
                           + ". Pairs need problems with both a verified-correct and an incorrect rollout: "
                           "use more rollouts per problem, harder problems, or dpo.source: on_policy/both.")
    return pd.concat(parts, ignore_index=True), stats


def drop_lucky_chosen(pairs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The pairs whose chosen answer writes no false arithmetic statement
    (:func:`lib.problems.arithmetic_slips`), and how many were dropped: on a domain with small
    answers a "correct" rollout is often a lucky guess through broken work, which DPO would
    otherwise teach as the preferred answer. Raises :class:`NoPairsError` when none is left."""
    clean = pairs[[problems.arithmetic_slips(t)[1] == 0 for t in pairs["chosen"]]].reset_index(drop=True)
    if clean.empty:
        raise NoPairsError(f"every one of the {len(pairs)} pairs has a chosen answer with false arithmetic: set "
                           "dpo.verified_chosen to false, or sample more rollouts per problem")
    return clean, len(pairs) - len(clean)


def balance(pairs: pd.DataFrame, column: str, seed: int) -> pd.DataFrame:
    """Down-sample so every value of ``column`` has as many pairs as the rarest one (seeded)."""
    counts = pairs[column].value_counts()
    if counts.empty:
        return pairs
    n = int(counts.min())
    return (pairs.groupby(column, group_keys=False).sample(n=n, random_state=seed)
            .sort_values(["problem_id"], kind="stable").reset_index(drop=True))


def split_heldout(pairs: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the pairs of a share of problems (never a problem's pairs on both sides)."""
    ids = sorted(pairs.problem_id.unique())
    random.Random(seed).shuffle(ids)
    held = set(ids[:max(1, round(share * len(ids)))]) if share > 0 and len(ids) > 1 else set()
    mask = pairs.problem_id.isin(held)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def to_dataset(pairs: pd.DataFrame) -> Dataset:
    """TRL's conversational preference format, prompts built by lib.chat like every other stage."""
    return Dataset.from_list([{"prompt": chat.prompt_messages(r.prompt),
                               "chosen": [{"role": "assistant", "content": r.chosen}],
                               "rejected": [{"role": "assistant", "content": r.rejected}]}
                              for r in pairs.itertuples()])


def dpo_config(section, out_dir, *, device: torch.device, dtype: torch.dtype, seed: int) -> DPOConfig:
    """DPOConfig from params ``dpo``, with the device choices every recipe trainer shares;
    ``nll_weight > 0`` adds the chosen answer's NLL to the DPO loss with that weight."""
    kwargs = trainer_kwargs(section, out_dir, device=device, dtype=dtype, seed=seed)
    if section.nll_weight > 0:  # DPO + NLL on the chosen answer (iterative RPO): TRL's "sft" loss, weighted
        kwargs.update(loss_type=["sigmoid", "sft"], loss_weights=[1.0, section.nll_weight])
    return DPOConfig(**kwargs, beta=section.beta, per_device_eval_batch_size=section.batch_size, eval_strategy="no")


def fit_dpo(model, ref_model, tokenizer, train_pairs: pd.DataFrame, eval_pairs: pd.DataFrame,
            cfg: DPOConfig) -> dict:
    """Train; return the curves TRL logs (loss; implicit rewards of chosen and rejected, their
    margin and accuracy; summed log-probs of chosen and rejected) and held-out preference accuracy
    before and after.

    Before training the policy equals the reference, so every implicit reward is 0 and TRL's
    preference accuracy (chosen reward > rejected reward) is 0 by construction: compare the
    "after" value with 0.5, a coin flip.
    """
    datasets.disable_progress_bars()
    training.match_compile_state(cfg)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=cfg, train_dataset=to_dataset(train_pairs),
                         eval_dataset=to_dataset(eval_pairs) if len(eval_pairs) else None,
                         processing_class=tokenizer)
    before = trainer.evaluate() if len(eval_pairs) else {}
    t0 = time.time()
    stats = run_trainer(trainer)
    after = trainer.evaluate() if len(eval_pairs) else {}
    stats["curve"] = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate"),
                       "margin": h.get("rewards/margins"), "accuracy": h.get("rewards/accuracies"),
                       "reward_chosen": h.get("rewards/chosen"), "reward_rejected": h.get("rewards/rejected"),
                       "logps_chosen": h.get("logps/chosen"), "logps_rejected": h.get("logps/rejected")}
                      for h in trainer.state.log_history if "loss" in h]
    stats.update({
        "heldout_pref_accuracy_before": before.get("eval_rewards/accuracies"),
        "heldout_pref_accuracy_after": after.get("eval_rewards/accuracies"),
        "heldout_margin_before": before.get("eval_rewards/margins"),
        "heldout_margin_after": after.get("eval_rewards/margins"),
        "pairs_per_s": len(train_pairs) * cfg.num_train_epochs / max(time.time() - t0, 1e-9)
        if cfg.max_steps <= 0 else None,
    })
    return stats
