"""Write ``data/rehearsal/``: the inputs of ``params/rehearsal.yaml``, in the schemas of the real ones.

    python tools/make_rehearsal_data.py            # (re)write every file; deterministic
    python tools/make_rehearsal_data.py --check    # exit 1 when the committed files differ

The rehearsal runs the real-scale path (``params/phi4-mini.yaml``) on a CPU, so its inputs have
the *shape* of the paper's and only their size and content are small:

* ``openr1_math.jsonl`` - rows of open-r1/OpenR1-Math-220k (default config): ``problem, solution,
  answer, problem_type, question_type, source, uuid, is_reasoning_complete, generations,
  correctness_math_verify, correctness_llama, finish_reasons, correctness_count, messages``.
  Like the real set, a row carries 2-4 reasoning traces in ``generations`` and some of them are
  wrong (``correctness_math_verify`` false): the verifier rejects those and the LLM judge is asked.
* ``openthoughts_metadata.jsonl`` - rows of open-thoughts/OpenThoughts-114k (``metadata`` config):
  ``problem, deepseek_reasoning, deepseek_solution, ground_truth_solution, domain, source,
  test_cases, starter_code``; math rows and some code rows (the source's ``where: {domain: math}``
  keeps the math ones; the answer is the last ``\\boxed{}`` of ``ground_truth_solution``).
* ``math500.jsonl``, ``aime24.jsonl`` - small evaluation sets (``id, problem, answer, subject,
  level``) standing in for MATH-500 and AIME 2024, from the generator's test split (disjoint from
  the training problems, so decontamination keeps every training row).
* ``model/`` - a tiny randomly initialised causal LM with its tokenizer and chat template, saved in
  bfloat16 as hub checkpoints are: the student's ``model.init`` and the checkpoint the local
  server (``transformers serve``) hosts as teacher, judge and tagger.

The problems and traces come from the synthetic generator and the embedded teacher
(:mod:`lib.problems`, :mod:`lib.teachers.embedded`); only their layout is the hub's.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "data" / "rehearsal"
SEED = 20250430
N_OPENR1, N_OT_MATH, N_OT_CODE = 100, 40, 12
N_MATH500, N_AIME = 24, 8
_NS = uuid.UUID("6f1c1d3e-1b5a-4c1e-9a55-2504212330aa")


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows), encoding="utf-8")


def _solution(p) -> str:
    """A worked solution ending in the boxed answer (MATH style)."""
    return f"Working through the {len(p.steps)} steps of the computation, the answer is $\\boxed{{{p.answer}}}$."


def openr1_rows(problems, teacher, rng: random.Random) -> list[dict]:
    from lib.answers import last_boxed

    rows = []
    for p in problems:
        n = rng.choice([2, 2, 3, 4])
        gens = [teacher.rollout(p, i, seed=SEED).text for i in range(n)]
        correct = [last_boxed(g) == p.answer for g in gens]
        rows.append({
            "problem": p.problem,
            "solution": _solution(p),
            "answer": p.answer,
            "problem_type": {"algebra": "Algebra", "arithmetic": "Algebra", "number_theory": "Number Theory",
                             "counting_probability": "Combinatorics", "geometry": "Geometry"}[p.domain],
            "question_type": "math-word-problem",
            "source": "olympiads" if p.level >= 3 else "cn_contest",
            "uuid": str(uuid.uuid5(_NS, p.id)),
            "is_reasoning_complete": [True] * n,
            "generations": gens,
            "correctness_math_verify": correct,
            "correctness_llama": None,
            "finish_reasons": None,
            "correctness_count": sum(correct),
            "messages": [{"role": "user", "content": p.problem},
                         {"role": "assistant", "content": gens[correct.index(True)] if any(correct) else gens[0]}],
        })
    return rows


def openthoughts_rows(math_problems, teacher, n_code: int) -> list[dict]:
    rows = []
    for p in math_problems:
        trace = teacher.rollout(p, 0, seed=SEED + 1).text
        reasoning, _, solution = trace.partition("</think>")
        rows.append({
            "problem": p.problem,
            "deepseek_reasoning": reasoning.replace("<think>", "").strip(),
            "deepseek_solution": solution.strip(),
            "ground_truth_solution": _solution(p),
            "domain": "math",
            "source": "numina_math",
            "test_cases": None,
            "starter_code": None,
        })
    for i in range(n_code):
        rows.append({
            "problem": f"Write a function that returns the sum of the first {i + 3} positive integers.",
            "deepseek_reasoning": "The sum of 1..n is n(n+1)/2.",
            "deepseek_solution": f"```python\ndef f():\n    return {(i + 3) * (i + 4) // 2}\n```",
            "ground_truth_solution": None,
            "domain": "code",
            "source": "taco",
            "test_cases": json.dumps({"inputs": [""], "outputs": [str((i + 3) * (i + 4) // 2)]}),
            "starter_code": "",
        })
    # the real set interleaves domains; so do we (a `where` filter must really filter)
    random.Random(SEED).shuffle(rows)
    return rows


def eval_rows(problems, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}/{i}", "problem": p.problem, "answer": p.answer, "subject": p.domain, "level": p.level}
            for i, p in enumerate(problems)]


def write_model(out: Path, texts: list[str]) -> None:
    import torch

    from lib import model as modellib
    from lib.params import Model
    from lib.tokenizer import train_tokenizer

    torch.manual_seed(SEED)
    tok = train_tokenizer(texts, vocab_size=640, number_tokens=99)
    m = Model(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
              max_position_embeddings=2048, vocab_size=640, number_tokens=99)
    model = modellib.build_scratch(m, tok).to(torch.bfloat16)
    modellib.save(model, tok, out)


def write_all(out: Path) -> None:
    from lib import problems
    from lib.teachers.embedded import EmbeddedTeacher

    out.mkdir(parents=True, exist_ok=True)
    train = problems.generate(N_OPENR1 + N_OT_MATH, seed=SEED, split="train")
    test = problems.generate(N_MATH500 + N_AIME, seed=SEED, split="test")
    teacher = EmbeddedTeacher(error_rate=0.25, seed=SEED, verbosity="compact", repeat_rate=0.0)
    r1 = openr1_rows(train[:N_OPENR1], teacher, random.Random(SEED))
    ot = openthoughts_rows(train[N_OPENR1:], teacher, N_OT_CODE)
    _jsonl(out / "openr1_math.jsonl", r1)
    _jsonl(out / "openthoughts_metadata.jsonl", ot)
    _jsonl(out / "math500.jsonl", eval_rows(test[:N_MATH500], "math500"))
    _jsonl(out / "aime24.jsonl", eval_rows(test[N_MATH500:], "aime24"))
    texts = [r["problem"] for r in r1] + [g for r in r1 for g in r["generations"]] + [r["problem"] for r in ot]
    write_model(out / "model", texts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare a fresh write with data/rehearsal; exit 1 if they differ")
    args = ap.parse_args(argv)
    if not args.check:
        if OUT.exists():
            shutil.rmtree(OUT)
        write_all(OUT)
        print(f"wrote {OUT}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "rehearsal"
        write_all(fresh)
        cmp = filecmp.dircmp(fresh, OUT)
        differ = cmp.diff_files + cmp.left_only + cmp.right_only
        for sub in cmp.subdirs.values():
            differ += [f"{sub.left}/{f}" for f in sub.diff_files + sub.left_only + sub.right_only]
    if differ:
        print(f"data/rehearsal differs from a fresh write: {differ}; run python tools/make_rehearsal_data.py")
        return 1
    print("data/rehearsal matches a fresh write")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
