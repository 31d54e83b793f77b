"""Training wrapper: CPU-appropriate config, checkpoint + resume to the same final step and result."""
from __future__ import annotations

import warnings

import pytest
import torch
from transformers import TrainerCallback

from lib import chat, problems, training
from lib.model import build_scratch


class Crash(TrainerCallback):
    """Simulates a killed run: raises once the trainer reaches ``at`` steps."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"killed at step {self.at}")


@pytest.fixture
def rows():
    ps = problems.generate(48, seed=1)
    return [chat.conversation(p.problem, problems.cot_solution(p)) for p in ps]


def fresh_model(smoke_params, tokenizer):
    torch.manual_seed(0)
    return build_scratch(smoke_params.model, tokenizer)


def config(smoke_params, out_dir, **kw):
    cfg = smoke_params.sft.model_copy(update={"max_steps": 6, "checkpoint_every": 2, "batch_size": 8, **kw})
    return training.sft_config(cfg, out_dir, device=torch.device("cpu"), dtype=torch.float32, seed=0)


def test_cpu_config_turns_off_slow_defaults(smoke_params, tmp_path):
    cfg = config(smoke_params, tmp_path)
    assert cfg.bf16 is False and cfg.activation_checkpointing is False and cfg.use_cpu
    assert cfg.save_strategy == "steps" and cfg.save_steps == 2
    assert cfg.logging_steps == 1  # short runs still log a curve


def test_interrupted_run_resumes_to_the_same_end(smoke_params, tiny_tokenizer, rows, tmp_path):
    full = training.fit_sft(fresh_model(smoke_params, tiny_tokenizer), tiny_tokenizer, rows,
                            config(smoke_params, tmp_path / "full"))
    assert full["steps"] == 6 and full["resumed_from_step"] is None

    with pytest.raises(KeyboardInterrupt):
        training.fit_sft(fresh_model(smoke_params, tiny_tokenizer), tiny_tokenizer, rows,
                         config(smoke_params, tmp_path / "cut"), callbacks=[Crash(at=5)])
    assert training.last_checkpoint(tmp_path / "cut").endswith("checkpoint-4")
    model = fresh_model(smoke_params, tiny_tokenizer)  # a new process would start from scratch weights
    resumed = training.fit_sft(model, tiny_tokenizer, rows, config(smoke_params, tmp_path / "cut"))
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 6
    assert resumed["tokens_seen"] == full["tokens_seen"]
    assert resumed["curve"][-1]["loss"] == pytest.approx(full["curve"][-1]["loss"], rel=1e-4)


def test_precision_follows_params_and_warns_where_cpu_bf16_is_slow(smoke_params, tmp_path, monkeypatch):
    from lib import model as modellib
    cpu = torch.device("cpu")
    assert modellib.train_dtype("auto", cpu) == torch.float32  # CPU: fp32 unless params ask (LOG.md)
    assert modellib.train_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert modellib.train_dtype("float32", torch.device("cuda")) == torch.float32  # an explicit choice wins
    with pytest.raises(ValueError, match="model.dtype must be"):
        modellib.train_dtype("fp16", cpu)

    monkeypatch.setenv("PHI4MR_CPU_BF16", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native bf16: no warning
        assert modellib.train_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setenv("PHI4MR_CPU_BF16", "0")
    with pytest.warns(UserWarning, match="3x slower"):
        assert modellib.train_dtype("bfloat16", cpu) == torch.bfloat16
    monkeypatch.setenv("PHI4MR_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="PHI4MR_CPU_BF16 must be 0 or 1"):
        modellib.cpu_has_fast_bf16()

    monkeypatch.delenv("PHI4MR_CPU_BF16")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert modellib.cpu_has_fast_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert modellib.cpu_has_fast_bf16() is True

    # the trainer's autocast follows the dtype; activation checkpointing follows its own key (off here)
    cfg = smoke_params.sft.model_copy(update={"max_steps": 2})
    on = training.sft_config(cfg, tmp_path, device=cpu, dtype=torch.bfloat16, seed=0)
    assert on.bf16 is True and on.use_cpu and on.activation_checkpointing is False


def test_activation_checkpointing_is_a_params_key_with_the_same_steps(smoke_params, tiny_tokenizer, rows, tmp_path,
                                                                       one_thread):
    """On (real scale): the trainer recomputes activations, and training takes the very same steps."""
    off = config(smoke_params, tmp_path / "off", max_steps=3, checkpoint_every=0, lr=5e-3)
    on = config(smoke_params, tmp_path / "on", max_steps=3, checkpoint_every=0, lr=5e-3, activation_checkpointing=True)
    assert off.activation_checkpointing is False and on.activation_checkpointing is True
    a, b = fresh_model(smoke_params, tiny_tokenizer), fresh_model(smoke_params, tiny_tokenizer)
    sa = training.fit_sft(a, tiny_tokenizer, rows, off)
    sb = training.fit_sft(b, tiny_tokenizer, rows, on)
    assert b.is_activation_checkpointing and not a.is_activation_checkpointing
    assert [r["loss"] for r in sb["curve"]] == pytest.approx([r["loss"] for r in sa["curve"]], rel=1e-4)
    moved = max((p.detach() - q).abs().max().item()
                for p, q in zip(a.parameters(), fresh_model(smoke_params, tiny_tokenizer).parameters()))
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert moved > 1e-3 and diff < 1e-3 * moved, (moved, diff)


@pytest.mark.slow
def test_compile_is_a_params_key_with_the_same_losses(smoke_params, tiny_tokenizer, rows, tmp_path):
    """On: the Trainer trains a torch.compile'd model, and the losses are eager's up to rounding.
    In one process (a notebook training twice), eager, compiled, eager again: accelerate keeps the
    first trainer's compile setting unless lib.training.match_compile_state resets it."""
    eager = config(smoke_params, tmp_path / "eager", max_steps=3, checkpoint_every=0, lr=5e-3)
    compiled = config(smoke_params, tmp_path / "compiled", max_steps=3, checkpoint_every=0, lr=5e-3, compile=True)
    assert eager.torch_compile is False and compiled.torch_compile is True
    a, b = fresh_model(smoke_params, tiny_tokenizer), fresh_model(smoke_params, tiny_tokenizer)
    sa = training.fit_sft(a, tiny_tokenizer, rows, eager)
    compiled_models = []
    original = torch.compile

    def spy(model, *args, **kwargs):
        compiled_models.append(model)
        return original(model, *args, **kwargs)

    torch.compile = spy
    try:
        sb = training.fit_sft(b, tiny_tokenizer, rows, compiled)
    finally:
        torch.compile = original
    assert compiled_models, "torch_compile=True did not compile the model"
    n = len(compiled_models)
    torch.compile = spy
    try:
        again = training.fit_sft(fresh_model(smoke_params, tiny_tokenizer), tiny_tokenizer, rows,
                                 config(smoke_params, tmp_path / "eager_again", max_steps=1, checkpoint_every=0,
                                        lr=5e-3))
    finally:
        torch.compile = original
    assert len(compiled_models) == n, "an eager trainer after a compiled one compiled too"
    assert again["curve"][0]["loss"] == pytest.approx(sa["curve"][0]["loss"], rel=1e-6)
    assert [r["loss"] for r in sb["curve"]] == pytest.approx([r["loss"] for r in sa["curve"]], rel=1e-4)
    moved = max((p.detach() - q).abs().max().item()
                for p, q in zip(a.parameters(), fresh_model(smoke_params, tiny_tokenizer).parameters()))
    diff = max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))
    assert moved > 1e-3 and diff < 1e-3 * moved, (moved, diff)


@pytest.mark.parametrize("schedule", ["cosine", "constant_with_warmup"])
def test_lr_schedule_follows_params(smoke_params, tiny_tokenizer, rows, tmp_path, schedule):
    cfg = config(smoke_params, tmp_path, lr_scheduler=schedule, lr=1e-3, warmup_ratio=0.0, checkpoint_every=0)
    assert cfg.lr_scheduler_type == schedule
    out = training.fit_sft(fresh_model(smoke_params, tiny_tokenizer), tiny_tokenizer, rows, cfg)
    lrs = [row["lr"] for row in out["curve"]]
    assert len(lrs) >= 5 and lrs[0] == pytest.approx(1e-3)
    if schedule == "constant_with_warmup":  # a stage a later one continues: no decay
        assert lrs[-1] == pytest.approx(1e-3)
    else:
        assert lrs[-1] < 0.2e-3 and lrs == sorted(lrs, reverse=True)


@pytest.mark.parametrize("batch,accum,global_batch,processes,expected", [
    (2, 8, None, 8, 8),        # no global batch: grad_accum as given
    (2, 1, 128, 8, 8),         # the paper: 128 = 2 x 8 x 8 GPUs
    (2, 1, 128, 2, 32),        # the same global batch on 2 processes accumulates more
    (16, 1, 16, 1, 1),
    (2, 8, 128, 8, 8),         # a consistent grad_accum is accepted
])
def test_grad_accum_is_derived_from_the_global_batch(smoke_params, batch, accum, global_batch, processes, expected):
    from lib.training import grad_accum_steps

    cfg = smoke_params.sft.model_copy(update={"batch_size": batch, "grad_accum": accum, "global_batch_size": global_batch})
    assert grad_accum_steps(cfg, processes) == expected


def test_an_impossible_global_batch_is_refused_by_name(smoke_params, monkeypatch):
    from lib.training import BatchSizeError, grad_accum_steps, trainer_kwargs

    cfg = smoke_params.sft.model_copy(update={"batch_size": 3, "global_batch_size": 128})
    with pytest.raises(BatchSizeError, match=r"global_batch_size=128 is not a multiple of batch_size=3 x 2 process"):
        grad_accum_steps(cfg, 2)
    bad = smoke_params.sft.model_copy(update={"batch_size": 2, "grad_accum": 4, "global_batch_size": 128})
    with pytest.raises(BatchSizeError, match="grad_accum=4 contradicts global_batch_size=128"):
        grad_accum_steps(bad, 8)
    # the trainer config reads the launcher's WORLD_SIZE
    ok = smoke_params.sft.model_copy(update={"batch_size": 2, "global_batch_size": 8})
    monkeypatch.setenv("WORLD_SIZE", "2")
    kw = trainer_kwargs(ok, "/tmp/x", device=torch.device("cpu"), dtype=torch.float32, seed=0)
    assert kw["gradient_accumulation_steps"] == 2
