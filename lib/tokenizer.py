"""A byte-level BPE tokenizer trained from scratch on the synthetic corpus.

Numbers: with ``number_tokens=N`` (the embedded default, ``params/tiny.yaml``: 199) every integer
``0..N`` is one token, with and without its leading space (``" 47"`` -> ``Ġ47``), and longer
digit runs are cut into groups of up to three digits first, as the cl100k/o200k and Llama-3
tokenizers do. The tiny model then gets its arithmetic right far more often, and mid-training
jumps (LOG.md, 2026-11-29 evening, "Whole-number tokens"). ``number_tokens=0`` splits digits one
per token (``Digits(individual_digits=True)``), the earlier scheme.

Words and the teacher's recurring phrases merge into few tokens, which keeps long reasoning
cheap. Byte-level fallback means any text (real benchmarks included) encodes without unknowns.

Special tokens: ``<|endoftext|>`` (BOS/document separator), ``<|pad|>`` (padding, distinct
from EOS so EOS is never masked out of the loss: docs/stack_notes.md), the turn markers and
``<|end|>`` (end of turn = EOS). ``<think>``/``</think>`` are ordinary added tokens, not
special, so decoding with ``skip_special_tokens=True`` (as GRPO does) keeps them.
"""
from __future__ import annotations

import json
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lib.chat import CHAT_TEMPLATE, END_OF_TURN, THINK_CLOSE, THINK_OPEN

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", END_OF_TURN]
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]
_ALPHABET = pre_tokenizers.ByteLevel.alphabet()


def number_token_strings(number_tokens: int) -> list[str]:
    """The byte-level strings that must be single tokens: ``"0".."N"`` and ``"Ġ0".."ĠN"``."""
    return [prefix + str(n) for prefix in ("", "Ġ") for n in range(number_tokens + 1)]


def train_tokenizer(texts: Iterable[str], vocab_size: int, number_tokens: int = 0) -> PreTrainedTokenizerFast:
    """Train BPE on ``texts`` and wrap it as a transformers tokenizer with the chat template.

    ``vocab_size`` counts everything but ``<think>``/``</think>``; with ``number_tokens=N`` the
    BPE merges get ``vocab_size - 2 (N + 1)`` of it and the integers ``0..N`` the rest.
    """
    if number_tokens < 0:
        raise ValueError(f"number_tokens must be >= 0, got {number_tokens}")
    reserved = len(number_token_strings(number_tokens)) if number_tokens else 0
    floor = len(_ALPHABET) + len(SPECIAL_TOKENS)
    if vocab_size - reserved < floor:
        raise ValueError(f"vocab_size={vocab_size} leaves {vocab_size - reserved} entries for BPE after {reserved} "
                         f"number tokens, below the {floor} bytes and special tokens it needs: raise "
                         f"model.vocab_size to at least {floor + reserved} or lower model.number_tokens")
    tok = Tokenizer(models.BPE())
    digits = (pre_tokenizers.Split(Regex(r" ?\d{1,3}"), behavior="isolated") if number_tokens
              else pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([digits, pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - reserved,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if number_tokens:
        tok = _with_number_tokens(tok, number_tokens)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token=END_OF_TURN,
        pad_token="<|pad|>",
        unk_token=None,
        padding_side="left",  # generation pads on the left; trainers set their own side
        additional_special_tokens=SPECIAL_TOKENS[2:5],
    )
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1_000_000
    return fast


def _with_number_tokens(tok: Tokenizer, number_tokens: int) -> Tokenizer:
    """Add the missing ``0..N`` strings to the BPE vocabulary and let whole pieces win.

    ``ignore_merges`` (as in Llama-3's tokenizer) makes BPE take a pre-token that is itself in
    the vocabulary as one token before trying merges, so no merge chains are needed for them.
    """
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for s in number_token_strings(number_tokens):
        if s not in vocab:
            vocab[s] = next_id
            next_id += 1
    spec["model"]["ignore_merges"] = True
    return Tokenizer.from_str(json.dumps(spec))
