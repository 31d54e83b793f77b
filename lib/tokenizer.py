"""A byte-level BPE tokenizer trained from scratch on the synthetic corpus.

Digits are always split one per token (``Digits(individual_digits=True)``): a tiny model
learns arithmetic on digits far more easily than on arbitrary number chunks, while words
and the teacher's recurring phrases merge into few tokens, which keeps long reasoning cheap.
Byte-level fallback means any text (real benchmarks included) encodes without unknowns.

Special tokens: ``<|endoftext|>`` (BOS/document separator), ``<|pad|>`` (padding, distinct
from EOS so EOS is never masked out of the loss: STACK_NOTES.md), the turn markers and
``<|end|>`` (end of turn = EOS). ``<think>``/``</think>`` are ordinary added tokens, not
special, so decoding with ``skip_special_tokens=True`` (as GRPO does) keeps them.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lib.chat import CHAT_TEMPLATE, END_OF_TURN, THINK_CLOSE, THINK_OPEN

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", END_OF_TURN]
THINK_TOKENS = [THINK_OPEN, THINK_CLOSE]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train BPE on ``texts`` and wrap it as a transformers tokenizer with the chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
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
