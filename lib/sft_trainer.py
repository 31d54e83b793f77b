"""TRL's ``SFTTrainer`` as the recipe runs it: the model's own loss, nothing computed per step for the logs.

TRL's ``SFTTrainer.compute_loss`` runs its *fused LM head*: it scores the label tokens in chunks
with a custom backward (on a GPU in Triton; on a CPU every position, chunk by chunk, in Python)
and, for its logs, also computes every token's entropy and top-1 accuracy at every step. The
recipe takes the model's own causal-LM loss instead (``transformers.Trainer.compute_loss``: one
cross-entropy over the logits, summed over label tokens and divided by ``num_items_in_batch``):
the same quantity and the same gradients (``tests/test_packing.py``), without the extra work. The
logs lose TRL's ``entropy`` and ``mean_token_accuracy``, which no stage reads.
``benchmarks/bench_midtrain.py`` measures what this is worth on the mid-training stage as it runs.
``trl_loss = True`` (on the class or an instance) restores TRL's path.
"""
from __future__ import annotations

from transformers import Trainer
from trl import SFTTrainer


class RecipeSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss is the model's own (see the module docstring)."""

    trl_loss = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.trl_loss:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
