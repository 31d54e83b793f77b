"""The training workload shared by bench_packing.py and bench_training.py: the tiny model of
params/tiny.yaml, a tokenizer trained on the problems, and distilled-teacher-like answers of
varied length (so padding and packing differ as they do on real data)."""
from __future__ import annotations

import copy
import random

import torch

from lib import chat, packing, problems
from lib.model import build_scratch
from lib.params import load
from lib.paths import PARAMS_DIR
from lib.tokenizer import train_tokenizer


def quiet(threads: int) -> None:
    """Set torch's thread count and silence datasets' progress bars and transformers' logging."""
    import datasets
    import transformers

    torch.set_num_threads(threads)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()


def long_cot(p: problems.Problem, passes: int) -> str:
    """A distilled-teacher-like answer: the solution, then ``passes - 1`` re-checks of every step."""
    steps = "\n".join(p.step_texts)
    checks = "".join(f"\nWait, let me verify that again.\n{steps}" for _ in range(passes - 1))
    return f"<think>\n{steps}{checks}\n</think>\n\\boxed{{{p.answer}}}"


def tiny_workload(n_examples: int):
    """``(params, rows, tokenizer, base model, tokenized examples)`` for ``n_examples`` problems, seeded."""
    P = load(PARAMS_DIR / "tiny.yaml")
    ps = problems.generate(n_examples, seed=0)
    rng = random.Random(0)
    rows = [chat.conversation(p.problem, long_cot(p, rng.randint(1, 4))) for p in ps]
    tok = train_tokenizer([chat.user_content(p.problem) + "\n" + problems.cot_solution(p) for p in ps[:400]],
                          P.model.vocab_size)
    torch.manual_seed(0)
    base = build_scratch(P.model, tok)
    examples = packing.tokenize(copy.deepcopy(base), tok, rows)
    return P, rows, tok, base, examples
