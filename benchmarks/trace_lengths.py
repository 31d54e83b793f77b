"""Length of the embedded teacher's traces per verbosity: the table in ``EmbeddedTeacher``'s docstring.

    .venv/bin/python benchmarks/trace_lengths.py

A measurement, not a speed test: mean / p90 / max characters and tokens of 1,600 traces
(200 problems x 8) for each verbosity. Takes a few seconds.
"""
from __future__ import annotations

import json

from lib.chat import user_content
from lib.problems import generate
from lib.teachers import VERBOSITIES, EmbeddedTeacher
from lib.tokenizer import train_tokenizer


def trace_lengths(n_problems: int = 200, n: int = 8, seed: int = 11, vocab_size: int = 1024) -> dict:
    """Mean / p90 / max of chars and tokens per verbosity (the table in EmbeddedTeacher's docstring).

    Tokens come from a tokenizer trained (lib.tokenizer) on prompts and traces of these problems,
    so the teacher's recurring phrases merge as they would in the tiny run. Takes a few seconds.
    """
    ps = generate(n_problems, seed=seed)
    texts = {v: [r.text for row in EmbeddedTeacher(verbosity=v).generate(ps, n) for r in row] for v in VERBOSITIES}
    tok = train_tokenizer([user_content(p.problem) for p in ps] + [t for ts in texts.values() for t in ts], vocab_size)

    def stats(xs: list[int]) -> dict:
        xs = sorted(xs)
        return {"mean": round(sum(xs) / len(xs)), "p90": xs[int(0.9 * len(xs))], "max": xs[-1]}

    return {v: {"chars": stats([len(t) for t in ts]),
                "tokens": stats([len(tok(t, add_special_tokens=False)["input_ids"]) for t in ts])}
            for v, ts in texts.items()}


if __name__ == "__main__":
    print(json.dumps(trace_lengths(), indent=2))
