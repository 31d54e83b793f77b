"""Stage 4 (lib/rl.py): the reward, each of the paper's three tricks, and a tiny GRPO run."""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from trl import GRPOTrainer

from lib import rl
from lib.verify import Verifier


# ---------------------------------------------------------------------------------------- reward
def test_reward_is_plus_minus_one():
    with Verifier(workers=0) as v:
        reward = rl.VerifiableReward(v)
        completions = ["<think>1+1=2</think> \\boxed{2}", "<think>x</think> \\boxed{3}", "<think>no box</think> 2",
                       [{"role": "assistant", "content": "<think>a</think> \\boxed{\\frac{1}{2}}"}]]
        got = reward(prompts=[""] * 4, completions=completions, answer=["2", "2", "2", "0.5"])
    assert got == [1.0, -1.0, -1.0, 1.0]  # no boxed answer is a wrong answer
    assert reward.counts == {"correct": 2, "wrong": 2}


def test_unverifiable_answers_get_their_own_reward_and_are_counted():
    from lib.verify import Check

    class Undecided:  # a checker that times out on the second answer
        def check_many(self, pairs):
            return [Check(equal=None if i == 1 else True, answer="x", checker="math_verify", reason="timeout")
                    for i, _ in enumerate(pairs)]

    reward = rl.VerifiableReward(Undecided(), unverifiable=-0.5)
    assert reward(completions=["a", "b", "c"], answer=["1", "1", "1"]) == [1.0, -0.5, 1.0]
    assert reward.counts == {"correct": 2, "unverifiable": 1}


def test_reward_without_answer_column_is_a_clear_error():
    with Verifier(workers=0) as v:
        with pytest.raises(ValueError, match="answer"):
            rl.VerifiableReward(v)(prompts=["p"], completions=["\\boxed{1}"])


# ---------------------------------------------------------------------------------------- trick 1 and 2: prompts
def test_length_cv():
    assert rl.length_cv([10, 10, 10]) == 0.0
    assert rl.length_cv([5, 15]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        rl.length_cv([])


def _probed():
    return pd.DataFrame({
        "problem": ["uniform easy", "uniform hard", "ragged hard", "uniform unsolved", "uniform medium"],
        "answer": ["1", "2", "3", "4", "5"],
        "lengths": [[10, 10, 11, 9], [20, 22, 18, 20], [5, 60, 8, 100], [30, 30, 31, 29], [40, 42, 38, 40]],
        "n_correct": [4, 1, 1, 0, 2],
    }).assign(pass_rate=lambda d: d.n_correct / 4, length_cv=lambda d: d.lengths.map(rl.length_cv))


SELECT = dict(max_length_cv=0.3, max_pass_rate=0.5, drop_unsolved=True, hard_below=0.3, oversample_hard=3, seed=0)


def test_prompt_optimization_keeps_uniform_lengths_only():
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=False, **SELECT)
    assert "ragged hard" not in set(df.problem) and len(df) == 4
    assert stats["dropped_length_cv"] == 1


def test_pass_rate_filter_unsolved_and_oversampling():
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True, **SELECT)
    counts = df.problem.value_counts().to_dict()
    # easy (pass 1.0 > 0.5) and unsolved dropped; hard (0.25 < 0.3) repeated 3x; medium (0.5) once
    assert counts == {"uniform hard": 3, "uniform medium": 1}
    assert stats["dropped_too_easy"] == 1 and stats["dropped_unsolved"] == 1 and stats["hard"] == 1
    keep_unsolved, _ = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True,
                                         **{**SELECT, "drop_unsolved": False})
    assert "uniform unsolved" in set(keep_unsolved.problem)


def test_selection_that_leaves_nothing_says_which_filter():
    with pytest.raises(rl.NoPromptsError, match="max_length_cv"):
        rl.select_prompts(_probed(), prompt_optimization=True, rebalance=False, **{**SELECT, "max_length_cv": 0.001})
    with pytest.raises(rl.NoPromptsError, match="max_pass_rate"):
        rl.select_prompts(_probed(), prompt_optimization=False, rebalance=True, **{**SELECT, "max_pass_rate": 0.0})


def test_probe_counts_lengths_and_pass_rates():
    from lib.sampling import Completion

    class FakeSampler:
        def sample(self, problems, n, seed):
            return [[Completion(f"\\boxed{{{j}}}", 10 + j, True) for j in range(n)] for _ in problems]

    pool = pd.DataFrame({"problem": ["a", "b"], "answer": ["0", "7"], "level": [1, 2]})
    with Verifier(workers=0) as v:
        out = rl.probe(FakeSampler(), pool, v, k=3, seed=0)
    assert out.lengths.tolist() == [[10, 11, 12], [10, 11, 12]]
    assert out.n_correct.tolist() == [1, 0] and out.level.tolist() == [1, 2]
    with pytest.raises(ValueError, match="answer"):
        rl.probe(FakeSampler(), pool.drop(columns="answer"), None, k=1, seed=0)


# ---------------------------------------------------------------------------------------- trick 2: groups
def test_balance_keeps_all_correct_and_as_many_incorrect():
    r = torch.tensor([1., -1, -1, -1,   1, 1, 1, 1,   -1, -1, -1, -1,   1, 1, 1, -1])
    keep = rl.balance_mask(r, 4, balance=True, drop_all_equal=True, generator=torch.Generator().manual_seed(0))
    g = keep.view(4, 4)
    assert g[0, 0] and int(g[0, 1:].sum()) == 1              # 1 correct + 1 of 3 incorrect
    assert not g[1].any() and not g[2].any()                 # all-equal groups: nothing
    assert g[3].all()                                        # 3 correct + the only incorrect
    # different seeds pick different incorrect completions
    picks = {tuple(rl.balance_mask(r, 4, balance=True, drop_all_equal=True,
                                   generator=torch.Generator().manual_seed(s))[:4].tolist()) for s in range(20)}
    assert len(picks) == 3


def test_drop_all_equal_alone_and_off():
    r = torch.tensor([1., 1, 1, 1, 1, -1, -1, -1])
    assert rl.balance_mask(r, 4, balance=False, drop_all_equal=True).tolist() == [False] * 4 + [True] * 4
    assert rl.balance_mask(r, 4, balance=False, drop_all_equal=False).all()
    with pytest.raises(ValueError):
        rl.balance_mask(torch.ones(6), 4, balance=True, drop_all_equal=True)


def test_advantages_over_kept_completions_only():
    r = torch.tensor([1., -1, -1, -1])
    keep = torch.tensor([True, True, False, False])
    adv = rl.group_advantages(r, keep, 4, "group")
    assert adv[2:].tolist() == [0.0, 0.0]
    assert adv[0] == pytest.approx(1 / (2 ** 0.5), rel=1e-3) and adv[1] == pytest.approx(-adv[0])
    assert rl.group_advantages(r, keep, 4, "none").tolist() == [1.0, -1.0, 0.0, 0.0]
    assert rl.group_advantages(r, torch.zeros(4, dtype=torch.bool), 4).abs().sum() == 0


# ---------------------------------------------------------------------------------------- trick 3: temperature
def test_annealing_schedule():
    t = lambda s: rl.annealed_temperature(s, 100, 1.0, 0.6, 0.5)  # noqa: E731
    assert t(0) == 1.0 and t(25) == pytest.approx(0.8) and t(50) == pytest.approx(0.6) and t(99) == pytest.approx(0.6)
    assert rl.annealed_temperature(3, 10, 1.0, 0.6, 0.0) == 0.6
    with pytest.raises(ValueError):
        rl.annealed_temperature(0, 0, 1.0, 0.6, 0.5)


def test_logprob_temperature_is_changed_in_trls_fused_head(tiny_model, tiny_tokenizer):
    from trl.trainer.utils import add_fused_lm_head

    model = copy.deepcopy(tiny_model)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    ids = torch.tensor([tiny_tokenizer("1 + 2 = 3")["input_ids"]])
    for temp in (0.6, 1.3):
        assert rl.set_logprob_temperature(model, temp) == 1
        assert rl.logprob_temperature(model) == temp
        with torch.no_grad():
            fused = model(input_ids=ids, labels=ids, fused_lm_head=True).log_probs[0]
            logits = model(input_ids=ids).logits[0, :-1]
        want = torch.log_softmax(logits / temp, -1).gather(-1, ids[0, 1:, None])[:, 0]
        torch.testing.assert_close(fused, want, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------- the trainer
def _section(smoke_params, **overrides):
    return smoke_params.rl.model_copy(update={"max_steps": 4, "batch_size": 8, "num_generations": 4,
                                              "max_length": 24, "checkpoint_every": 0, "lr": 1e-3, **overrides})


def _prompts():
    from lib import problems

    ps = problems.generate(12, seed=1, split="train", levels=[1])
    return pd.DataFrame({"problem": [p.problem for p in ps], "answer": [p.answer for p in ps]})


def test_grpo_tricks_apply_annealed_temperatures_and_drop_all_equal_groups(smoke_params, tiny_model, tiny_tokenizer,
                                                                           tmp_path):
    section = _section(smoke_params, temperature_start=1.0, temperature_end=0.5, anneal_fraction=0.5)
    model = copy.deepcopy(tiny_model)
    with Verifier(workers=0) as v:
        trainer, summary = rl.run_grpo(model, tiny_tokenizer, _prompts(), section, tmp_path, verifier=v,
                                       device=torch.device("cpu"), dtype=torch.float32, seed=0, tricks=True)
    # the temperatures actually used by the sampler and by the loss's log-probs, at each step
    used = {step: (t_sample, t_logp) for step, t_sample, t_logp in summary["temperatures"]}
    assert set(used) == {0, 1, 2, 3}
    for step, want in {0: 1.0, 1: 0.75, 2: 0.5, 3: 0.5}.items():
        assert used[step][0] == pytest.approx(want) and used[step][1] == pytest.approx(want)
    # an untrained model rarely answers: groups are all -1, so they are filtered, not trained on
    assert summary["groups"] and all(g["filtered_groups"] >= g["all_equal_groups"] for g in summary["groups"])
    assert summary["steps"] == 4
    assert sum(summary["reward_counts"].values()) == 4 * 8


def test_all_equal_groups_give_no_gradient_and_are_not_in_the_normaliser(smoke_params, tiny_model, tiny_tokenizer,
                                                                         tmp_path):
    """A micro-batch with one informative group and one all-equal group must give exactly the
    gradient of the informative group alone (TRL's plain grpo loss would halve it)."""
    section = _section(smoke_params, max_steps=1, beta=0.0)
    model = copy.deepcopy(tiny_model)
    with Verifier(workers=0) as v:
        trainer, _ = rl.run_grpo(model, tiny_tokenizer, _prompts(), section, tmp_path, verifier=v,
                                 device=torch.device("cpu"), dtype=torch.float32, seed=0, tricks=True)
    torch.manual_seed(0)
    n, width = 8, 6
    prompt_ids = torch.randint(5, 100, (n, 4))
    completion_ids = torch.randint(5, 100, (n, width))
    rewards = torch.tensor([1., -1, -1, 1, -1, -1, -1, -1])  # group 2 all equal
    keep = rl.balance_mask(rewards, 4, balance=True, drop_all_equal=True, generator=torch.Generator().manual_seed(0))
    adv = rl.group_advantages(rewards, keep, 4)
    batch = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids),
             "completion_ids": completion_ids,
             "completion_mask": torch.ones_like(completion_ids) * keep[:, None].long(),
             "advantages": adv, "num_items_in_batch": torch.tensor(float(keep.sum() * width))}

    def grads(inputs):
        trainer.model.zero_grad()
        trainer._compute_loss(trainer.model, inputs).backward()
        return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])

    trainer.model.train()
    both = grads(batch)
    only = grads({k: (v[:4] if isinstance(v, torch.Tensor) and v.dim() else v) for k, v in batch.items()})
    assert both.abs().sum() > 0
    torch.testing.assert_close(both, only, atol=1e-6, rtol=1e-4)
    # negative control: TRL's own loss on the same micro-batch counts the dropped rows (grpo's
    # per-sequence mean over all 8) and so gives a different (halved) gradient
    trainer.model.zero_grad()
    GRPOTrainer._compute_loss(trainer, trainer.model, batch).backward()
    plain = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    torch.testing.assert_close(plain, only / 2, atol=1e-6, rtol=1e-4)
    # a micro-batch with nothing kept: zero gradient, no error
    none_kept = {**batch, "completion_mask": torch.zeros_like(completion_ids)}
    assert grads(none_kept).abs().sum() == 0


def test_plain_grpo_keeps_trl_behaviour_and_constant_temperature(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    section = _section(smoke_params, max_steps=2, temperature_start=0.9)
    model = copy.deepcopy(tiny_model)
    with Verifier(workers=0) as v:
        _, summary = rl.run_grpo(model, tiny_tokenizer, _prompts(), section, tmp_path, verifier=v,
                                 device=torch.device("cpu"), dtype=torch.float32, seed=0, tricks=False)
    assert {round(t, 6) for _, t, _ in summary["temperatures"]} == {0.9}
    assert all(g["filtered_groups"] == 0 for g in summary["groups"])


def test_heldout_tracker_reuses_a_shared_step_zero_measurement():
    from types import SimpleNamespace

    class Counting(rl.HeldoutTracker):
        def measure(self, model, step):
            self.calls.append(step)
            self.history.append({"step": step, "pass1": 0.5})

    kw = dict(every=2, n_samples=4, temperature=0.6, top_p=0.95, max_new_tokens=8, batch_size=4, seed=0)
    state = SimpleNamespace(global_step=0, max_steps=4)
    fresh = Counting(None, None, None, **kw)
    fresh.calls = []
    fresh.on_train_begin(None, state, None)
    shared = Counting(None, None, None, start={"step": 0, "pass1": 0.25}, **kw)
    shared.calls = []
    shared.on_train_begin(None, state, None)
    for t in (fresh, shared):
        for step in (1, 2, 3, 4):
            state.global_step = step
            t.on_step_end(None, state, None)
        t.on_train_end(None, state, None)
        state.global_step = 0
    assert fresh.calls == [0, 2, 4] and shared.calls == [2, 4]
    assert [r["step"] for r in shared.history] == [0, 2, 4] and shared.history[0]["pass1"] == 0.25
    with pytest.raises(ValueError, match="step-0"):
        rl.HeldoutTracker(None, None, None, start={"step": 10}, **kw)


def test_step_timing_splits_each_step_by_hand_numbers():
    # 4 steps: 10 s in all, 6 s generating, 1 s checking -> 2.5 / 1.5 / 0.25 / 0.75 s per step
    t = rl.step_timing({"steps": 4, "timings": {"generate_s": 6.0, "reward_s": 1.0, "step_s": 10.0}})
    assert t == {"s_per_step": 2.5, "generation_s": 1.5, "checking_s": 0.25, "update_s": 0.75}
    # a run that made no step does not divide by zero; missing timings count as zero
    assert rl.step_timing({"steps": 0, "timings": {"step_s": 3.0}}) == {
        "s_per_step": 3.0, "generation_s": 0.0, "checking_s": 0.0, "update_s": 3.0}
