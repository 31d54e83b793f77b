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
