"""Stage 4 (lib/rl.py): the reward, each of the paper's three tricks, and a tiny GRPO run."""
from __future__ import annotations

import copy

import numpy as np
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


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_plain_grpo_leaves_zero_advantage_rows_out_of_the_forward_with_the_same_gradient(
        smoke_params, tiny_model, tiny_tokenizer, tmp_path, loss_type):
    """Plain GRPO keeps its all-equal groups in the normaliser (their advantages are 0): TRL's own loss
    over the whole micro-batch and the recipe's, which runs the forward on the other rows alone and
    rescales, give the same loss and gradient (to rounding); the forward sees only the signal rows."""
    section = _section(smoke_params, max_steps=1, beta=0.0, loss_type=loss_type)
    with Verifier(workers=0) as v:
        trainer, _ = rl.run_grpo(copy.deepcopy(tiny_model), tiny_tokenizer, _prompts(), section, tmp_path, verifier=v,
                                 device=torch.device("cpu"), dtype=torch.float32, seed=0, tricks=False)
    assert trainer._skip_zero_advantage
    torch.manual_seed(0)
    n, width = 12, 6
    prompt_ids = torch.randint(5, 100, (n, 4))
    completion_ids = torch.randint(5, 100, (n, width))
    completion_mask = torch.ones_like(completion_ids)
    completion_mask[1, 4:] = 0  # completions of different lengths
    # groups of 4: mixed, all wrong, mixed; plain advantages (TRL's: reward - group mean, / group std)
    adv = torch.tensor([0.87, -0.87, 0.87, -0.87, 0, 0, 0, 0, 1.5, -0.5, -0.5, -0.5])
    batch = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
             "completion_mask": completion_mask, "advantages": adv,
             "num_items_in_batch": completion_mask.sum().float()}
    seen_rows = []
    hook = trainer.model.register_forward_pre_hook(lambda m, a, kw: seen_rows.append(kw["input_ids"].size(0)),
                                                   with_kwargs=True)

    def run(compute):
        trainer.model.zero_grad()
        seen_rows.clear()
        loss = compute(trainer.model, batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]), \
            list(seen_rows)

    trainer.model.train()
    try:
        ours, g_ours, rows_ours = run(trainer._compute_loss)
        trl, g_trl, rows_trl = run(lambda m, b: GRPOTrainer._compute_loss(trainer, m, b))
    finally:
        hook.remove()
    assert rows_trl == [12] and rows_ours == [8]
    assert g_trl.abs().sum() > 0
    torch.testing.assert_close(ours, trl, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(g_ours, g_trl, atol=1e-7, rtol=1e-5)
    # negative control: without the rescaling the gradient would be 12/8 of TRL's
    assert not torch.allclose(g_ours * 12 / 8, g_trl, atol=1e-7, rtol=1e-5)


def test_zero_advantage_rows_stay_when_something_else_acts_on_them(smoke_params, tiny_model, tiny_tokenizer,
                                                                  tmp_path):
    """A KL term (beta > 0) and token-normalised losses (dapo, bnpo) keep every row in the forward."""
    for i, update in enumerate([{"beta": 0.05}, {"beta": 0.0, "loss_type": "dapo"}, {"beta": 0.0, "loss_type": "bnpo"}]):
        section = _section(smoke_params, max_steps=1, **update)
        tiny_model.save_pretrained(tmp_path / "start")  # TRL builds the KL reference from the policy's path
        model = copy.deepcopy(tiny_model)
        model.config._name_or_path = str(tmp_path / "start")
        with Verifier(workers=0) as v:
            trainer, _ = rl.run_grpo(model, tiny_tokenizer, _prompts(), section, tmp_path / str(i), verifier=v,
                                     device=torch.device("cpu"), dtype=torch.float32, seed=0, tricks=False)
        assert not trainer._skip_zero_advantage, update


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


# ---------------------------------------------------------------------------------------- values, not shapes
# Each test below pins a result that a plausible slip in lib/rl.py's pure functions would change
# (found by mutation testing, `make mutation`; docs/mutation.md): non-zero-mean groups, 0/1
# rewards, the shipped parameter values. Expected values are worked by hand or with numpy here.
from lib.sampling import Completion  # noqa: E402
from lib.verify import Check  # noqa: E402


class _ScriptedVerifier:
    """check_many by a rule: equal if the text is the gold, unverifiable if it is '?'; records the pairs."""

    def __init__(self):
        self.pairs = []

    def check_many(self, pairs):
        self.pairs.extend(pairs)
        return [Check(equal=None if text == "?" else text == gold, answer=text, checker="test", reason="")
                for gold, text in pairs]


def test_reward_values_and_pairs_are_configurable():
    v = _ScriptedVerifier()
    reward = rl.VerifiableReward(v, correct=2.0, wrong=-3.0, unverifiable=0.5)
    got = reward(completions=["7", "8", [{"role": "assistant", "content": "?"}]], answer=["7", "7", "9"])
    assert got == [2.0, -3.0, 0.5]
    assert v.pairs == [("7", "7"), ("7", "8"), ("9", "?")]  # (gold, completion text), in order
    assert reward.counts == {"correct": 1, "wrong": 1, "unverifiable": 1}


@pytest.mark.parametrize("lengths,expected", [
    ([1, 2, 3, 4], 1.25 ** 0.5 / 2.5),  # population std (divide by n): sqrt(1.25) / 2.5
    ([0, 0], 0.0),                     # mean 0: defined as 0, not nan
    ([7], 0.0),
])
def test_length_cv_values(lengths, expected):
    assert rl.length_cv(lengths) == pytest.approx(expected, rel=1e-12)


def test_length_cv_error_message():
    with pytest.raises(ValueError, match="length_cv of no lengths"):
        rl.length_cv([])


def test_probe_pairs_each_prompt_with_its_own_samples():
    class ScriptedSampler:
        """Prompt i gets texts and token counts of its own, so a sample read from the wrong prompt shows."""

        def __init__(self):
            self.calls = []

        def sample(self, problems, n, seed):
            self.calls.append((list(problems), n, seed))
            table = {"p0": [("a", 10), ("a", 10), ("x", 10), ("a", 10)],
                     "p1": [("x", 5), ("b", 15), ("x", 5), ("?", 15)],
                     "p2": [("x", 8), ("x", 8), ("x", 8), ("x", 8)]}
            return [[Completion(t, n_tok, True) for t, n_tok in table[p]] for p in problems]

    pool = pd.DataFrame({"problem": ["p0", "p1", "p2"], "answer": ["a", "b", "c"], "level": [3, 1, 2]},
                        index=[10, 11, 12])
    sampler, v = ScriptedSampler(), _ScriptedVerifier()
    out = rl.probe(sampler, pool, v, k=4, seed=9)
    assert sampler.calls == [(["p0", "p1", "p2"], 4, 9)]
    assert out.index.tolist() == [0, 1, 2] and out.level.tolist() == [3, 1, 2]
    assert out.lengths.tolist() == [[10, 10, 10, 10], [5, 15, 5, 15], [8, 8, 8, 8]]
    assert out.n_correct.tolist() == [3, 1, 0]  # the unverifiable "?" is not correct
    assert out.pass_rate.tolist() == [0.75, 0.25, 0.0]
    assert out.length_cv.tolist() == pytest.approx([0.0, 0.5, 0.0])  # [5, 15, 5, 15]: std 5 / mean 10
    assert v.pairs[4:8] == [("b", "x"), ("b", "b"), ("b", "x"), ("b", "?")]
    assert "pass_rate" not in pool.columns  # the pool itself is not modified
    with pytest.raises(ValueError, match="has no 'problem' column"):
        rl.probe(sampler, pool.drop(columns="problem"), v, k=1, seed=0)


# the shipped values (params/base.yaml rl section): max_length_cv 0.5, max_pass_rate 0.5,
# drop_unsolved true, hard_below 0.25, oversample_hard 2
SHIPPED = dict(max_length_cv=0.5, max_pass_rate=0.5, drop_unsolved=True, hard_below=0.25, oversample_hard=2, seed=0)


def test_shipped_selection_repeats_hard_prompts_twice():
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True, **SHIPPED)
    # "uniform hard" passes 1/4 = 0.25: not below 0.25, so not hard at the shipped threshold
    assert df.problem.value_counts().to_dict() == {"uniform hard": 1, "uniform medium": 1}
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True,
                                  **{**SHIPPED, "hard_below": 0.3})
    assert df.problem.value_counts().to_dict() == {"uniform hard": 2, "uniform medium": 1}
    assert stats == {"candidates": 5, "dropped_length_cv": 1, "dropped_too_easy": 1, "dropped_unsolved": 1,
                     "hard": 1, "selected_unique": 2, "selected_rows": 3}
    assert df.index.tolist() == [0, 1, 2]
    once, _ = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True,
                                **{**SHIPPED, "hard_below": 0.3, "oversample_hard": 1})
    assert once.problem.value_counts().to_dict() == {"uniform hard": 1, "uniform medium": 1}


def test_selection_without_dropping_unsolved_repeats_them_as_hard():
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=True,
                                  **{**SHIPPED, "drop_unsolved": False, "hard_below": 0.3})
    assert df.problem.value_counts().to_dict() == {"uniform hard": 2, "uniform unsolved": 2, "uniform medium": 1}
    assert (stats["dropped_unsolved"], stats["hard"], stats["selected_unique"], stats["selected_rows"]) == (0, 2, 3, 5)


def test_selection_with_filters_off():
    df, stats = rl.select_prompts(_probed(), prompt_optimization=False, rebalance=False, **SHIPPED)
    assert sorted(df.problem) == sorted(_probed().problem)
    assert stats == {"candidates": 5, "selected_unique": 5, "selected_rows": 5}
    df, stats = rl.select_prompts(_probed(), prompt_optimization=True, rebalance=False, **SHIPPED)
    assert stats == {"candidates": 5, "dropped_length_cv": 1, "selected_unique": 4, "selected_rows": 4}


def test_selection_shuffle_is_seeded():
    n = 30
    probed = pd.DataFrame({"problem": [f"p{i}" for i in range(n)], "answer": ["1"] * n,
                           "lengths": [[10, 10]] * n, "n_correct": [1] * n}).assign(pass_rate=0.5, length_cv=0.0)
    order = lambda seed: rl.select_prompts(probed, prompt_optimization=True, rebalance=True,  # noqa: E731
                                           **{**SHIPPED, "seed": seed})[0].problem.tolist()
    assert order(1) == order(1) and order(1) != order(2) and sorted(order(1)) == sorted(probed.problem)
    assert order(1) != probed.problem.tolist()


def test_selection_error_messages_give_the_numbers():
    # lowest CV: "uniform unsolved" [30, 30, 31, 29], sqrt(0.5) / 30 = 0.024
    with pytest.raises(rl.NoPromptsError, match=r"kept none of 5 prompts: .*rl.max_length_cv=0.001 \(lowest 0.024\)"):
        rl.select_prompts(_probed(), prompt_optimization=True, rebalance=False, **{**SHIPPED, "max_length_cv": 0.001})
    with pytest.raises(rl.NoPromptsError, match=r"kept none of 5 prompts \(4 above rl.max_pass_rate=0.0, "
                                                r"1 never solved with rl.drop_unsolved\); the starting model"):
        rl.select_prompts(_probed(), prompt_optimization=False, rebalance=True, **{**SHIPPED, "max_pass_rate": 0.0})
    solved = _probed().query("n_correct > 0")
    with pytest.raises(rl.NoPromptsError, match=r"kept none of 4 prompts \(4 above rl.max_pass_rate=0.0, 0 never "
                                                r"solved\); the starting model"):
        rl.select_prompts(solved, prompt_optimization=False, rebalance=True,
                          **{**SHIPPED, "max_pass_rate": 0.0, "drop_unsolved": False})


def test_balance_without_drop_all_equal_and_with_0_1_rewards():
    # group 0 all correct, group 1 all wrong: no kind to balance against, nothing kept (and the
    # groups after them are still balanced); group 2: 1 correct + 1 of 3 wrong; group 3: 2 + 2
    r = torch.tensor([1., 1, 1, 1,   0, 0, 0, 0,   0, 1, 0, 0,   1, 0, 0, 1])
    keep = rl.balance_mask(r, 4, balance=True, drop_all_equal=False, generator=torch.Generator().manual_seed(0))
    g = keep.view(4, 4)
    assert not g[0].any() and not g[1].any()
    assert g[2, 1] and int(g[2].sum()) == 2
    assert g[3].all()


def test_drop_all_equal_with_0_1_rewards_drops_only_equal_groups():
    r = torch.tensor([1., 0, 0, 1,   0, 0, 0, 0,   1, 1, 1, 1,   0.5, 0.5, 0.5, 0.5000001])
    keep = rl.balance_mask(r, 4, balance=False, drop_all_equal=True)
    assert keep.view(4, 4).all(dim=1).tolist() == [True, False, False, False]
    assert keep.view(4, 4).any(dim=1).tolist() == [True, False, False, False]


def test_balance_threshold_is_a_parameter():
    r = torch.tensor([0.2, 0.8, 0.9, 0.1, 0.7, 0.1, 0.2, 0.3])
    # above 0.5 is correct: group 0 is 2 correct + 2 wrong (all kept); group 1 is 1 + 1 of 3 wrong
    keep = rl.balance_mask(r, 4, balance=True, drop_all_equal=True, correct_above=0.5,
                           generator=torch.Generator().manual_seed(0))
    assert keep[:4].all() and keep[4] and int(keep[4:].sum()) == 2
    # at the default (0.0) every reward here counts as correct: nothing to balance, nothing kept
    assert not rl.balance_mask(r, 4, balance=True, drop_all_equal=False).any()
    with pytest.raises(ValueError, match=r"multiple of group_size=4 entries, got shape \(6,\)"):
        rl.balance_mask(torch.ones(6), 4, balance=True, drop_all_equal=True)
    with pytest.raises(ValueError, match=r"got shape \(2, 4\)"):
        rl.balance_mask(torch.ones(2, 4), 4, balance=True, drop_all_equal=True)


# Hand-worked GRPO advantages. Group 0: rewards [2, 0, 1, 5], the 5 not kept: kept mean 1,
# deviations [1, -1, 0], unbiased std sqrt(2/2) = 1. Group 1: [1, 1, 1, -1] all kept: mean 0.5,
# deviations [.5, .5, .5, -1.5], std sqrt(3/3) = 1. Group 2: only the 4 kept: deviation 0.
# Group 3: nothing kept.
ADV_R = torch.tensor([2., 0, 1, 5,   1, 1, 1, -1,   4, 0, 0, 0,   3, 3, 3, 3])
ADV_KEEP = torch.tensor([1, 1, 1, 0,   1, 1, 1, 1,   1, 0, 0, 0,   0, 0, 0, 0], dtype=torch.bool)
ADV_DEV = [1, -1, 0, 0,   .5, .5, .5, -1.5,   0, 0, 0, 0,   0, 0, 0, 0]


def test_group_advantages_hand_worked():
    assert rl.group_advantages(ADV_R, ADV_KEEP, 4, "none").tolist() == ADV_DEV
    group = rl.group_advantages(ADV_R, ADV_KEEP, 4, "group")
    assert group.tolist() == pytest.approx([d / (1 + 1e-4) for d in ADV_DEV], rel=1e-6, abs=1e-9)
    assert rl.group_advantages(ADV_R, ADV_KEEP, 4).tolist() == group.tolist()  # "group" is the default
    # "batch": one std over all 8 kept rewards
    kept = np.array([2, 0, 1, 1, 1, 1, -1, 4], dtype=float)
    std = kept.std(ddof=1)
    batch = rl.group_advantages(ADV_R, ADV_KEEP, 4, "batch")
    assert batch.tolist() == pytest.approx([d / (std + 1e-4) for d in ADV_DEV], rel=1e-6, abs=1e-9)


def test_group_advantages_batch_scale_with_few_kept():
    r = torch.tensor([1., -1, 7, 7])
    two = rl.group_advantages(r, torch.tensor([True, True, False, False]), 4, "batch")
    assert two.tolist() == pytest.approx([1 / (2 ** 0.5 + 1e-4), -1 / (2 ** 0.5 + 1e-4), 0, 0], rel=1e-6)
    one = rl.group_advantages(r, torch.tensor([True, False, False, False]), 4, "batch")
    assert one.tolist() == [0.0, 0.0, 0.0, 0.0]  # one kept reward: no std, no nan
    with pytest.raises(ValueError, match="scale must be 'group', 'batch' or 'none', got 'bad'"):
        rl.group_advantages(r, torch.ones(4, dtype=torch.bool), 4, "bad")


@pytest.mark.parametrize("step,total,start,end,fraction,expected", [
    (-5, 100, 1.0, 0.6, 0.5, 1.0),   # before the start: the start value
    (10, 100, 1.0, 0.6, 0.5, 0.92),  # 1.0 - 0.4 * 10/50
    (10, 100, 1.0, 0.6, 0.2, 0.8),   # 1.0 - 0.4 * 10/20
    (40, 100, 1.0, 0.6, 0.2, 0.6),   # past the span: constant
    (0, 10, 1.0, 0.6, -0.1, 0.6),    # no span: the end value
    (3, 4, 0.5, 1.5, 1.0, 1.25),     # rising works too
])
def test_annealed_temperature_values(step, total, start, end, fraction, expected):
    got = rl.annealed_temperature(step, total, start, end, fraction)
    assert type(got) is float and got == pytest.approx(expected, rel=1e-12)


def test_annealed_temperature_error_message():
    with pytest.raises(ValueError, match="total_steps must be positive, got -1"):
        rl.annealed_temperature(0, -1, 1.0, 0.6, 0.5)


def test_step_curve_joins_logs_with_the_previous_steps_groups_and_temperature():
    summary = {
        "temperatures": [(0, 1.0, 1.0), (1, 0.8, 0.8)],
        "groups": [{"step": 0, "groups": 4, "all_equal_groups": 1, "filtered_groups": 2},
                   {"step": 1, "groups": 5, "all_equal_groups": 2}],
        "log": [{"step": 1, "reward": -0.5, "reward_std": 0.25, "completions/mean_length": 12.0, "loss": 0.125},
                {"step": 2, "reward": 0.0, "loss": 0.0625},
                {"step": 3, "reward": 0.5},
                {"reward": 1.0}],
    }
    df = rl.step_curve(summary)
    assert list(df.columns) == ["step", "reward", "reward_std", "length", "loss", "temperature", "all_equal_share",
                                "filtered_share", "verified_share"]
    want = {"step": [1, 2, 3, 0], "reward": [-0.5, 0.0, 0.5, 1.0], "reward_std": [0.25, None, None, None],
            "length": [12.0, None, None, None], "loss": [0.125, 0.0625, None, None],
            "temperature": [1.0, 0.8, None, None], "all_equal_share": [0.25, 0.4, None, None],
            "filtered_share": [0.5, 0.0, None, None], "verified_share": [None] * 4}  # no reward_calls: unknown
    for col, values in want.items():
        got = df[col].tolist()
        assert [None if pd.isna(g) else g for g in got] == pytest.approx(values), col


def test_step_curve_gives_the_share_of_right_answers_with_true_arithmetic_per_step():
    summary = {"temperatures": [], "groups": [],
               "log": [{"step": 1, "reward": 0.0}, {"step": 2, "reward": 0.5}, {"step": 3, "reward": -1.0}],
               "reward_calls": [{"rollouts": 8, "correct": 4, "lucky": 1}, {"rollouts": 8, "correct": 5, "lucky": 0},
                                {"rollouts": 8, "correct": 0, "lucky": 0}]}
    got = rl.step_curve(summary)["verified_share"].tolist()
    assert got[:2] == [0.75, 1.0] and pd.isna(got[2])  # no right answer at step 3: no share


LUCKY = "<think>\n7 * 9 = 810\n81 mod 10 = 3\n</think>\n\\boxed{3}"  # right answer, two false steps
CLEAN = "<think>\n7 * 9 = 63\n63 mod 10 = 3\n</think>\n\\boxed{3}"
WRONG = "<think>\n7 * 9 = 63\n63 mod 10 = 4\n</think>\n\\boxed{4}"


@pytest.mark.parametrize("check_work,want", [(False, [1.0, 1.0, -1.0]), (True, [1.0, -1.0, -1.0])])
def test_reward_counts_lucky_answers_and_can_score_them_wrong(check_work, want):
    with Verifier(workers=0) as v:
        reward = rl.VerifiableReward(v, check_work=check_work)
        got = reward(prompts=[""] * 3, completions=[CLEAN, LUCKY, WRONG], answer=["3"] * 3)
        reward(prompts=[""], completions=[[{"role": "assistant", "content": LUCKY}]], answer=["3"])
    assert got == want
    assert reward.counts == {"correct": 3, "wrong": 1, "lucky": 2}  # verdicts of the checker; lucky among them
    assert reward.calls == [{"rollouts": 3, "correct": 2, "lucky": 1}, {"rollouts": 1, "correct": 1, "lucky": 1}]


def _rows(hits_by_step: dict[int, list[int]]) -> list[dict]:
    """Tracker rows with per-problem cons hits for problems q0, q1, ..."""
    return [{"step": s, "pass1": 0.5, "cons@16": sum(h) / len(h),
             "cons_by_problem": {f"q{i}": float(x) for i, x in enumerate(h)}} for s, h in hits_by_step.items()]


def test_arm_result_splits_the_per_problem_column_off_the_table():
    arm = rl.ArmResult.from_rows({}, _rows({0: [1, 0, 0, 1], 10: [1, 1, 0, 1]}), 3.0)
    assert list(arm.history.columns) == ["step", "pass1", "cons@16"]
    assert arm.history["cons@16"].tolist() == [0.5, 0.75]
    assert arm.cons_by_step == {0: {"q0": 1.0, "q1": 0.0, "q2": 0.0, "q3": 1.0},
                                10: {"q0": 1.0, "q1": 1.0, "q2": 0.0, "q3": 1.0}}


def test_cons_comparison_pairs_steps_and_arms_by_problem():
    # 8 problems; tricks gains q1, q2 and loses q0 by step 20; plain gains q1 only
    start = [1, 0, 0, 1, 1, 0, 1, 0]
    tricks = rl.ArmResult.from_rows({}, _rows({0: start, 20: [0, 1, 1, 1, 1, 0, 1, 0]}), 0.0)
    plain = rl.ArmResult.from_rows({}, _rows({0: start, 20: [1, 1, 0, 1, 1, 0, 1, 0]}), 0.0)
    table = rl.cons_comparison({"tricks": tricks, "plain": plain}, seed=0).set_index("comparison")
    assert list(table.index) == ["tricks: step 20 - step 0", "plain: step 20 - step 0", "tricks - plain at step 20"]
    t = table.loc["tricks: step 20 - step 0"]
    assert t["mean"] == pytest.approx(1 / 8) and (t["better"], t["worse"], t["n_problems"]) == (2, 1, 8)
    assert table.loc["plain: step 20 - step 0", "mean"] == pytest.approx(1 / 8)
    d = table.loc["tricks - plain at step 20"]
    assert d["mean"] == pytest.approx(0.0) and (d["better"], d["worse"]) == (1, 1)  # q2 for tricks, q0 for plain
    assert d["lo"] < 0 < d["hi"]


def test_cons_comparison_leaves_out_arms_without_a_step_zero():
    resumed = rl.ArmResult.from_rows({}, _rows({20: [1, 0]}), 0.0)  # a resumed run: no step 0
    other = rl.ArmResult.from_rows({}, _rows({0: [0, 0], 20: [1, 1]}), 0.0)
    table = rl.cons_comparison({"resumed": resumed, "other": other})
    assert table["comparison"].tolist() == ["other: step 20 - step 0", "resumed - other at step 20"]
    assert table.iloc[1]["mean"] == pytest.approx(-0.5)


def test_all_equal_groups_by_hand():
    r = torch.tensor([1., 1, 1, -1, -1, -1, 0.5, 0.5])
    assert rl.all_equal_groups(r, 2).tolist() == [True, False, True, True]
    assert rl.all_equal_groups(r, 4).tolist() == [False, False]


def test_replace_group_rows_repads_prompts_left_and_completions_right():
    pad = 0
    out = {"prompt_ids": torch.tensor([[7, 8], [7, 8], [5, 6], [5, 6]]), "prompt_mask": torch.ones(4, 2, dtype=torch.long),
           "completion_ids": torch.tensor([[1, 2], [3, 0], [4, 0], [4, 4]]),
           "completion_mask": torch.tensor([[1, 1], [1, 0], [1, 0], [1, 1]]),
           "ref_per_token_logps": torch.full((4, 2), -1.0), "advantages": torch.tensor([1., -1, 0, 0]),
           "num_items_in_batch": torch.tensor(6.0)}
    extra = {"prompt_ids": torch.tensor([[0, 9, 9], [0, 9, 9], [3, 3, 3], [3, 3, 3]]),
             "prompt_mask": torch.tensor([[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]),
             "completion_ids": torch.tensor([[2], [2], [6], [6]]),
             "completion_mask": torch.tensor([[1], [1], [1], [1]]),
             "ref_per_token_logps": torch.full((4, 1), -2.0), "advantages": torch.tensor([0., 0, 0.7, -0.7]),
             "num_items_in_batch": torch.tensor(4.0)}
    merged = rl.replace_group_rows(out, extra, slot=1, donor=1, group_size=2, pad_token_id=pad)
    # group 0 kept, left-padded to the wider prompt; group 1 is extra's group 1
    assert merged["prompt_ids"].tolist() == [[0, 7, 8], [0, 7, 8], [3, 3, 3], [3, 3, 3]]
    assert merged["prompt_mask"].tolist() == [[0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert merged["completion_ids"].tolist() == [[1, 2], [3, 0], [6, 0], [6, 0]]
    assert merged["completion_mask"].tolist() == [[1, 1], [1, 0], [1, 0], [1, 0]]
    assert merged["ref_per_token_logps"].tolist() == [[-1, -1], [-1, -1], [-2, 0], [-2, 0]]
    assert merged["advantages"].tolist() == pytest.approx([1, -1, 0.7, -0.7])
    assert float(merged["num_items_in_batch"]) == 5.0
    assert out["completion_ids"].tolist()[2] == [4, 0]  # the input batch is not changed in place
    with pytest.raises(NotImplementedError, match="unknown per-row field 'mystery'"):
        rl.replace_group_rows({**out, "mystery": torch.zeros(4)}, {**extra, "mystery": torch.zeros(4)}, 0, 0, 2,
                              pad_token_id=pad)


def test_refill_replaces_all_equal_groups_with_mixed_groups_of_new_prompts(smoke_params, tiny_model, tiny_tokenizer,
                                                                          tmp_path):
    """Prompts whose reward is -1 whatever the model writes (all-equal groups) are replaced by new
    prompts whose completions score by the parity of their length (mixed groups): the step then
    trains; without refill every group is left out and the weights do not move."""
    def parity(prompts=None, completions=None, answer=None, **kwargs):
        return [-1.0 if a == "same" else (1.0 if len(rl.VerifiableReward.text_of(c)) % 2 else -1.0)
                for a, c in zip(answer, completions)]
    parity.__name__ = "parity"
    ps = _prompts()
    section = _section(smoke_params, max_steps=1, beta=0.0)
    results = {}
    for refill in (False, True):
        model = copy.deepcopy(tiny_model)
        before = [p.detach().clone() for p in model.parameters()]
        cfg = rl.grpo_config(section, tmp_path / str(refill), device=torch.device("cpu"), dtype=torch.float32, seed=0,
                             temperature=1.0)
        new = rl.to_dataset(ps.assign(answer="mixed"))
        trainer = rl.RecipeGRPOTrainer(model=model, args=cfg, reward_funcs=[parity],
                                       train_dataset=rl.to_dataset(ps.assign(answer="same")),
                                       processing_class=tiny_tokenizer, balance=True, drop_all_equal=True,
                                       refill=iter(new) if refill else None, refill_rounds=2)
        trainer.train()
        moved = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
        results[refill] = (trainer.group_log[0], moved)
    log, moved = results[False]
    assert log["refilled_groups"] == 0 and log["filtered_groups"] == log["groups"] == 2 and moved == 0
    log, moved = results[True]
    assert log["refilled_groups"] == 2 and log["all_equal_groups"] == 0 and log["filtered_groups"] == 0
    assert moved > 0


def test_grpo_without_token_entropy_trains_bit_for_bit_as_trl(smoke_params, tiny_model, tiny_tokenizer, tmp_path):
    """TRL's fused head computes each token's entropy only for its metric here (no bonus, no mask):
    asking for log-probabilities alone gives the same weights to the bit, under a changing
    temperature (both heads follow it) and a reference model; only TRL's path logs an entropy."""
    def parity(prompts=None, completions=None, answer=None, **kwargs):
        return [1.0 if len(rl.VerifiableReward.text_of(c)) % 2 else -1.0 for c in completions]
    parity.__name__ = "parity"
    section = _section(smoke_params, max_steps=2, beta=0.05)
    tiny_model.save_pretrained(tmp_path / "start")  # TRL builds the KL reference from the policy's path
    runs = {}
    for token_entropy in (True, False):
        model = copy.deepcopy(tiny_model)
        model.config._name_or_path = str(tmp_path / "start")
        cfg = rl.grpo_config(section, tmp_path / str(token_entropy), device=torch.device("cpu"), dtype=torch.float32,
                             seed=0, temperature=1.0)
        trainer = rl.RecipeGRPOTrainer(model=model, args=cfg, reward_funcs=[parity],
                                       train_dataset=rl.to_dataset(_prompts()), processing_class=tiny_tokenizer,
                                       temperature_schedule=lambda step, steps: 1.0 - 0.2 * step,
                                       token_entropy=token_entropy)
        trainer.train()
        assert trainer._lean_entropy is (not token_entropy)
        assert [t for _, _, t in trainer.temperature_log] == pytest.approx([1.0, 0.8])  # the log-prob head followed
        runs[token_entropy] = (model, [r for r in trainer.state.log_history if "loss" in r])
    (full, full_log), (lean, lean_log) = runs[True], runs[False]
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), lean.state_dict().values()))
    assert any((a != b).any() for a, b in zip(full.state_dict().values(), tiny_model.state_dict().values()))
    assert [r["loss"] for r in full_log] == [r["loss"] for r in lean_log]
    assert all("entropy" in r for r in full_log) and not any("entropy" in r for r in lean_log)
