"""Evaluation: sets, the summary's numbers on hand-made records, the report, an end-to-end run."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from lib import evaluation, report, sampling, stages
from lib.verify import Verifier


@pytest.fixture(scope="module")
def verifier():
    with Verifier(workers=0) as v:
        yield v


def records(rows, false_statements=None):
    """rows: (id, level, [answers...], [correct...], gold) -> a records frame as evaluate() makes it.
    ``false_statements[id]``: per sample, how many false arithmetic statements its text has (0 by default)."""
    out = []
    for pid, level, answers, correct, gold in rows:
        slips = (false_statements or {}).get(pid, [0] * len(answers))
        for j, (a, c) in enumerate(zip(answers, correct)):
            out.append({"id": pid, "sample": j, "domain": "algebra", "level": level, "difficulty": None, "gold": gold,
                        "answer": a, "correct": c, "checker": "test", "reason": "", "n_tokens": 10 + j, "finished": j != 3,
                        "repetitive": False, "statements": 2, "false_statements": slips[j], "text": ""})
    return pd.DataFrame(out)


def test_summary_numbers(verifier):
    df = records([
        # 2/4 correct; vote over 4: {1/2, 0.5} (grouped by the checker) ties {3} -> first seen wins
        ("p1", 1, ["\\frac{1}{2}", "0.5", "3", "3"], [True, True, False, False], "\\frac{1}{2}"),
        # 1/4 correct; vote over 4: 8 wins -> wrong
        ("p2", 2, ["7", "8", "8", None], [True, False, False, False], "7"),
        # 3/4 correct, the first sample unverifiable (e.g. its check timed out)
        ("p3", 2, ["?", "4", "4", "4"], [None, True, True, True], "4"),
    ])
    s = evaluation.summarize(df, verifier, n_runs=3)
    # runs = first 3 samples: run0 = [T, T, None], run1 = [T, F, T], run2 = [F, F, T]
    assert s["pass1"]["per_run"] == pytest.approx((2 / 3, 2 / 3, 1 / 3))
    assert s["pass1"]["mean"] == pytest.approx(5 / 9)
    assert s["pass1"]["lo"] <= s["pass1"]["mean"] <= s["pass1"]["hi"]
    assert s["pass_at_k"][1] == pytest.approx((2 / 4 + 1 / 4 + 3 / 4) / 3)
    assert s["pass_at_k"][4] == pytest.approx(1.0)
    assert s["cons_at_k"][4] == pytest.approx(2 / 3)  # p1 (1/2 and 0.5 grouped, first seen) and p3 right
    assert s["cons_at_k"][1] == pytest.approx(2 / 3)  # first samples: '1/2' right, '7' right, '?' wrong
    assert s["pass1_by_level"] == {1: pytest.approx(2 / 3), 2: pytest.approx(3 / 6)}  # first 3 samples: p2 TFF, p3 -TT
    assert s["unverifiable"] == 1
    assert s["truncated_share"] == pytest.approx(3 / 12)
    assert s["n_problems"] == 3 and s["n_samples"] == 4
    # per problem, the mean over the 3 runs (unverifiable counts as wrong): what paired comparisons use
    assert s["pass1_per_problem"] == {"p1": pytest.approx(2 / 3), "p2": pytest.approx(1 / 3), "p3": pytest.approx(2 / 3)}
    # per problem, the majority over all 4 samples: p1 right (1/2 and 0.5 grouped), p2 wrong (8), p3 right
    assert s["cons_per_problem"] == {"p1": 1.0, "p2": 0.0, "p3": 1.0}


def test_verified_pass1_and_the_lucky_guess_share(verifier):
    df = records([
        ("p1", 1, ["3", "3", "3", "4"], [True, True, True, False], "3"),
        ("p2", 2, ["7", "7", "8", "7"], [True, True, False, True], "7"),
        ("p3", 2, ["?", "4", "4", "4"], [None, True, False, True], "4"),
    ], false_statements={"p1": [1, 0, 2, 0], "p2": [0, 0, 3, 1], "p3": [0, 1, 0, 0]})
    s = evaluation.summarize(df, verifier, n_runs=3)
    # first 3 samples; verified = correct and no false statement; undecided stays undecided (counts as wrong)
    # p1: T(slip) T T(slip) -> F T F; p2: T T F -> T T F; p3: None T(slip) F -> None F F
    assert s["pass1"]["mean"] == pytest.approx((3 / 3 + 2 / 3 + 1 / 3) / 3)
    assert s["verified_pass1"]["mean"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s["verified_pass1"]["per_run"] == pytest.approx((1 / 3, 2 / 3, 0.0))
    assert s["verified_pass1"]["unverifiable"] == 1
    assert s["verified_pass1_per_problem"] == {"p1": pytest.approx(1 / 3), "p2": pytest.approx(2 / 3), "p3": 0.0}
    # right answers in the first 3 samples: p1 x3 (2 with slips), p2 x2 (none), p3 x1 (with a slip) -> 3 of 6
    assert s["lucky_share"] == pytest.approx(3 / 6)


def test_verified_rules_on_single_records():
    df = pd.DataFrame({"correct": [True, True, False, None, False], "false_statements": [0, 2, 0, 0, 5]})
    assert list(evaluation.verified(df)) == [True, False, False, None, False]
    assert evaluation.lucky_share(df) == pytest.approx(1 / 2)
    assert evaluation.lucky_share(df[df["correct"].eq(False)]) is None  # no right answer: no share
    with pytest.raises(evaluation.RecordsError, match="false_statements"):
        evaluation.verified(df.drop(columns="false_statements"))


def test_evaluate_counts_the_false_statements_a_completion_writes(verifier):
    class Fixed:  # a sampler returning fixed texts (the tiny model cannot be made to write these)
        def sample(self, prompts, n, seed, multiple_choice=False):
            texts = ["7 * 9 = 63\n63 mod 10 = 3\n</think>\\boxed{3}",   # right, clean
                     "7 * 9 = 810\n81 mod 10 = 3\n</think>\\boxed{3}"]  # right answer, two false steps
            return [[sampling.Completion(text=t, n_tokens=5, finished=True) for t in texts] for _ in prompts]

    es = evaluation.EvalSet(name="mine", items=[{"id": "a", "problem": "7*9 mod 10?", "answer": "3"}], source="test")
    df = evaluation.evaluate(Fixed(), es, verifier, n_samples=2, seed=0)
    assert list(df["correct"]) == [True, True]
    assert list(df["statements"]) == [2, 2] and list(df["false_statements"]) == [0, 2]
    s = evaluation.summarize(df, verifier, n_runs=2)
    assert s["pass1"]["mean"] == 1.0 and s["verified_pass1"]["mean"] == 0.5 and s["lucky_share"] == 0.5


def test_load_eval_sets(tmp_path):
    syn = evaluation.load_eval_set("synthetic", n_test=20, seed=0, domains=None, levels=None)
    assert len(syn.items) == 20 and {"id", "problem", "answer", "level"} <= set(syn.items[0])
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"id": i, "problem": f"{i}+1?", "answer": str(i + 1)}) for i in range(5)))
    mine = evaluation.load_eval_set(str(f), n_test=0, seed=0, domains=None, levels=None, limit=3)
    assert mine.name == "mine" and len(mine.items) == 3
    with pytest.raises(FileNotFoundError, match="eval.benchmarks"):
        evaluation.load_eval_set(str(tmp_path / "none.jsonl"), n_test=0, seed=0, domains=None, levels=None)
    with pytest.raises(ValueError, match="unknown evaluation set 'mth500'"):
        evaluation.load_eval_set("mth500", n_test=0, seed=0, domains=None, levels=None)


def test_evaluate_end_to_end(tiny_model, tiny_tokenizer, verifier):
    es = evaluation.synthetic_test_set(6, seed=0, domains=None, levels=None)
    sampler = sampling.HFSampler(tiny_model, tiny_tokenizer, max_new_tokens=8, batch_size=4, progress=False)
    df = evaluation.evaluate(sampler, es, verifier, n_samples=2, seed=0)
    assert len(df) == 12 and list(df.groupby("id").size()) == [2] * 6
    assert df["correct"].isin([True, False]).all()  # untrained model: wrong or unanswered, never unverifiable here
    assert (df["n_tokens"] <= 8).all()
    s = evaluation.summarize(df, verifier, n_runs=2)
    assert s["n_problems"] == 6 and set(s["pass_at_k"]) == {1, 2}


def test_report_renders_table(smoke_params):
    summary = {"pass1": {"mean": 0.25, "lo": 0.1, "hi": 0.4}, "pass_at_k": {1: 0.25, 2: 0.4}, "cons_at_k": {1: 0.25, 2: 0.3},
               "pass1_by_level": {1: 0.5, 2: 0.0}, "length": {"mean": 50.0, "p90": 80.0}, "truncated_share": 0.1,
               "repetitive_share": 0.0, "unverifiable": 2}
    rep = report.build(smoke_params, {"00_base_model": {"synthetic": summary}}, {"n_samples": 2, "n_runs": 1})
    md = report.render_markdown(rep, {"pass_at_k": "07_eval/pass_at_k.png"})
    assert "| base | 25.0 [10.0, 40.0] |" in md
    assert "| base | 50.0 | 0.0 |" in md  # by level
    assert "![pass_at_k](07_eval/pass_at_k.png)" in md
    assert "| base | synthetic | 50 | 80 | 10.0 | 0.0 | 2 |" in md
    # a JSON round trip (string keys) renders the same
    assert report.render_markdown(json.loads(json.dumps(rep)), {"pass_at_k": "07_eval/pass_at_k.png"}) == md
    # the report says which extraction policy graded its tables
    assert rep["extract"] == "strict" and "read with the **strict** extraction policy" in md
    lenient = report.build(smoke_params.model_copy(update={"verify": smoke_params.verify.model_copy(
        update={"extract": "lenient"})}), {"00_base_model": {"synthetic": summary}}, {})
    assert "read with the **lenient** extraction policy" in report.render_markdown(lenient)


def test_report_has_the_ablation_and_the_rl_comparison(smoke_params, tmp_path):
    summary = {"pass1": {"mean": 0.25, "lo": 0.1, "hi": 0.4}, "pass_at_k": {1: 0.25}, "cons_at_k": {1: 0.25},
               "pass1_by_level": {}, "length": {"mean": 50.0, "p90": 80.0}, "truncated_share": 0.0,
               "repetitive_share": 0.0, "unverifiable": 0}
    low = {**summary, "pass1": {"mean": 0.05, "lo": 0.0, "hi": 0.1}}
    params = smoke_params.model_copy(update={"run": smoke_params.run.model_copy(update={"output_root": str(tmp_path)})})
    rl_dir = tmp_path / "smoke" / "06_rl"
    rl_dir.mkdir(parents=True)
    (rl_dir / "metrics.json").write_text(json.dumps({
        "variants": {"GRPO + tricks": {"pass1_before": 0.2, "pass1_after": 0.3, "cons@16_before": 0.25,
                                       "cons@16_after": 0.4},
                     "plain GRPO": {"pass1_before": 0.2, "pass1_after": 0.1, "cons@16_before": 0.25,
                                    "cons@16_after": 0.2}},
        "seconds_per_step": {"GRPO + tricks": {"s_per_step": 2.0, "generation_s": 1.0, "checking_s": 0.1,
                                               "update_s": 0.9}},
        "cons@16_paired": [{"comparison": "GRPO + tricks - plain GRPO at step 20", "mean": 0.0625, "lo": -0.03125,
                            "hi": 0.15625, "n_problems": 32, "better": 3, "worse": 1}]}))
    rep = report.build(params, {"00_base_model": {"synthetic": summary}, "04_sft": {"synthetic": summary},
                                "04_sft/model_from_base": {"synthetic": low}}, {"n_samples": 2, "n_runs": 1})
    md = report.render_markdown(rep)
    assert [r["label"] for r in rep["ablations"]] == ["base + SFT, no mid-training (LIMO/s1K ablation)"]
    assert "| base + SFT, no mid-training (LIMO/s1K ablation) | 5.0 [0.0, 10.0] |" in md
    assert "| GRPO + tricks | 20.0 | 30.0 | 25.0 | 40.0 |" in md and "| plain GRPO | 20.0 | 10.0 | 25.0 | 20.0 |" in md
    assert "cons@16 after" in md and "| GRPO + tricks | 2.00 | 1.00 | 0.10 | 0.90 |" in md
    assert "| GRPO + tricks - plain GRPO at step 20 | +6.2 [-3.1, +15.6] (3↑ 1↓) |" in md
    # in a notebook the report is shown without its images (their paths are relative to the run folder)
    shown = report.render_markdown(rep, {"pass_at_k": "07_eval/pass_at_k.png"}, images=False)
    assert "![" not in shown and "06_rl/rl_tracking.png" in report.render_markdown(rep)
    full = report.render_markdown(rep, {"pass_at_k": "07_eval/pass_at_k.png"})
    assert "![pass_at_k](07_eval/pass_at_k.png)" in full
    assert [line for line in full.splitlines() if not line.startswith("![")] == shown.splitlines()


def test_report_has_verified_columns_and_paired_verified_differences(smoke_params):
    def summary(per_problem, verified_per_problem, lucky):
        mean = sum(per_problem.values()) / len(per_problem)
        vmean = sum(verified_per_problem.values()) / len(verified_per_problem)
        return {"pass1": {"mean": mean, "lo": mean - 0.1, "hi": mean + 0.1}, "pass1_per_problem": per_problem,
                "verified_pass1": {"mean": vmean, "lo": vmean - 0.1, "hi": vmean + 0.1},
                "verified_pass1_per_problem": verified_per_problem, "lucky_share": lucky,
                "pass_at_k": {1: mean}, "cons_at_k": {1: mean}, "pass1_by_level": {},
                "length": {"mean": 50.0, "p90": 80.0}, "truncated_share": 0.0, "repetitive_share": 0.0,
                "unverifiable": 0}

    ids = [f"p{i}" for i in range(8)]
    before = summary(dict.fromkeys(ids, 0.5), dict.fromkeys(ids, 0.25), 0.5)
    # pass@1 unchanged, but the work is now right wherever the answer is: verified +0.25 on every problem
    after = summary(dict.fromkeys(ids, 0.5), dict.fromkeys(ids, 0.5), 0.0)
    rep = report.build(smoke_params, {"03_mid_train": {"synthetic": before}, "04_sft": {"synthetic": after}},
                       {"n_samples": 2, "n_runs": 1})
    md = report.render_markdown(rep)
    assert "| stage | synthetic | synthetic verified | synthetic lucky-guess % |" in md
    assert "| + mid-training | 50.0 [40.0, 60.0] | 25.0 [15.0, 35.0] | 50.0 |" in md
    assert "| + SFT | 50.0 [40.0, 60.0] | 50.0 [40.0, 60.0] | 0.0 |" in md
    assert rep["stages"][1]["paired"]["synthetic"]["mean"] == 0.0
    pv = rep["stages"][1]["paired_verified"]["synthetic"]
    assert pv["mean"] == pytest.approx(0.25) and pv["lo"] == pytest.approx(0.25) and pv["better"] == 8
    assert "| + SFT | + mid-training | +25.0 [+25.0, +25.0] (8↑ 0↓) |" in md
    # summaries without the check (an older report.json) keep the one-column table
    plain = {k: v for k, v in before.items() if not k.startswith(("verified", "lucky"))}
    md_plain = report.render_markdown(report.build(smoke_params, {"03_mid_train": {"synthetic": plain}}, {}))
    assert "| stage | synthetic |" in md_plain and "verified" not in md_plain


def test_report_pairs_the_hardest_level_alone(smoke_params):
    """Problems p0-p5 at L1-L3 and q0-q3 at L4: the later stage gains only on q0 and q1 (and
    loses p0), so the whole set's change is small and the hardest level's is +0.5."""
    levels = {**{f"p{i}": 1 + i % 3 for i in range(6)}, **{f"q{i}": 4 for i in range(4)}}
    before = {i: 0.5 for i in levels}
    after = {**before, "p0": 0.0, "q0": 1.0, "q1": 1.0}

    def summary(per_problem):
        mean = sum(per_problem.values()) / len(per_problem)
        return {"pass1": {"mean": mean, "lo": mean, "hi": mean}, "pass1_per_problem": per_problem,
                "verified_pass1": {"mean": mean, "lo": mean, "hi": mean}, "verified_pass1_per_problem": per_problem,
                "lucky_share": 0.0, "problem_level": levels, "pass_at_k": {1: mean}, "cons_at_k": {1: mean},
                "pass1_by_level": {}, "length": {"mean": 50.0, "p90": 80.0}, "truncated_share": 0.0,
                "repetitive_share": 0.0, "unverifiable": 0}

    rep = report.build(smoke_params, {"04_sft": {"synthetic": summary(before)},
                                      "05_rollout_dpo": {"synthetic": summary(after)}}, {"n_samples": 1, "n_runs": 1})
    h = rep["stages"][1]["paired_hardest"]["synthetic"]
    assert h["level"] == 4 and h["pass1_per_problem"]["n_problems"] == 4
    assert h["pass1_per_problem"]["mean"] == pytest.approx(0.25)  # (+0.5 +0.5 + 0 + 0) / 4
    assert (h["pass1_per_problem"]["better"], h["pass1_per_problem"]["worse"]) == (2, 0)
    assert rep["stages"][1]["paired"]["synthetic"]["mean"] == pytest.approx(0.5 / 10)
    md = report.render_markdown(rep)
    assert "(synthetic: L4, 4 problems)" in md
    assert "| stage | vs | synthetic L4 | synthetic L4 verified |" in md
    assert "| + rollout DPO | + SFT | +25.0 [+0.0, +50.0] (2↑ 0↓) | +25.0 [+0.0, +50.0] (2↑ 0↓) |" in md


def test_summary_gives_each_problem_its_level(verifier):
    df = records([("p1", 1, ["3", "3"], [True, True], "3"), ("p2", 4, ["5", "6"], [False, True], "6")])
    assert evaluation.summarize(df, verifier, n_runs=2)["problem_level"] == {"p1": 1, "p2": 4}
    assert evaluation.summarize(df.assign(level=None), verifier, n_runs=2)["problem_level"] == {}


def test_clip_text_says_what_it_left_out():
    assert report.clip_text("abc", 5) == "abc"
    clipped = report.clip_text("x" * 6000, 1500)
    assert clipped.startswith("x" * 1500) and clipped.endswith("[4,500 more characters not shown]")


def test_side_by_side_html_escapes_and_clips_each_column():
    html = report.side_by_side_html({"chosen (correct)": "<think>3 + 4 = 7</think> \\boxed{7}",
                                     "rejected (incorrect)": "y" * 70}, header="What is 3 + 4?", max_chars=40)
    assert html.count("<th ") == 2 and "chosen (correct)" in html and "rejected (incorrect)" in html
    assert "&lt;think&gt;3 + 4 = 7&lt;/think&gt;" in html and "<think>" not in html
    assert "[30 more characters not shown]" in html and "What is 3 + 4?" in html


def test_eval_stage_follows_every_checkpoint_stage():
    ev = stages.get("07_eval")
    assert ev.name == stages.STAGES[-1].name
    assert set(ev.optional_deps) == {s.name for s in stages.STAGES if s.checkpoint}


def test_cli_runs_real_benchmark_files_through_the_stage_eval_path(tiny_model, tiny_tokenizer, tmp_path):
    """`python -m lib.evaluation` on real benchmark JSONL (the frozen copies in ../shared when
    present, else a local file in the same format) writes pass@1 summaries per set."""
    import json
    from pathlib import Path

    from lib import evaluation
    from lib import model as modellib

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"
    sets = [str(shared / f) for f in ("math500.jsonl", "aime24.jsonl") if (shared / f).is_file()]
    if not sets:
        local = tmp_path / "mini.jsonl"
        local.write_text('{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}\n'
                         '{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}\n')
        sets = [str(local)]
    ckpt = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "model")
    out = tmp_path / "summary.json"
    assert evaluation.main(["--checkpoint", str(ckpt), "--sets", *sets, "synthetic", "--limit", "3",
                            "--n-samples", "2", "--n-runs", "1", "--max-new-tokens", "8", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got) == {Path(s).stem for s in sets} | {"synthetic"}
    for s in got.values():
        assert s["n_problems"] == 3 or s["n_problems"] == 2
        assert 0.0 <= s["pass1"]["mean"] <= 1.0 and s["n_samples"] == 2


def test_eos_rate_counts_sampled_answers_that_stop(monkeypatch):
    from lib import problems

    items = problems.generate(2, seed=0, split="test")
    seen = {}

    def fake_sample(model, tokenizer, texts, *, n, temperature, **kw):
        seen.update(n=n, temperature=temperature, texts=texts)
        flags = [[True, False, True], [False, False, True]]
        return [[sampling.Completion("x", 3, f) for f in row[:n]] for row in flags]

    monkeypatch.setattr(sampling, "sample", fake_sample)
    rate = evaluation.eos_rate(None, None, items, n=3, temperature=1.0, top_p=1.0, max_new_tokens=4, batch_size=8,
                               seed=0)
    assert rate == pytest.approx(3 / 6)
    assert seen == {"n": 3, "temperature": 1.0, "texts": [p.problem for p in items]}


def test_report_pairs_each_stage_with_the_one_before(smoke_params):
    """Per-problem scores in, paired differences out: SFT minus mid-training on the same 4 problems."""
    def summ(per_problem):
        mean = sum(per_problem.values()) / len(per_problem)
        return {"pass1": {"mean": mean, "lo": mean, "hi": mean}, "pass1_per_problem": per_problem,
                "pass_at_k": {1: mean}, "cons_at_k": {1: mean}, "pass1_by_level": {},
                "length": {"mean": 50.0, "p90": 80.0}, "truncated_share": 0.0, "repetitive_share": 0.0,
                "unverifiable": 0}

    mid = summ({"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0})
    sft = summ({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})   # a and b rose by 1: mean +0.5
    abl = summ({"a": 0.0, "b": 0.0, "c": 0.0, "d": 0.0})   # 4 fell against SFT: -1 exactly
    rep = report.build(smoke_params, {"03_mid_train": {"synthetic": mid}, "04_sft": {"synthetic": sft},
                                      "04_sft/model_from_base": {"synthetic": abl}}, {"n_samples": 1, "n_runs": 1})
    d = rep["stages"][1]["paired"]["synthetic"]
    assert d["mean"] == pytest.approx(0.5) and d["vs"] == "+ mid-training" and (d["better"], d["worse"]) == (2, 0)
    assert 0.0 <= d["lo"] <= 0.5 <= d["hi"] <= 1.0
    assert "paired" not in rep["stages"][0]  # the first stage has nothing before it
    a = rep["ablations"][0]["paired"]["synthetic"]
    assert (a["mean"], a["lo"], a["hi"], a["worse"]) == (-1.0, -1.0, -1.0, 4)
    md = report.render_markdown(rep)
    assert "| + SFT | + mid-training | +50.0 [" in md and "(2↑ 0↓) |" in md
    assert "minus + SFT on synthetic: -100.0 [-100.0, -100.0] (0↑ 4↓) points" in md
    # summaries without per-problem scores (an older report.json) render without the paired table
    old = report.build(smoke_params, {"03_mid_train": {"synthetic": {k: v for k, v in mid.items() if k != "pass1_per_problem"}},
                                      "04_sft": {"synthetic": sft}}, {})
    assert "## Paired" not in report.render_markdown(old)


def test_a_stage_measures_itself_on_the_synthetic_split_or_on_a_real_set(tiny_model, tiny_tokenizer, verifier,
                                                                          tmp_path):
    from lib import params as P
    from lib import problems

    synth = P.Problems(n_test=30, domains=["algebra"], levels=[1, 2])
    name, items = evaluation.stage_heldout(synth, P.Eval(benchmarks=["math500"]), seed=3, limit=12)
    assert name == "synthetic"  # synthetic training data: the generator's held-out split, whatever the eval sets
    assert [p.id for p in items] == [p.id for p in problems.generate(30, seed=3, split="test", domains=["algebra"],
                                                                     levels=[1, 2])][:12]
    real_file = tmp_path / "mini_math.jsonl"
    real_file.write_text("".join(json.dumps({"id": f"m{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i),
                                             "level": "Level 3" if i % 2 else 4}) + "\n" for i in range(5)))
    real = P.Problems(source="hub", dataset="open-r1/OpenR1-Math-220k")
    evs = P.Eval(benchmarks=["gpqa_diamond", str(real_file)])  # multiple choice is skipped: the open-answer set
    assert evaluation.heldout_spec(real, evs) == str(real_file)
    name, items = evaluation.stage_heldout(real, evs, seed=0, limit=3)
    assert name == "mini_math" and [(it.id, it.answer, it.level) for it in items] == [
        ("m0", "0", 4), ("m1", "2", None), ("m2", "4", 4)]  # a level that is not a number is not guessed
    _, summary = evaluation.quick_accuracy(tiny_model, tiny_tokenizer, items, verifier, max_new_tokens=8,
                                           batch_size=4, seed=0)
    assert summary["n"] == 3 and summary["by_level"].keys() <= {4}
    with pytest.raises(evaluation.NoHeldoutSetError, match=r"\['synthetic', 'gpqa_diamond'\] has none"):
        evaluation.heldout_spec(real, P.Eval(benchmarks=["synthetic", "gpqa_diamond"]))


def test_heldout_key_changes_with_everything_a_greedy_result_depends_on(smoke_params):
    import torch

    from lib import problems

    items = problems.generate(6, seed=0, split="test", levels=[1])
    quick = dict(max_new_tokens=16, batch_size=4, seed=0)
    key = evaluation.heldout_key(items, smoke_params.verify, "cpu", **quick)
    assert key == evaluation.heldout_key(list(items), smoke_params.verify, torch.device("cpu"), **quick)
    assert key["max_new_tokens"] == 16
    assert evaluation.heldout_key(items, smoke_params.verify, "cpu", **{**quick, "max_new_tokens": 17})["key"] \
        == key["key"]  # the budget is compared apart (upstream_heldout)
    changed_answer = [items[0].__class__(**{**items[0].__dict__, "answer": "999999"})] + items[1:]
    others = [evaluation.heldout_key(items[:5], smoke_params.verify, "cpu", **quick),
              evaluation.heldout_key(changed_answer, smoke_params.verify, "cpu", **quick),
              evaluation.heldout_key(items, smoke_params.verify, "cpu", **{**quick, "batch_size": 5}),
              evaluation.heldout_key(items, smoke_params.verify, "cpu", **{**quick, "seed": 1}),
              evaluation.heldout_key(items, smoke_params.verify.model_copy(update={"timeout_s": 99.0}), "cpu", **quick),
              evaluation.heldout_key(items, smoke_params.verify, "cuda", **quick)]
    assert len({key["key"], *(o["key"] for o in others)}) == 7
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)
        assert evaluation.heldout_key(items, smoke_params.verify, "cpu", **quick)["key"] != key["key"]
    finally:
        torch.set_num_threads(threads)


def test_upstream_heldout_is_taken_only_under_the_same_key_and_a_budget_that_cannot_differ(tmp_path):
    def upstream(finished_share, budget, key="abc"):
        after = {"accuracy": 0.5, "n": 4, "finished_share": finished_share}
        (tmp_path / "metrics.json").write_text(json.dumps({"heldout_after": after, "heldout_after_key":
                                                           {"key": key, "max_new_tokens": budget}}))
        return after

    after = upstream(0.75, 256)
    assert evaluation.upstream_heldout(tmp_path, {"key": "abc", "max_new_tokens": 256}) == after
    assert evaluation.upstream_heldout(tmp_path, {"key": "abd", "max_new_tokens": 256}) is None
    # a larger budget here: the same tokens only if every upstream answer finished within its budget
    assert evaluation.upstream_heldout(tmp_path, {"key": "abc", "max_new_tokens": 300}) is None
    after = upstream(1.0, 192)
    assert evaluation.upstream_heldout(tmp_path, {"key": "abc", "max_new_tokens": 256}) == after
    assert evaluation.upstream_heldout(tmp_path, {"key": "abc", "max_new_tokens": 128}) is None  # a smaller one: never
    assert evaluation.upstream_heldout(tmp_path / "missing", {"key": "abc", "max_new_tokens": 192}) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"heldout_after": after}))  # a stage that records no key
    assert evaluation.upstream_heldout(tmp_path, {"key": "abc", "max_new_tokens": 192}) is None


def test_a_larger_budget_gives_the_same_greedy_result_when_every_answer_finished(tiny_model, tiny_tokenizer,
                                                                                 verifier):
    """The rule upstream_heldout relies on, checked on a model that does stop: once every greedy
    answer ends with EOS within a budget, a larger budget decodes the same answers."""
    import copy

    import torch

    from lib import problems

    items = problems.generate(10, seed=0, split="test", levels=[1])
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # make EOS likely early on: answers of a few tokens, all finished
        model.get_output_embeddings().weight[tiny_tokenizer.eos_token_id] += 0.2
    short_records, short = evaluation.quick_accuracy(model, tiny_tokenizer, items, verifier, max_new_tokens=24,
                                                     batch_size=4, seed=0)
    assert short["finished_share"] == 1.0 and short_records["n_tokens"].max() > 8
    long_records, long = evaluation.quick_accuracy(model, tiny_tokenizer, items, verifier, max_new_tokens=64,
                                                   batch_size=4, seed=0)
    assert long == short and long_records["completion"].tolist() == short_records["completion"].tolist()


def test_a_saved_and_reloaded_checkpoint_gives_the_same_greedy_result(tiny_model, tiny_tokenizer, verifier, tmp_path):
    """What lets a stage take its "before" from the stage that saved its start checkpoint: the
    reloaded model answers every problem with the same tokens as the model that was saved."""
    import torch

    from lib import model as modellib
    from lib import problems

    items = problems.generate(12, seed=0, split="test", levels=[1, 2])
    quick = dict(max_new_tokens=24, batch_size=5, seed=0)
    modellib.save(tiny_model, tiny_tokenizer, tmp_path / "model")
    reloaded, tok = modellib.load(tmp_path / "model", device=torch.device("cpu"))
    saved_records, saved = evaluation.quick_accuracy(tiny_model, tiny_tokenizer, items, verifier, **quick)
    reloaded_records, again = evaluation.quick_accuracy(reloaded.eval(), tok, items, verifier, **quick)
    assert saved == again
    assert saved_records["completion"].tolist() == reloaded_records["completion"].tolist()
    assert saved_records["n_tokens"].sum() > 0
