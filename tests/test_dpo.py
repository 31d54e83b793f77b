"""Rollout DPO: pair sources, the no-pairs error, held-out split, balance, and a run that learns."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from lib import chat, dpo, problems
from lib.model import build_scratch


def rollouts(spec):
    """spec: {problem_id: [correct flags]} -> a tagged rollout table (texts differ per rollout)."""
    rows = []
    for i, (pid, flags) in enumerate(spec.items()):
        for j, ok in enumerate(flags):
            rows.append({"problem_id": pid, "problem": f"Problem {pid}?", "answer": "1", "text": f"{pid}-{j}-{ok}",
                         "correct": ok, "length": 10 + j, "tag_difficulty": ["elementary", "college"][i % 2],
                         "tag_domain": "algebra"})
    return pd.DataFrame(rows)


def test_pairs_from_each_source_and_edge_cases():
    teacher = rollouts({"a": [True, False, False], "b": [True, True], "c": [False], "d": [True, None, False]})
    pairs, stats = dpo.build_pairs({"teacher": teacher}, pairs_per_problem=2, length_match=True, seed=0)
    assert set(pairs.problem_id) == {"a", "d"}  # all-correct (b) and single-rollout (c) give no pair
    assert (pairs.chosen.str.endswith("True")).all() and (pairs.rejected.str.endswith("False")).all()
    assert "None" not in "".join(pairs.rejected)  # unverifiable rollouts are never "rejected"
    assert stats["teacher"]["pairs"] == len(pairs) == 3  # a: 2 distinct pairs, d: only 1 possible
    on_policy = rollouts({"e": [False, True]})
    both, stats = dpo.build_pairs({"teacher": teacher, "on_policy": on_policy}, 1, True, seed=0)
    assert set(both.source) == {"teacher", "on_policy"} and stats["on_policy"]["pairs"] == 1


def test_on_policy_rollouts_are_verified_samples_that_pair_up():
    from lib.sampling import Completion
    from lib.verify import Verifier

    class FakeSampler:  # answers 1, 2, 1 to every problem
        def sample(self, problems, n, seed):
            return [[Completion(f"<think>x</think> \\boxed{{{[1, 2, 1][j]}}}", 5 + j, True) for j in range(n)]
                    for _ in problems]

    source = rollouts({"a": [True, False], "b": [True]})  # two rows of a: one problem, sampled once
    with Verifier(workers=0) as v:
        out = dpo.on_policy_rollouts(FakeSampler(), source, v, n=3, seed=0)
    assert len(out) == 6 and list(out.problem_id) == ["a"] * 3 + ["b"] * 3
    assert out.correct.tolist() == [True, False, True] * 2  # gold "1"
    assert (out.teacher == "on_policy").all() and out.tag_difficulty.notna().all()
    pairs, stats = dpo.build_pairs({"on_policy": out}, 1, True, seed=0)
    assert stats["on_policy"]["pairs"] == 2 and pairs.rejected.str.contains("boxed{2}", regex=False).all()
    # max_problems: a seeded draw of whole problems, the same for the same seed
    many = rollouts({f"p{i}": [True] for i in range(20)})
    with Verifier(workers=0) as v:
        few = [dpo.on_policy_rollouts(FakeSampler(), many, v, n=2, seed=s, max_problems=5) for s in (0, 0, 1)]
        every = dpo.on_policy_rollouts(FakeSampler(), many, v, n=2, seed=0, max_problems=50)
    assert len(few[0]) == 10 and few[0].problem_id.nunique() == 5 and few[0].problem_id.isin(many.problem_id).all()
    assert list(few[0].problem_id) == list(few[1].problem_id) and set(few[0].problem_id) != set(few[2].problem_id)
    assert every.problem_id.nunique() == 20


@pytest.mark.parametrize("spec,why", [
    ({"a": [True, True], "b": [True]}, "only correct"),
    ({"a": [False, False], "b": [False]}, "only incorrect"),
    ({"a": [True]}, "only correct"),
])
def test_no_pairs_is_a_clear_error(spec, why):
    with pytest.raises(dpo.NoPairsError) as e:
        dpo.build_pairs({"teacher": rollouts(spec)}, 1, True, seed=0)
    msg = str(e.value)
    assert "source 'teacher'" in msg and "on_policy" in msg  # says why and what to do
    assert why in msg


def test_heldout_split_and_balance():
    teacher = rollouts({f"p{i}": [True, False, False] for i in range(10)})
    pairs, _ = dpo.build_pairs({"teacher": teacher}, 2, True, seed=0)
    train, held = dpo.split_heldout(pairs, 0.2, seed=0)
    assert set(train.problem_id).isdisjoint(held.problem_id) and held.problem_id.nunique() == 2
    skewed = pd.concat([pairs, pairs[pairs.difficulty == "college"]])
    balanced = dpo.balance(skewed, "difficulty", seed=0)
    assert balanced.difficulty.value_counts().nunique() == 1


def test_dataset_format():
    pairs, _ = dpo.build_pairs({"teacher": rollouts({"a": [True, False]})}, 1, True, seed=0)
    row = dpo.to_dataset(pairs)[0]
    assert row["prompt"] == chat.prompt_messages("Problem a?")
    assert row["chosen"][0]["role"] == "assistant" and row["rejected"][0]["content"].endswith("False")


def test_tiny_dpo_run_learns_preferences(smoke_params, digit_tokenizer, tmp_path):
    """Correct vs. slipped traces of the same problems: held-out preference accuracy rises above chance.

    Digit tokens: the appended "1" is then the same token in every rejected answer (with whole-number
    tokens it becomes a different number per problem, a harder preference than this test is about)."""
    rows = []
    for p in problems.generate(60, seed=3, levels=[2, 3]):
        good = problems.cot_solution(p)
        bad = good.replace("\\boxed{" + p.answer + "}", "\\boxed{" + p.answer + "1}")  # a wrong final answer
        rows += [{"problem_id": p.id, "problem": p.problem, "text": good, "correct": True, "length": len(good),
                  "tag_difficulty": p.difficulty},
                 {"problem_id": p.id, "problem": p.problem, "text": bad, "correct": False, "length": len(bad),
                  "tag_difficulty": p.difficulty}]
    pairs, _ = dpo.build_pairs({"teacher": pd.DataFrame(rows)}, 1, True, seed=0)
    train, held = dpo.split_heldout(pairs, 0.25, seed=0)
    torch.manual_seed(0)
    model = build_scratch(smoke_params.model, digit_tokenizer)
    ref = build_scratch(smoke_params.model, digit_tokenizer)
    ref.load_state_dict(model.state_dict())
    section = smoke_params.dpo.model_copy(update={"max_steps": 12, "lr": 3e-3, "batch_size": 8, "warmup_ratio": 0.0,
                                                  "nll_weight": 0.0})  # DPO alone
    cfg = dpo.dpo_config(section, tmp_path, device=torch.device("cpu"), dtype=torch.float32, seed=0)
    stats = dpo.fit_dpo(model, ref, digit_tokenizer, train, held, cfg)
    assert stats["heldout_pref_accuracy_before"] == 0.0  # policy == reference: all rewards 0
    assert stats["heldout_pref_accuracy_after"] >= 0.8, stats
    assert stats["heldout_margin_after"] > 0 and stats["steps"] == 12 and stats["tokens_seen"] > 0
    curve = pd.DataFrame(stats["curve"])  # TRL's logs, as the notebook plots them
    assert curve[["margin", "reward_chosen", "reward_rejected", "logps_chosen", "logps_rejected"]].notna().all().all()
    assert (curve.margin - (curve.reward_chosen - curve.reward_rejected)).abs().max() < 1e-4
    assert (curve.logps_chosen < 0).all() and (curve.logps_rejected < 0).all()


def test_pairs_whose_chosen_answer_has_false_arithmetic_are_dropped():
    pairs = pd.DataFrame({"prompt": ["a", "b", "c"], "problem_id": ["a", "b", "c"],
                          "chosen": ["<think>\n7 * 9 = 63\n63 mod 10 = 3\n</think>\n\\boxed{3}",
                                     "<think>\n7 * 9 = 810\n81 mod 10 = 3\n</think>\n\\boxed{3}",  # lucky
                                     "<think>\nno arithmetic written\n</think>\n\\boxed{3}"],
                          "rejected": ["\\boxed{4}"] * 3})
    kept, dropped = dpo.drop_lucky_chosen(pairs)
    assert dropped == 1 and list(kept["problem_id"]) == ["a", "c"]
    with pytest.raises(dpo.NoPairsError, match="every one of the 1 pairs has a chosen answer with false arithmetic"):
        dpo.drop_lucky_chosen(pairs.iloc[[1]])


def test_nll_weight_adds_the_chosen_answers_nll_to_the_dpo_loss(smoke_params, digit_tokenizer, tmp_path):
    """At the first step the policy equals the reference, so the DPO loss is log 2; with the NLL term
    the loss also holds the chosen answer's mean token NLL, about log(vocabulary) for a fresh model."""
    import math

    p = problems.generate(8, seed=1, levels=[2])
    rows = [r for q in p for r in (
        {"problem_id": q.id, "problem": q.problem, "text": problems.cot_solution(q), "correct": True, "length": 1,
         "tag_difficulty": q.difficulty},
        {"problem_id": q.id, "problem": q.problem, "text": "\\boxed{0}", "correct": False, "length": 1,
         "tag_difficulty": q.difficulty})]
    pairs, _ = dpo.build_pairs({"teacher": pd.DataFrame(rows)}, 1, False, seed=0)
    first_loss = {}
    for w in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_scratch(smoke_params.model, digit_tokenizer)
        ref = build_scratch(smoke_params.model, digit_tokenizer)
        ref.load_state_dict(model.state_dict())
        section = smoke_params.dpo.model_copy(update={"max_steps": 1, "lr": 1e-9, "batch_size": 8, "warmup_ratio": 0.0,
                                                      "nll_weight": w})
        cfg = dpo.dpo_config(section, tmp_path / str(w), device=torch.device("cpu"), dtype=torch.float32, seed=0)
        assert (cfg.loss_type, cfg.loss_weights) == ((["sigmoid", "sft"], [1.0, 1.0]) if w else (["sigmoid"], None))
        stats = dpo.fit_dpo(model, ref, digit_tokenizer, pairs, pairs.iloc[:0], cfg)
        first_loss[w] = stats["curve"][0]["loss"]
    assert first_loss[0.0] == pytest.approx(math.log(2), abs=1e-3)
    nll = first_loss[1.0] - math.log(2)
    vocab = len(digit_tokenizer)
    assert 0.5 * math.log(vocab) < nll < 2 * math.log(vocab), (nll, vocab)
