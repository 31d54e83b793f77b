"""Packing for mid-training: several examples per row, kept apart by a block-diagonal mask.

Stage 1 of the recipe ("distillation as mid-training") trains on problem + long chain-of-thought
texts with packing. TRL's packing on CPU is either slow or leaky (docs/stack_notes.md): its default
("bfd") flattens a whole batch into one padding-free row of batch x max_length tokens whose
attention cost grows with the square of that length (it is built for flash-attention's varlen
kernels), and "wrapped" lets packed examples attend to each other. Here instead:

1. :func:`tokenize` tokenizes prompt-completion rows with TRL's own code (an ``SFTTrainer``
   built with ``packing=False``), so labels are exactly TRL's: ``-100`` on prompt tokens.
2. :func:`pack` bins whole examples into rows of at most ``max_length`` tokens, best-fit
   decreasing (deterministic). An example longer than ``max_length`` is truncated (start kept,
   as TRL's ``truncation_mode="keep_start"``) and counted in :class:`PackStats`; none is dropped.
3. :class:`PackedCollator` stacks rows into a dense ``[batch, L]`` batch with ``position_ids``
   restarting at 0 for every example and a 4D block-diagonal causal ``attention_mask``
   (``[batch, 1, L, L]``). transformers (5.23, ``masking_utils._preprocess_mask_arguments``)
   passes a 4D mask through untouched to sdpa/eager attention, so each example sees only
   itself whatever ``use_cache`` says. The first label of every example is ``-100``: the last
   token of one example never learns to predict the next example.
4. :func:`packed_trainer` builds TRL's ``SFTTrainer`` on the rows with this collator;
   :func:`lib.training.fit_packed` trains it (the same statistics as padded training).

The batch is as dense as padding-to-longest but with ~no pad tokens, and attention stays per
row (``batch x L^2``, not ``(batch x L)^2``). Measured (``benchmarks/bench_packing.py``, tiny
1.07M-parameter Llama, 1,200 CoT examples of 59-436 tokens, rows of 512, ~5.6k real tokens per
step, CPU shared with other jobs): padded batches are 53% pad, packed ones 1.3%, which halves the
FLOPs per real token (6.3 -> 3.3 M forward); real tokens/s 2.2x the padded baseline at 1 thread
(2.2x less CPU time), 1.3-1.9x at 2 threads (noisier: OpenMP threads wait on each other when other
jobs share the cores); TRL's default bfd packing 0.4-0.8x. The dense 4D mask costs nothing
measurable against plain causal attention (0.98-1.08x), and sdpa runs bool and float masks at the
same speed on CPU. ``tests/test_packing.py`` checks packed and one-by-one token log-probs and
gradients are equal: the proof that examples do not see each other.
"""
from __future__ import annotations

import bisect
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from typing import Literal

import datasets
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from lib.sft_trainer import RecipeSFTTrainer

IGNORE = -100  # label of tokens that carry no loss (transformers/TRL convention)


# --------------------------------------------------------------------------- tokenize
def tokenize(model, tokenizer, rows: list[dict], cfg: SFTConfig | None = None) -> list[dict]:
    """Prompt-completion rows -> ``[{"input_ids", "labels"}]``, tokenized by TRL exactly as it trains.

    Builds an ``SFTTrainer`` with ``packing=False`` and ``max_length=None`` (so TRL neither
    truncates nor drops anything: :func:`pack` truncates and counts) and reads back its
    prepared dataset. ``labels`` are ``-100`` on prompt tokens (TRL's completion-only loss for
    prompt-completion data). Note that building the trainer adds TRL's fused LM head to
    ``model.forward`` (as :func:`lib.training.fit_sft` does); plain calls are unchanged.
    """
    if not rows:
        raise ValueError("no rows to tokenize")
    args = _tokenize_args(cfg, len(rows))
    datasets.disable_progress_bars()
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, data_collator=_unused_collator)
    ds = trainer.train_dataset
    return [{"input_ids": list(ids), "labels": list(lab)} for ids, lab in zip(ds["input_ids"], ds["labels"])]


# Below this many rows TRL tokenizes in this process; above, in worker processes (``dataset_num_proc``).
# Tiny's mid-training set (17.7k rows) took 11.1 s in one process and 7.5 s in two on 2 cores, the
# same tokens; a few hundred rows do not pay for starting the workers.
PARALLEL_TOKENIZE_ROWS = 4096


def tokenize_workers(n_rows: int, cpus: int | None = None) -> int | None:
    """Processes TRL's tokenizing ``map`` runs in: None (this process) for small sets, else one per
    CPU (at most 8, and one per 4,096 rows)."""
    if n_rows < PARALLEL_TOKENIZE_ROWS:
        return None
    cpus = cpus if cpus is not None else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    n = min(cpus or 1, 8, n_rows // PARALLEL_TOKENIZE_ROWS)
    return n if n > 1 else None


def _tokenize_args(cfg: SFTConfig | None, n_rows: int = 0) -> SFTConfig:
    if cfg is None:
        cfg = SFTConfig(output_dir=tempfile.gettempdir(), report_to="none", use_cpu=True, bf16=False,
                        activation_checkpointing=False, gradient_checkpointing=None)
    num_proc = cfg.dataset_num_proc if cfg.dataset_num_proc is not None else tokenize_workers(n_rows)
    return dataclasses.replace(cfg, packing=False, padding_free=False, max_length=None, shuffle_dataset=False,
                               dataset_kwargs=None, dataset_num_proc=num_proc)


def _unused_collator(batch):  # a custom collator keeps TRL from touching the tokenizer's pad token
    raise RuntimeError("the tokenizing trainer is never trained")


# --------------------------------------------------------------------------- pack
@dataclass(frozen=True)
class PackedRow:
    """One row: its examples back to back. ``example_ids`` index the list given to :func:`pack`."""
    input_ids: list[int]
    labels: list[int]
    seq_lengths: list[int]
    example_ids: list[int]


@dataclass(frozen=True)
class PackStats:
    """What packing did. ``fill`` = kept tokens / (rows x max_length)."""
    n_examples: int
    n_rows: int
    max_length: int
    tokens: int                 # tokens kept (the real tokens a pass over the rows trains on)
    n_truncated: int            # examples longer than max_length, cut to max_length (start kept)
    tokens_truncated: int       # tokens cut off those examples
    n_without_loss: int         # examples with no label left (e.g. a prompt alone fills max_length); kept, counted
    fill: float
    n_eos_dropped: int = 0      # examples whose closing EOS was dropped (the keep_eos=false ablation)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pack(examples: list[dict], max_length: int, *, drop_eos_id: int | None = None) -> tuple[list[PackedRow], PackStats]:
    """Best-fit-decreasing packing of whole examples into rows of at most ``max_length`` tokens.

    ``examples``: dicts with ``input_ids`` and ``labels`` (same length; ``-100`` = no loss).
    Longest first (ties by input order), each into the fullest row it still fits, else a new
    row: deterministic, and rows come out nearly full (BFD uses at most 11/9 OPT + 1 bins).
    Every example appears in exactly one row; longer ones are truncated to ``max_length``
    (start kept) and counted. Returns the rows (in creation order) and the statistics.

    ``drop_eos_id``: an example whose last token is this id loses it (token and label), and is
    counted in ``n_eos_dropped`` -- the ``mid_train.keep_eos: false`` ablation. None keeps all.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    items, n_trunc, tok_trunc, no_loss, no_eos = [], 0, 0, 0, 0
    for i, ex in enumerate(examples):
        ids, lab = list(ex["input_ids"]), list(ex["labels"])
        if len(ids) != len(lab):
            raise ValueError(f"example {i}: {len(ids)} input_ids but {len(lab)} labels")
        if drop_eos_id is not None and len(ids) > 1 and ids[-1] == drop_eos_id:
            ids, lab = ids[:-1], lab[:-1]
            no_eos += 1
        if not ids:
            raise ValueError(f"example {i} is empty")
        if len(ids) > max_length:
            n_trunc += 1
            tok_trunc += len(ids) - max_length
            ids, lab = ids[:max_length], lab[:max_length]
        if all(t == IGNORE for t in lab[1:]):  # the first label is masked in a row anyway
            no_loss += 1
        items.append((i, ids, lab))

    rows: list[list[int]] = []          # example indices per row
    used: list[int] = []                # tokens per row
    free: list[tuple[int, int]] = []    # sorted (space left, row) of rows that can still take something
    for i, ids, _ in sorted(items, key=lambda it: (-len(it[1]), it[0])):
        n = len(ids)
        k = bisect.bisect_left(free, (n, -1))  # the row with the least space that still fits n
        if k < len(free):
            space, r = free.pop(k)
        else:
            space, r = max_length, len(rows)
            rows.append([])
            used.append(0)
        rows[r].append(i)
        used[r] += n
        if space - n > 0:
            bisect.insort(free, (space - n, r))

    by_id = {i: (ids, lab) for i, ids, lab in items}
    out = []
    for members in rows:
        ids = [t for i in members for t in by_id[i][0]]
        lab = [t for i in members for t in by_id[i][1]]
        out.append(PackedRow(ids, lab, [len(by_id[i][0]) for i in members], list(members)))
    tokens = sum(used)
    stats = PackStats(n_examples=len(examples), n_rows=len(out), max_length=max_length, tokens=tokens,
                      n_truncated=n_trunc, tokens_truncated=tok_trunc, n_without_loss=no_loss, n_eos_dropped=no_eos,
                      fill=tokens / (len(out) * max_length) if out else 0.0)
    return out, stats


def rows_dataset(rows: list[PackedRow]) -> Dataset:
    """The rows as a ``datasets.Dataset`` with TRL's packed columns (``input_ids, labels, seq_lengths``)."""
    return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows],
                              "seq_lengths": [r.seq_lengths for r in rows]})


# --------------------------------------------------------------------------- collate
@dataclass
class PackedCollator:
    """Packed rows -> ``input_ids, labels, position_ids`` and a 4D block-diagonal causal ``attention_mask``.

    Usable as the ``data_collator`` of TRL's ``SFTTrainer`` / transformers' ``Trainer``. Each
    feature needs ``input_ids``, ``labels`` and ``seq_lengths`` (a row from :func:`pack`, or
    TRL's own bfd-packed dataset); without ``seq_lengths`` a feature is one example.

    Rows are right-padded to the longest row of the batch (or ``pad_to_multiple_of``). Pad
    tokens form one more segment of their own (positions 0, 1, ...; label -100): they see only
    each other, so no attention row is empty (an all-masked row gives NaN in sdpa).

    mask:
        ``"4d"``: ``attention_mask`` of shape ``[batch, 1, L, L]`` (True/0.0 = may attend).
        Safe in any forward call, cache or not. ``"none"``: no ``attention_mask``, only
        ``position_ids``; transformers then infers the blocks from where positions restart
        (``masking_utils.find_packed_sequence_indices``) but only when no cache is built
        (``use_cache=False``, as TRL's trainer sets) -- the path flash-attention kernels need.
    mask_dtype:
        ``torch.bool`` for sdpa (smaller; True = attend). Eager attention adds the mask to the
        scores, so it needs a float dtype (the model's): 0 = attend, ``finfo.min`` = masked.
        :func:`mask_dtype_for` picks it from a model.
    """
    pad_token_id: int
    mask: Literal["4d", "none"] = "4d"
    mask_dtype: torch.dtype = torch.bool
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"
    _causal: dict = field(default_factory=dict, repr=False)  # cached tril per length

    def __post_init__(self):
        if self.mask not in ("4d", "none"):
            raise ValueError(f"mask must be '4d' or 'none', got {self.mask!r}")

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lens = [len(f["input_ids"]) for f in features]
        L = max(lens)
        if self.pad_to_multiple_of:
            L = -(-L // self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(features)
        input_ids = torch.full((B, L), self.pad_token_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE, dtype=torch.long)
        position_ids = torch.empty((B, L), dtype=torch.long)
        segment = torch.empty((B, L), dtype=torch.long)
        for b, f in enumerate(features):
            n = lens[b]
            seq = list(f.get("seq_lengths") or [n])
            if sum(seq) != n:
                raise ValueError(f"row {b}: seq_lengths sum to {sum(seq)} but the row has {n} tokens")
            input_ids[b, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[b, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            if L > n:
                seq.append(L - n)  # the pad tail: one segment of its own
            lengths = torch.as_tensor(seq)
            starts = torch.cumsum(lengths, 0) - lengths
            segment[b] = torch.repeat_interleave(torch.arange(len(seq)), lengths)
            position_ids[b] = torch.arange(L) - torch.repeat_interleave(starts, lengths)
        labels[position_ids == 0] = IGNORE  # no example predicts the first token of the next one
        out = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
        if self.mask == "4d":
            out["attention_mask"] = self.block_mask(segment)
        return out

    def block_mask(self, segment: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` segment ids -> ``[B, 1, L, L]`` causal mask within each segment."""
        L = segment.shape[1]
        if L not in self._causal:
            self._causal[L] = torch.ones(L, L, dtype=torch.bool).tril()
        allowed = (segment[:, :, None] == segment[:, None, :]) & self._causal[L]
        allowed = allowed[:, None]
        if self.mask_dtype == torch.bool:
            return allowed
        additive = torch.zeros(allowed.shape, dtype=self.mask_dtype)
        return additive.masked_fill_(~allowed, torch.finfo(self.mask_dtype).min)


def mask_dtype_for(model) -> torch.dtype:
    """Bool masks for sdpa; an additive float mask in the model's dtype for eager attention."""
    return torch.bool if _attn_impl(model) == "sdpa" else model.dtype


def collator_for(model, tokenizer) -> PackedCollator:
    """The collator that fits ``model``'s attention.

    sdpa and eager take the 4D mask. Flash-attention and flex kernels take no dense mask: they
    get ``position_ids`` only and transformers turns the restarts into varlen boundaries or a
    block mask (the path for long rows on GPU, where a dense ``L x L`` mask would be large).
    """
    impl = _attn_impl(model)
    mode = "4d" if impl in ("sdpa", "eager") else "none"
    return PackedCollator(pad_token_id=tokenizer.pad_token_id, mask=mode, mask_dtype=mask_dtype_for(model))


def _attn_impl(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


# --------------------------------------------------------------------------- train
class PackedSFTTrainer(RecipeSFTTrainer):
    """The recipe's SFTTrainer (:mod:`lib.sft_trainer`: the loss-path switch), counting real tokens in packed batches.

    Trainer's ``include_num_input_tokens_seen="non_padding"`` and TRL's ``num_tokens`` metric
    both sum a 2D ``attention_mask``; a 4D mask sums to nonsense, so count tokens that are not
    padding instead (pad only ever fills the tail of a row).
    """

    def _track_num_input_tokens(self, inputs):
        if self.args.include_num_input_tokens_seen == "no":
            return
        n = self._real_tokens(inputs) if self.args.include_num_input_tokens_seen == "non_padding" \
            else inputs["input_ids"].numel()
        n = torch.as_tensor(n, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(n).sum().item()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        before = self._total_train_tokens
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if self.model.training:
            self._total_train_tokens = before + int(self._real_tokens(inputs))
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return out

    def _real_tokens(self, inputs) -> torch.Tensor:
        return (inputs["input_ids"] != self.data_collator.pad_token_id).sum()


def packed_trainer(model, tokenizer, rows: list[dict], cfg: SFTConfig, callbacks=None, *,
                   mask: Literal["4d", "none"] | None = None, keep_eos: bool = True) -> tuple[PackedSFTTrainer, PackStats]:
    """A :class:`PackedSFTTrainer` over prompt-completion ``rows``, packed, and the packing statistics.

    ``cfg.max_length`` is the row length and ``cfg.per_device_train_batch_size`` counts rows
    (as in TRL's packing), so a step sees up to batch x max_length real tokens. ``mask``
    overrides :func:`collator_for`'s choice. ``keep_eos=False`` drops every example's closing
    EOS (:func:`pack`'s ``drop_eos_id``). Training it is :func:`lib.training.fit_packed`'s job.
    """
    if not rows:
        raise ValueError("no training rows: the stage's data subset is empty")
    if cfg.max_length is None:
        raise ValueError("packing needs cfg.max_length (the row length)")
    examples = tokenize(model, tokenizer, rows, cfg)
    packed, stats = pack(examples, cfg.max_length, drop_eos_id=None if keep_eos else tokenizer.eos_token_id)
    collator = collator_for(model, tokenizer)
    if mask is not None:
        collator.mask = mask
    args = dataclasses.replace(cfg, packing=False, padding_free=False, remove_unused_columns=False,
                               dataset_kwargs={"skip_prepare_dataset": True})
    datasets.disable_progress_bars()
    trainer = PackedSFTTrainer(model=model, args=args, train_dataset=rows_dataset(packed),
                               processing_class=tokenizer, data_collator=collator, callbacks=callbacks)
    return trainer, stats
