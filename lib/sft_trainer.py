"""TRL's ``SFTTrainer`` as the recipe runs it, with a switch for the loss path.

TRL's ``SFTTrainer.compute_loss`` runs its *fused LM head*: it scores the label tokens in chunks
with a custom backward (on a GPU in Triton; on a CPU every position, chunk by chunk, in Python)
and, for its logs, also computes every token's entropy and top-1 accuracy at every step. The
alternative, ``trl_loss = False``, takes the model's own causal-LM loss
(``transformers.Trainer.compute_loss``: one cross-entropy over the logits, summed over label
tokens and divided by ``num_items_in_batch``): the same quantity and the same gradients up to
float rounding (``tests/test_sft_trainer.py``, ``tests/test_packing.py``), without the extra work.

Measured (``benchmarks/bench_midtrain.py``, tiny's mid-training rows, 2 threads): TRL's path
runs at 0.82x a bare loop, the model's own loss at 1.01x; a whole ``make tiny`` with it took
31m11s instead of 34m47s (mid-training 13m16s instead of 17m08s). But that run's table moved
far more than its intervals (final pass@1 41.2 instead of 56.7; mid-training's greedy held-out
0.385 instead of 0.515, already 0.375 vs 0.47 fifty steps earlier), while the first logged
losses agree to 1e-6: rounding-level differences grow over 1,742 steps at a constant learning
rate into a different model. One run cannot tell whether this is run-to-run variance or a
systematic effect, so the default stays TRL's path (``trl_loss = True``), which reproduces the
README's table, until a study over several seeds decides (``LOG.md``, 2026-12-02, night).
"""
from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


class RecipeSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with a choice of loss path (see the module docstring); TRL's by default."""

    trl_loss = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.trl_loss:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
