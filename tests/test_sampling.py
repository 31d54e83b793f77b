"""Sampler back-ends: the vLLM glue (with a stand-in vllm module: no GPU here) and the fallback."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from lib import chat, model as modellib, sampling


@pytest.fixture
def fake_vllm(monkeypatch, tiny_tokenizer):
    """A minimal stand-in with vLLM's API surface (LLM, SamplingParams, outputs)."""
    calls = {}

    @dataclass
    class SamplingParams:
        n: int
        temperature: float
        top_p: float
        max_tokens: int
        seed: int
        skip_special_tokens: bool

    class LLM:
        def __init__(self, model, **kwargs):
            calls["init"] = (model, kwargs)

        def get_tokenizer(self):
            return tiny_tokenizer

        def generate(self, prompts, params, use_tqdm=True):
            calls["prompts"], calls["params"] = prompts, params
            out = types.SimpleNamespace
            return [out(outputs=[out(text=f"<think>x</think>\\boxed{{{i}}}", token_ids=[1] * (3 + j),
                                     finish_reason="stop" if j == 0 else "length") for j in range(params.n)])
                    for i in range(len(prompts))]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    monkeypatch.setattr(sampling, "_VLLM_ENGINES", {})
    return calls


def test_vllm_sampler_builds_prompts_and_params(fake_vllm, tiny_tokenizer):
    s = sampling.VLLMSampler("/ckpt", temperature=0.6, top_p=0.95, max_new_tokens=77)
    out = s.sample(["Solve 2x = 4.", "Start with 1. Add 2."], n=2, seed=5)
    assert fake_vllm["prompts"] == [chat.prompt_text(tiny_tokenizer, "Solve 2x = 4."),
                                    chat.prompt_text(tiny_tokenizer, "Start with 1. Add 2.")]
    p = fake_vllm["params"]
    assert (p.n, p.temperature, p.top_p, p.max_tokens, p.seed) == (2, 0.6, 0.95, 77, 5)
    assert out[1][0] == sampling.Completion("<think>x</think>\\boxed{1}", 3, True)
    assert out[1][1].finished is False and out[1][1].n_tokens == 4
    # greedy: top_p is not applied
    sampling.VLLMSampler("/ckpt", temperature=0.0).sample(["q"], n=1)
    assert fake_vllm["params"].top_p == 1.0


def test_make_sampler_falls_back_without_gpu(fake_vllm, tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    path = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    monkeypatch.setattr(sampling, "vllm_available", lambda: False)
    s, backend = sampling.make_sampler(path, device="cpu", use_vllm=True, temperature=0.0, top_p=1.0,
                                       max_new_tokens=4, batch_size=2, progress=False)
    assert isinstance(s, sampling.HFSampler) and "vLLM requested but not available" in backend
    assert len(s.sample(["Solve 2x = 4."])[0]) == 1
    monkeypatch.setattr(sampling, "vllm_available", lambda: True)
    s, backend = sampling.make_sampler(path, device="cuda", use_vllm=True, temperature=0.6, top_p=0.95,
                                       max_new_tokens=4, batch_size=2)
    assert isinstance(s, sampling.VLLMSampler) and backend == "vllm"


def test_vllm_unavailable_on_cpu():
    assert sampling.vllm_available() is False  # CI: no vllm installed, no GPU


# ---------------------------------------------------------------- batches in forked processes

FORK_PROBLEMS = ["Start with 3. Add 4.", "What is the greatest common divisor of 84 and 36?", "Solve 2x + 1 = 7.",
                 "Start with 12. Multiply by 3, then subtract 5, then add 9.", "What is 17 + 25?",
                 "How many ways can 3 books be arranged on a shelf?", "Solve for x: 5x - 3 = 12."]


def _children_of_this_process() -> set[int]:
    """Live (not zombie) child pids: other tests' pools may be running, so compare before and after."""
    import os

    import psutil

    return {c.pid for c in psutil.Process(os.getpid()).children() if c.status() != psutil.STATUS_ZOMBIE}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked sampling is Linux-only")
def test_forked_batches_give_the_same_samples_as_one_process(tiny_model, tiny_tokenizer):
    import torch

    before, children = torch.get_num_threads(), _children_of_this_process()
    kw = dict(n=3, temperature=1.0, max_new_tokens=12, batch_size=4, seed=5, progress=False)  # 21 jobs, 6 batches
    one = sampling.sample(tiny_model, tiny_tokenizer, FORK_PROBLEMS, **kw)
    rng_one = torch.get_rng_state()
    ids_one = sampling.generate_ids(tiny_model, [[5, 6, 7], [8, 9], [10, 11, 12, 13]] * 3, eos_token_id=2,
                                    pad_token_id=0, batch_size=2, seed=1, max_new_tokens=6, processes=1)
    sampling.set_processes(3)
    try:
        torch.manual_seed(123)  # the forked path must leave the RNG where the last batch left it
        forked = sampling.sample(tiny_model, tiny_tokenizer, FORK_PROBLEMS, **kw)
        rng_forked = torch.get_rng_state()
    finally:
        sampling.set_processes(1)
    ids_forked = sampling.generate_ids(tiny_model, [[5, 6, 7], [8, 9], [10, 11, 12, 13]] * 3, eos_token_id=2,
                                       pad_token_id=0, batch_size=2, seed=1, max_new_tokens=6, processes=2)
    assert forked == one and ids_forked == ids_one  # the same completions, in the caller's order
    assert torch.equal(rng_forked, rng_one)  # and the same RNG state after, for whatever samples next
    assert len({c.text for c in one[0]}) > 1  # real samples at T=1, not one repeated string
    assert torch.get_num_threads() == before  # the parent's threads are untouched
    assert _children_of_this_process() <= children  # every child reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked sampling is Linux-only")
def test_a_failing_or_vanishing_sampling_process_is_a_named_error(tiny_model, tiny_tokenizer, monkeypatch):
    import os

    children = _children_of_this_process()
    real = sampling._generate_batch

    def fails_on_batch_1(model, prompt_ids, chunk, b, **kw):
        if b == 1:
            raise ValueError("batch one is broken")
        return real(model, prompt_ids, chunk, b, **kw)

    monkeypatch.setattr(sampling, "_generate_batch", fails_on_batch_1)
    sampling.set_processes(2)
    try:
        with pytest.raises(sampling.SamplingWorkerError, match="(?s)failed.*ValueError: batch one is broken"):
            sampling.sample(tiny_model, tiny_tokenizer, FORK_PROBLEMS, n=2, temperature=1.0, max_new_tokens=4,
                            batch_size=4, progress=False)
    finally:
        sampling.set_processes(1)
    assert _children_of_this_process() <= children

    def dies_on_batch_2(model, prompt_ids, chunk, b, **kw):
        if b == 2:
            os._exit(9)  # a child killed mid-job (the OOM killer, a segfault): no word back
        return real(model, prompt_ids, chunk, b, **kw)

    monkeypatch.setattr(sampling, "_generate_batch", dies_on_batch_2)
    with pytest.raises(sampling.SamplingWorkerError, match="ended without its results.*sample_processes: 1"):
        sampling.generate_ids(tiny_model, [[5, 6, 7]] * 12, eos_token_id=2, pad_token_id=0, batch_size=2,
                              max_new_tokens=4, processes=2)
    assert _children_of_this_process() <= children
    with pytest.raises(ValueError, match="must be >= 1"):
        sampling.set_processes(0)


def test_one_batch_or_one_process_never_forks(tiny_model, monkeypatch):
    def no_fork(*a, **k):
        raise AssertionError("forked")

    monkeypatch.setattr(sampling, "_forked_batches", no_fork)
    one_batch = sampling.generate_ids(tiny_model, [[5, 6, 7], [8, 9]], eos_token_id=2, pad_token_id=0,
                                      batch_size=8, max_new_tokens=4, processes=4)
    in_process = sampling.generate_ids(tiny_model, [[5, 6, 7], [8, 9]], eos_token_id=2, pad_token_id=0,
                                       batch_size=8, max_new_tokens=4, processes=1)
    two_batches = sampling.generate_ids(tiny_model, [[5, 6, 7], [8, 9]], eos_token_id=2, pad_token_id=0,
                                        batch_size=1, max_new_tokens=4, processes=1)
    assert one_batch == in_process and len(one_batch) == 2 and len(two_batches) == 2


def test_a_stage_sets_its_sample_processes_from_params(use_fake_stages):
    from lib import artifacts, params as params_mod, stages

    load = use_fake_stages([stages.Stage("00_base_model", "base", ("run",))])
    ns = params_mod.to_flat(load("run.sample_processes=3"), ("run",))
    try:
        artifacts.open_stage("00_base_model", ns)
        assert sampling._PROCESSES == 3
    finally:
        sampling.set_processes(1)
