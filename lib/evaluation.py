"""Evaluate a checkpoint on an evaluation set, the paper's way, and summarise it.

One code path for every number in the report: the shared sampler (same prompt format as
training), the shared verifier (the same check the RL reward uses), and lib.metrics.

Protocol (the paper, Evaluation): ``n_samples`` completions per problem at T=0.6, top-p 0.95.
pass@1 is the mean of the first ``n_runs`` samples treated as independent runs (paper: 3),
with a bootstrap interval over problems; pass@k uses all ``n_samples`` (unbiased estimator);
cons@k is a majority vote over the first k samples, equivalent answers grouped by the checker.

**Verified pass@1** also asks that the work be right: a sample counts when its answer is correct
*and* none of the arithmetic statements it writes (``a op b = v``, ``a mod m = r``, ``gcd``; read
by :func:`lib.problems.arithmetic_slips`) is false. On the synthetic domain, whose answers are
small, a right answer reached through false arithmetic is often a lucky guess; the **lucky-guess
share** is the share of correct samples with at least one false statement. A sample that writes no
checkable statement is not held against (its verified value is its correctness).
"""
from __future__ import annotations

import os

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import eval_sets, metrics, problems, sampling
from lib.teachers import EndpointTeacher
from lib.judges import LLMJudge, RuleJudge
from lib.verify import Verifier


def make_verifier(v, judge_backend=None) -> Verifier:
    """The shared verifier from params ``verify`` (workers, deadline, second opinion, extraction policy).

    ``second_opinion: llm`` asks the OpenAI-compatible judge of ``verify.judge_*`` (the paper
    re-checks math-verify's rejections with an LLM judge); ``judge_backend``, any object with
    ``complete(prompt) -> str``, replaces that server (tests, an in-process model).
    """
    if v.second_opinion == "llm":
        if judge_backend is None:
            judge_backend = EndpointTeacher(v.judge_base_url, v.judge_model,
                                            api_key=os.environ.get(v.judge_api_key_env, "EMPTY"),
                                            max_concurrency=v.judge_max_concurrency, timeout_s=v.judge_timeout_s,
                                            max_retries=v.judge_max_retries, temperature=0.0, max_tokens=v.judge_max_tokens,
                                            progress=False)
        judge = LLMJudge(judge_backend.complete, name=getattr(judge_backend, "name", "llm"))
        return Verifier(workers=v.workers, timeout_s=v.timeout_s, judge=judge, extract=v.extract,
                        judge_concurrency=v.judge_max_concurrency, judge_max_failure_share=v.judge_max_failure_share)
    judge = RuleJudge() if v.second_opinion == "rule" else None
    return Verifier(workers=v.workers, timeout_s=v.timeout_s, judge=judge, extract=v.extract)


@dataclass
class EvalSet:
    """Problems to evaluate on: dicts with ``id, problem, answer`` (+ optional ``domain``, ``level``)."""
    name: str
    items: list[dict]
    multiple_choice: bool = False
    source: str = ""

    def __post_init__(self):
        if not self.items:
            raise ValueError(f"evaluation set '{self.name}' ({self.source}) has no problems")


def synthetic_test_set(n: int, seed: int, domains, levels) -> EvalSet:
    """The held-out synthetic problems (the generator's test split, disjoint from training)."""
    items = [{"id": p.id, "problem": p.problem, "answer": p.answer, "domain": p.domain, "level": p.level,
              "difficulty": p.difficulty}
             for p in problems.generate(n, seed=seed, split="test", domains=domains, levels=levels)]
    return EvalSet("synthetic", items, source="lib.problems test split")


def load_eval_set(spec: str, *, n_test: int, seed: int, domains, levels, limit: int | None = None) -> EvalSet:
    """``synthetic``, a preset name from :data:`lib.eval_sets.PRESETS` (hub), or a local .jsonl path."""
    if spec == "synthetic":
        es = synthetic_test_set(n_test, seed, domains, levels)
    elif spec.endswith((".jsonl", ".json")):
        path = eval_sets.local_file(spec)
        if path is None:
            raise FileNotFoundError(f"evaluation set file not found: {spec} (from eval.benchmarks; relative paths are "
                                    "read from the current folder or the repository root)")
        es = EvalSet(path.stem, eval_sets.load_jsonl(path), source=str(path))
    elif spec in eval_sets.PRESETS:
        preset = eval_sets.PRESETS[spec]
        es = EvalSet(spec, eval_sets.load_preset(spec), multiple_choice=preset.transform is eval_sets.gpqa_to_choice,
                     source=preset.path)
    else:
        raise ValueError(f"unknown evaluation set '{spec}': use 'synthetic', a .jsonl path, "
                         f"or one of the presets {sorted(eval_sets.PRESETS)}")
    if limit:
        es.items = es.items[:limit]
    return es


@dataclass(frozen=True)
class HeldoutItem:
    """A held-out problem from an evaluation set, shaped like :class:`lib.problems.Problem` for
    :func:`quick_accuracy` (id, problem, answer, domain, level)."""
    id: str
    problem: str
    answer: str
    domain: str | None = None
    level: int | None = None


class NoHeldoutSetError(ValueError):
    """A stage on real data has no open-answer set in ``eval.benchmarks`` to measure itself on."""


def stage_heldout(problems_section, eval_section, *, seed: int, limit: int | None = None) -> tuple[str, list]:
    """``(name, problems)`` a training stage measures itself on (its key metric, greedy).

    Where the training data is synthetic (``problems.source: synthetic``) that is the generator's
    held-out test split. On real data it is the first set of ``eval.benchmarks`` with open
    answers (real scale: MATH-500); a synthetic split says nothing about a model trained on
    OpenR1-Math. ``limit``: the first problems only.
    """
    spec = heldout_spec(problems_section, eval_section)
    if spec == "synthetic":
        items = problems.generate(problems_section.n_test, seed=seed, split="test", domains=problems_section.domains,
                                  levels=problems_section.levels)
        return "synthetic", items[:limit] if limit else items
    es = load_eval_set(spec, n_test=problems_section.n_test, seed=seed, domains=problems_section.domains,
                       levels=problems_section.levels, limit=limit)
    return es.name, [HeldoutItem(str(it["id"]), it["problem"], str(it["answer"]), it.get("domain"),
                                 _level_or_none(it.get("level"))) for it in es.items]


def _level_or_none(v) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return int(v) if isinstance(v, str) and v.strip().isdigit() else None


def heldout_spec(problems_section, eval_section) -> str:
    """Which set :func:`stage_heldout` reads ('synthetic', a preset or a .jsonl), without loading it;
    :class:`NoHeldoutSetError` when real data has no open-answer set in ``eval.benchmarks``."""
    if problems_section.source == "synthetic":
        return "synthetic"
    for spec in eval_section.benchmarks:
        preset = eval_sets.PRESETS.get(spec)
        if spec != "synthetic" and not (preset is not None and preset.transform is eval_sets.gpqa_to_choice):
            return spec
    raise NoHeldoutSetError(
        f"problems.source is {problems_section.source!r} (real data), so each stage measures itself on the first "
        f"open-answer set of eval.benchmarks, and {list(eval_section.benchmarks)} has none; add one (math500, a "
        ".jsonl of id/problem/answer rows)")


def evaluate(sampler, es: EvalSet, verifier: Verifier, *, n_samples: int, seed: int) -> pd.DataFrame:
    """Sample ``n_samples`` completions per problem (any :mod:`lib.sampling` sampler) and check
    each; one record per completion, with its arithmetic statements and how many are false."""
    completions = sampler.sample([it["problem"] for it in es.items], n=n_samples, seed=seed,
                                 multiple_choice=es.multiple_choice)
    pairs = [(it["answer"], c.text) for it, cs in zip(es.items, completions) for c in cs]
    checks = verifier.check_many(pairs)
    rows, k = [], 0
    for it, cs in zip(es.items, completions):
        for j, c in enumerate(cs):
            ch = checks[k]
            k += 1
            statements, false = problems.arithmetic_slips(c.text)
            rows.append({"id": it["id"], "sample": j, "domain": it.get("domain"), "level": it.get("level"),
                         "difficulty": it.get("difficulty"), "gold": it["answer"], "answer": ch.answer,
                         "correct": ch.equal, "checker": ch.checker, "reason": ch.reason,
                         "n_tokens": c.n_tokens, "finished": c.finished,
                         "repetitive": metrics.is_repetitive(c.text), "statements": statements,
                         "false_statements": false, "text": c.text})
    return pd.DataFrame(rows)


def _matrix(records: pd.DataFrame, column: str) -> list[list]:
    """Per problem (in first-seen order), the values of ``column`` ordered by sample index."""
    ordered = records.sort_values(["sample"], kind="stable")
    groups = ordered.groupby("id", sort=False)[column].apply(list)
    return [groups[i] for i in dict.fromkeys(records["id"])]


class RecordsError(ValueError):
    """Evaluation records lack a column the summary needs."""


def verified(records: pd.DataFrame) -> pd.Series:
    """Per record: correct (``True``) with no false arithmetic statement; ``None`` where the check
    itself was undecided (as ``correct``), ``False`` otherwise."""
    missing = {"correct", "false_statements"} - set(records.columns)
    if missing:
        raise RecordsError(f"evaluation records lack {sorted(missing)}: they come from lib.evaluation.evaluate, "
                           "which writes them; rerun the evaluation (an older records file has no arithmetic check)")
    ok = records["correct"].map(lambda c: None if c is None or pd.isna(c) else bool(c))
    return pd.Series([None if c is None else (c and f == 0) for c, f in zip(ok, records["false_statements"])],
                     index=records.index, dtype=object)


def lucky_share(records: pd.DataFrame) -> float | None:
    """Share of the correct records whose text has at least one false arithmetic statement; None
    when no record is correct."""
    right = records[records["correct"].eq(True)]
    return None if right.empty else float((right["false_statements"] > 0).mean())


def _per_problem(ids: list[str], matrix: list[list], runs: int) -> dict[str, float]:
    """Each problem's mean over its first ``runs`` samples (undecided counts as not correct)."""
    return {i: sum(x is not None and bool(x) for x in c[:runs]) / runs for i, c in zip(ids, matrix)}


def summarize(records: pd.DataFrame, verifier: Verifier, *, n_runs: int, seed: int = 0) -> dict:
    """pass@1 over runs (+CI), verified pass@1 and the lucky-guess share, pass@k curve, cons@k,
    by level, response stats; JSON-able."""
    records = records.assign(verified=verified(records))
    correct = _matrix(records, "correct")
    n = min(len(c) for c in correct)
    runs = min(n_runs, n)
    by_run = [[c[r] for c in correct] for r in range(runs)]
    pass1 = metrics.mean_pass1_over_runs(by_run, seed=seed).to_dict()
    checked = _matrix(records, "verified")
    verified_pass1 = metrics.mean_pass1_over_runs([[c[r] for c in checked] for r in range(runs)], seed=seed).to_dict()
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, n) if k <= n})
    pass_k = metrics.pass_at_k_curve(correct, ks)
    answers = _matrix(records, "answer")
    golds = [records.loc[records["id"] == i, "gold"].iloc[0] for i in dict.fromkeys(records["id"])]
    answers = [[a if isinstance(a, str) else None for a in row] for row in answers]
    cons_hits = {k: metrics.cons_per_problem(answers, golds, k, same_answer_batch=verifier.equivalent_many,
                                             is_correct_batch=lambda pairs: [c.equal is True
                                                                             for c in verifier.check_many(pairs)])
                 for k in ks}
    cons = {k: sum(h) / len(h) if h else float("nan") for k, h in cons_hits.items()}
    first_runs = records[records["sample"] < runs]
    by_level = {}
    if first_runs["level"].notna().any():
        by_level = {int(lv): float(g["correct"].eq(True).mean()) for lv, g in first_runs.groupby("level")}
    by_domain = {}
    if first_runs["domain"].notna().any():
        by_domain = {str(d): float(g["correct"].eq(True).mean()) for d, g in first_runs.groupby("domain")}
    ids = [str(i) for i in dict.fromkeys(records["id"])]
    return {
        "n_problems": len(correct),
        "n_samples": n,
        "pass1": pass1,
        # each problem's mean correctness over the pass@1 runs: what paired stage comparisons need
        "pass1_per_problem": _per_problem(ids, correct, runs),
        # the same with the work checked too (a right answer through false arithmetic counts as wrong)
        "verified_pass1": verified_pass1,
        "verified_pass1_per_problem": _per_problem(ids, checked, runs),
        "lucky_share": lucky_share(first_runs),
        "pass_at_k": {int(k): float(v) for k, v in pass_k.items()},
        "cons_at_k": {int(k): float(v) for k, v in cons.items()},
        # per problem, is the majority over all n samples right (1.0) or not: paired cons@n comparisons
        "cons_per_problem": {i: float(h) for i, h in zip(ids, cons_hits[n])},
        "pass1_by_level": by_level,
        # each problem's difficulty level (generator sets): paired comparisons on the hardest level alone
        "problem_level": ({str(i): int(lv) for i, lv in records.groupby("id", sort=False)["level"].first().items()
                           if pd.notna(lv)} if records["level"].notna().any() else {}),
        "pass1_by_domain": by_domain,
        "unverifiable": int(records["correct"].isna().sum()),
        "length": metrics.length_stats(records["n_tokens"].tolist()),
        "truncated_share": metrics.truncation_rate(records["finished"].tolist()),
        "repetitive_share": float(records["repetitive"].mean()),
    }


def quick_accuracy(model, tokenizer, items: list, verifier: Verifier, *, max_new_tokens: int, batch_size: int,
                   seed: int) -> tuple[pd.DataFrame, dict]:
    """Greedy accuracy on held-out problems: each training stage's at-a-glance check.

    ``items``: :class:`lib.problems.Problem` objects. Returns one record per problem and a
    summary (accuracy, by level, share finished with EOS, unverifiable count). The full
    sampled evaluation with intervals is stage 07.
    """
    completions = sampling.sample(model, tokenizer, [p.problem for p in items], n=1, temperature=0.0,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)
    checks = verifier.check_many([(p.answer, c[0].text) for p, c in zip(items, completions)])
    df = pd.DataFrame([{"id": p.id, "domain": p.domain, "level": p.level, "correct": ch.equal is True,
                        "unverifiable": ch.equal is None, "finished": c[0].finished, "n_tokens": c[0].n_tokens,
                        "completion": c[0].text} for p, c, ch in zip(items, completions, checks)])
    summary = {"accuracy": float(df.correct.mean()),
               "by_level": {int(k): float(v) for k, v in df.groupby("level")["correct"].mean().items()},
               "finished_share": float(df.finished.mean()), "unverifiable": int(df.unverifiable.sum()),
               "mean_tokens": float(df.n_tokens.mean()), "n": len(df)}
    return df, summary


def heldout_key(items: list, verify_section, device, *, max_new_tokens: int, **quick) -> dict:
    """What a :func:`quick_accuracy` result depends on besides the weights: the problems and their
    answers, the generation settings, the checker's settings, and where it ran (device type and CPU
    threads, which can change rounding and so a greedy token). ``{"key": hash of all that but the
    token budget, "max_new_tokens": the budget}``: a stage records it with its final result, and the
    next stage takes that result as its "before" (:func:`upstream_heldout`) instead of evaluating
    the same checkpoint again."""
    import hashlib
    import json

    import torch

    payload = {"items": [[str(p.id), p.problem, str(p.answer)] for p in items], "quick": quick,
               "verify": verify_section.model_dump(mode="json"), "device": torch.device(device).type,
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return {"key": digest, "max_new_tokens": int(max_new_tokens)}


def upstream_heldout(upstream_dir: Path, key: dict) -> dict | None:
    """The held-out summary the upstream stage measured on its final model (``heldout_after`` in its
    metrics.json) when it holds for ``key`` (:func:`heldout_key`); else None.

    It holds when everything but the token budget is the same and either the budgets are equal or
    the upstream's was smaller and every greedy answer finished within it (a larger budget then
    decodes the same tokens and stops at the same step). Valid because a stage saves the model it
    evaluated as its checkpoint and the next stage loads that checkpoint unchanged (the manifest
    checks its files on reuse); ``tests/test_evaluation.py`` checks that a reloaded checkpoint gives
    the same greedy answers."""
    import json

    from lib.artifacts import METRICS

    path = Path(upstream_dir) / METRICS
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    after, theirs = m.get("heldout_after"), m.get("heldout_after_key")
    if not (isinstance(after, dict) and isinstance(theirs, dict) and theirs.get("key") == key["key"]):
        return None
    budget = theirs.get("max_new_tokens")
    if budget == key["max_new_tokens"] or (isinstance(budget, int) and budget < key["max_new_tokens"]
                                           and after.get("finished_share") == 1.0):
        return after
    return None


def eos_rate(model, tokenizer, items: list, *, n: int, temperature: float, top_p: float, max_new_tokens: int,
             batch_size: int, seed: int) -> float:
    """Share of *sampled* answers that end with EOS within ``max_new_tokens`` (whether a model
    knows where to stop: what SFT must raise). ``items``: :class:`lib.problems.Problem` objects."""
    completions = sampling.sample(model, tokenizer, [p.problem for p in items], n=n, temperature=temperature,
                                  top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
                                  progress=False)
    flat = [c.finished for cs in completions for c in cs]
    return sum(flat) / len(flat) if flat else float("nan")


def main(argv=None) -> int:
    """``python -m lib.evaluation --checkpoint DIR --sets A.jsonl B ...``: one checkpoint, any sets.

    The same path as stage 07 (shared sampler, shared verifier, :func:`summarize`), for a
    checkpoint outside a run, e.g. the final tiny model on real benchmarks:

        python -m lib.evaluation --checkpoint outputs/tiny/06_rl/model \\
            --sets path/to/math500.jsonl path/to/aime24.jsonl --limit 50
    """
    import argparse
    import json

    from lib import model as modellib
    from lib.params import Verify

    ap = argparse.ArgumentParser(prog="python -m lib.evaluation", description=main.__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="save_pretrained folder or hub id")
    ap.add_argument("--sets", nargs="+", required=True, help="'synthetic', a preset (math500, aime24, ...) or .jsonl paths")
    ap.add_argument("--limit", type=int, default=None, help="at most this many problems per set")
    ap.add_argument("--n-samples", type=int, default=4)
    ap.add_argument("--n-runs", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the summaries here as JSON")
    args = ap.parse_args(argv)
    if args.n_samples < args.n_runs:
        ap.error(f"--n-samples {args.n_samples} must be at least --n-runs {args.n_runs}")

    device = modellib.pick_device("auto")
    model, tokenizer = modellib.load(args.checkpoint, device=device)
    sampler = sampling.HFSampler(model, tokenizer, temperature=args.temperature, top_p=args.top_p,
                                 max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    summaries = {}
    with make_verifier(Verify(workers=2, timeout_s=5.0, second_opinion="rule", extract="strict")) as verifier:
        for spec in args.sets:
            es = load_eval_set(spec, n_test=args.limit or 200, seed=args.seed, domains=problems.DOMAINS,
                               levels=problems.LEVELS, limit=args.limit)
            records = evaluate(sampler, es, verifier, n_samples=args.n_samples, seed=args.seed)
            s = summarize(records, verifier, n_runs=args.n_runs, seed=args.seed)
            summaries[es.name] = s
            p1 = s["pass1"]
            print(f"{es.name}: {s['n_problems']} problems, pass@1 {100 * p1['mean']:.1f}% "
                  f"[{100 * p1['lo']:.1f}, {100 * p1['hi']:.1f}], "
                  f"pass@{s['n_samples']} {100 * s['pass_at_k'][s['n_samples']]:.1f}%, "
                  f"unverifiable {s['unverifiable']}, truncated {100 * s['truncated_share']:.0f}%")
    if args.out:
        args.out.write_text(json.dumps(summaries, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
