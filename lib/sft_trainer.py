"""TRL's ``SFTTrainer`` as the recipe runs it, with a switch for the loss path.

TRL's ``SFTTrainer.compute_loss`` runs its *fused LM head*: it scores the label tokens in chunks
with a custom backward (on a GPU in Triton; on a CPU every position, chunk by chunk, in torch)
and, for its logs, also computes every token's entropy and top-1 accuracy at every step. The
recipe keeps TRL's loss but not those two metrics (``token_metrics = False``, the default): the
head is asked for log-probabilities only, which changes no bit of the loss or the gradients
(``tests/test_sft_trainer.py`` trains both ways and compares the weights with ``torch.equal``).

The alternative, ``trl_loss = False``, takes the model's own causal-LM loss
(``transformers.Trainer.compute_loss``: one cross-entropy over the logits, summed over label
tokens and divided by ``num_items_in_batch``): the same quantity and the same gradients up to
float rounding (``tests/test_sft_trainer.py``, ``tests/test_packing.py``), without the fused
head's CPU cost.

On a CPU, TRL's head also recomputes its logits tile in the backward and folds it with about ten
elementwise passes; :class:`SingleTileLogProb` does the same float operations without the exact
identities and keeps the tile from the forward, bit for bit TRL's (``single_tile_head``, on by
default in the loss path above).

Measured (``benchmarks/bench_midtrain.py --steps 60 --rounds 5 --arms bare stage stage_trl_head``,
tiny's mid-training rows, 2 threads, 2026-12-04), in real tokens/s against a bare loop on the same
batches, the same-round ratios' median: the default **0.97x** (per round 0.93-1.00), TRL's own tile
function 0.75x (0.74-0.77). So the default is 1.27x faster than TRL's head and trains the same bits
(a whole ``make tiny`` with it gave byte-identical checkpoints at every stage). The model's own loss
reached 0.90-0.98x in earlier runs of the benchmark, but it is not bit for bit TRL's: a whole
``make tiny`` with it moved the table by 12-15 points (final pass@1 41.2 instead of 56.7), and a
study over three training seeds of mid-training alone (``LOG.md``, 2026-12-03) found a spread as
large on TRL's path (greedy held-out 0.395-0.515) as the gap. It stays a switch, not the default.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from accelerate.utils import is_peft_model
from transformers import Trainer
from trl import SFTTrainer
from trl.trainer.utils import add_fused_lm_head


class RecipeSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with a choice of loss path (see the module docstring); TRL's by default.

    ``token_metrics`` (off by default) keeps TRL's per-step entropy and top-1 token accuracy. Off,
    TRL's fused LM head is re-added asking for the log-probabilities only, and :meth:`compute_loss`
    runs TRL's loss arithmetic without the metrics: the loss and the gradients are bit for bit
    TRL's (the head's log-probabilities do not depend on which extra fields it computes;
    ``tests/test_sft_trainer.py``), with less work per step. The recipe reads neither metric.
    TRL's loss variants this does not cover (a ``compute_loss_func``, label smoothing, a loss type
    other than ``nll``, MoE auxiliary losses, sequence parallelism) keep TRL's own ``compute_loss``,
    metrics included.
    """

    trl_loss = True
    token_metrics = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lean_fused = (not self.token_metrics and self.compute_loss_func is None
                            and self.label_smoother is None and self.args.loss_type == "nll"
                            and not self.aux_loss_enabled and not _sequence_parallel(self.accelerator))
        if self._lean_fused:
            add_fused_lm_head(self.model.get_base_model() if is_peft_model(self.model) else self.model,
                              outputs=("log_probs",))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.trl_loss:
            return Trainer.compute_loss(self, model, {**inputs, "use_cache": False}, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        if not self._lean_fused or return_outputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        # TRL's SFTTrainer.compute_loss, its "nll" branch, the same operations in the same order,
        # without the entropy/accuracy metrics; the head's tile math kept from the forward on a CPU.
        with single_tile_head():
            outputs = model(**{**inputs, "use_cache": False}, fused_lm_head=True)
        per_token_loss = -outputs.log_probs
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if self.model.training:  # TRL's num_tokens log, counted as TRL counts it
            if "attention_mask" in inputs:
                n = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            else:
                n = self.accelerator.gather_for_metrics(torch.tensor(inputs["position_ids"].size(1))).sum().item()
            self._total_train_tokens += n // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return loss


def _sequence_parallel(accelerator) -> bool:
    """Whether TRL's compute_loss would take its sequence-parallel branch (the model's own loss)."""
    config = getattr(accelerator, "parallelism_config", None)
    return bool(config is not None and getattr(config, "sp_enabled", False))


class SingleTileLogProb(torch.autograd.Function):
    """TRL's ``ChunkedLogProbFunction`` on a CPU when the whole batch is one tile, the logits kept.

    TRL's fused head (``trl.kernels.chunked_logprob``) projects the hidden states through the LM head
    in ``[4096 tokens, 32768 vocab]`` tiles, folds each tile into running log-sum-exp statistics, and
    in the backward *recomputes* every tile to turn it into the logits' gradient: on a GPU that saves
    the ``[N, V]`` logits' memory. Off a GPU it folds a tile with about ten elementwise passes
    (multiplications by a logit scale and an inverse temperature of 1.0, a running-max rescale from
    -inf, a zero-initialised gradient). For tiny's mid-training batch (16 x 191 positions, vocab 1,536)
    that costs ~70 ms of a ~250 ms step (2 threads, 2026-12-04).

    This function takes the same values through the same float operations, dropping only the
    ones that are exact identities (x * 1.0, 0 * 0 + s, 0 + x) and keeping the one tile from the
    forward instead of recomputing it: log-probabilities, loss and both gradients are bit for bit
    TRL's (``tests/test_sft_trainer.py`` compares them with ``torch.equal``; on that batch ~29 ms).
    It covers only what :func:`single_tile_head` checks (one tile, float32, no bias, scale,
    softcap or temperature, log-probabilities only); everything else goes to TRL's function.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ctx.set_materialize_grads(False)
        tile = torch.mm(hidden, weight.t())
        row_max = tile.amax(-1)
        log_z = row_max + torch.log((tile - row_max.unsqueeze(-1)).exp_().sum(-1))
        logprobs = tile.gather(1, targets.unsqueeze(1)).squeeze(1) - log_z
        ctx.save_for_backward(hidden, weight, targets, log_z, tile)
        return logprobs

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor | None):
        if grad_logprobs is None:
            return None, None, None
        hidden, weight, targets, log_z, tile = ctx.saved_tensors
        g = grad_logprobs.float().contiguous()
        p = (tile - log_z.unsqueeze(-1)).exp_()
        index = targets.unsqueeze(1)
        at_target = g * (1 - p.gather(1, index).squeeze(1))  # d log p_target / dz_target = 1 - p_target
        grad = p.mul_(-g.unsqueeze(-1))                           # d log p_target / dz_j = -p_j elsewhere
        grad.scatter_(1, index, at_target.unsqueeze(1))
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32).addmm_(grad, weight.float())
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32).addmm_(grad.t(), hidden.float())
        return (grad_hidden.to(hidden.dtype) if ctx.needs_input_grad[0] else None,
                grad_weight.to(weight.dtype) if ctx.needs_input_grad[1] else None, None)


class _TileDispatch:
    """Stands in for TRL's ``ChunkedLogProbFunction`` inside :func:`single_tile_head`: the single-tile
    CPU case goes to :class:`SingleTileLogProb`, every other call to TRL's function unchanged."""

    trl_function = None  # set by single_tile_head

    @classmethod
    def apply(cls, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS, TOKEN_CHUNK_SIZE

        if (hidden.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
                and hidden.dtype == weight.dtype == torch.float32 and bias is None
                and temperature == 1.0 and final_logit_softcapping is None and logit_scale == 1.0
                and not any(o in outputs for o in OPTIONAL_OUTPUTS)
                and hidden.shape[0] <= TOKEN_CHUNK_SIZE and weight.shape[0] <= chunk_size):
            return SingleTileLogProb.apply(hidden, weight, targets), None, None, None, None
        return cls.trl_function.apply(hidden, weight, bias, targets, temperature, chunk_size,
                                      final_logit_softcapping, logit_scale, outputs)


@contextmanager
def single_tile_head():
    """While inside, TRL's fused LM head (``add_fused_lm_head``'s forward) projects through
    :class:`SingleTileLogProb` where it applies. TRL's forward looks its tile function up in
    ``trl.trainer.utils`` at every call; the original is put back on exit."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._ChunkedLogProbFunction
    if original is _TileDispatch:  # nested
        yield
        return
    _TileDispatch.trl_function = original
    trl_utils._ChunkedLogProbFunction = _TileDispatch
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = original
