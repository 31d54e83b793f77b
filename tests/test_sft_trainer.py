"""lib.sft_trainer: the model's own loss, the faster of the recipe's two loss paths, must be TRL's loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib import chat, problems
from lib.model import build_scratch
from lib.sft_trainer import RecipeSFTTrainer
from lib.training import sft_config


pytestmark = pytest.mark.usefixtures("one_thread")


def test_padded_sft_loss_is_trls_and_the_mean_completion_nll(tiny_tokenizer, smoke_params, tmp_path):
    """On one padded batch of TRL's own collator: both loss paths give the mean negative log-prob
    of the completion tokens (computed here from the logits, independently), and equal gradients."""
    from datasets import Dataset

    rows = [chat.conversation(p.problem, problems.cot_solution(p)) for p in problems.generate(8, seed=3)]
    cfg = sft_config(smoke_params.sft, tmp_path, device=torch.device("cpu"), dtype=torch.float32, seed=0,
                     per_device_train_batch_size=8)
    grads = {}
    for trl_loss in (False, True):
        torch.manual_seed(0)
        model = build_scratch(smoke_params.model, tiny_tokenizer)
        trainer = RecipeSFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                                   processing_class=tiny_tokenizer)
        trainer.trl_loss = trl_loss
        batch = next(iter(trainer.get_train_dataloader()))
        labels = batch["labels"]
        assert (labels != -100).sum() < (batch["attention_mask"] == 1).sum()  # prompts and pads carry no loss
        model.eval()  # no dropout: both paths see the same network
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            lp = F.log_softmax(logits[:, :-1].float(), -1)
            keep = labels[:, 1:] != -100
            nll = -lp.gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0][keep]
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=int(keep.sum()))
        loss.backward()
        assert float(loss.detach()) == pytest.approx(float(nll.mean()), rel=1e-5), trl_loss
        grads[trl_loss] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert torch.allclose(grads[False], grads[True], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_trl_loss_without_token_metrics_trains_bit_for_bit_as_trl(tiny_tokenizer, smoke_params, tmp_path, packed,
                                                                  monkeypatch):
    """The default (TRL's loss, no entropy/accuracy metrics, the head's single tile kept on a CPU) and
    TRL's own compute_loss (``token_metrics = True``) give the same losses and the same weights, to
    the bit, over a few optimizer steps; only the metrics-on trainer logs TRL's entropy and token
    accuracy."""
    from datasets import Dataset

    from lib import packing, sft_trainer

    single_tile_calls = []
    apply = sft_trainer.SingleTileLogProb.apply
    monkeypatch.setattr(sft_trainer.SingleTileLogProb, "apply",
                        staticmethod(lambda *a: single_tile_calls.append(a[0].shape) or apply(*a)))

    rows = [chat.conversation(p.problem, problems.cot_solution(p)) for p in problems.generate(24, seed=5)]
    cfg = sft_config(smoke_params.sft, tmp_path, device=torch.device("cpu"), dtype=torch.float32, seed=0,
                     per_device_train_batch_size=4, max_steps=3, logging_steps=1, save_strategy="no",
                     report_to=[], **({"max_length": 256} if packed else {}))
    runs = {}
    for metrics in (True, False):
        torch.manual_seed(0)
        model = build_scratch(smoke_params.model, tiny_tokenizer)
        old = RecipeSFTTrainer.token_metrics  # PackedSFTTrainer inherits it
        RecipeSFTTrainer.token_metrics = metrics
        try:
            if packed:
                trainer, _ = packing.packed_trainer(model, tiny_tokenizer, rows, cfg)
            else:
                trainer = RecipeSFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows),
                                           processing_class=tiny_tokenizer)
        finally:
            RecipeSFTTrainer.token_metrics = old
        trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        runs[metrics] = (logs, torch.cat([p.detach().flatten() for p in model.parameters()]))
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        with torch.no_grad():
            out = model(**batch, fused_lm_head=True)
        assert (out.entropy is not None) == metrics
    (logs_trl, w_trl), (logs_lean, w_lean) = runs[True], runs[False]
    assert len(single_tile_calls) == 3  # the default's three steps went through the single tile, TRL's did not
    assert len(logs_trl) == len(logs_lean) == 3
    assert [h["loss"] for h in logs_trl] == [h["loss"] for h in logs_lean]
    assert torch.equal(w_trl, w_lean)
    assert all("mean_token_accuracy" in h and "entropy" in h for h in logs_trl)
    assert not any("mean_token_accuracy" in h or "entropy" in h for h in logs_lean)
    assert logs_lean[-1]["num_tokens"] == logs_trl[-1]["num_tokens"] > 0


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n, vocab, hidden, masked", [(3056, 1536, 128, 0.3), (37, 50, 16, 0.0), (4096, 700, 32, 0.9)])
def test_single_tile_head_is_bit_for_bit_trls_chunked_function(n, vocab, hidden, masked, threads):
    """Log-probabilities and both gradients equal TRL's ChunkedLogProbFunction to the bit, on tiny's
    mid-training shape (16 x 191 positions, vocab 1,536) and others, with positions whose upstream
    gradient is zero (labels -100, as TRL masks them), at 1 and 2 threads."""
    from trl.kernels import ChunkedLogProbFunction

    from lib.sft_trainer import SingleTileLogProb

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(n + vocab)
        h0, w0 = torch.randn(n, hidden, generator=g), torch.randn(vocab, hidden, generator=g) * 0.1
        targets = torch.randint(0, vocab, (n,), generator=g)
        keep = torch.rand(n, generator=g) >= masked
        results = []
        for fn in ("trl", "single"):
            h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
            if fn == "trl":
                lp = ChunkedLogProbFunction.apply(h, w, None, targets, 1.0, 32768, None, 1.0, ("log_probs",))[0]
            else:
                lp = SingleTileLogProb.apply(h, w, targets)
            lp = lp.masked_fill(~keep, 0)
            (-lp.sum() / keep.sum().clamp(min=1)).backward()
            results.append((lp.detach(), h.grad, w.grad))
    finally:
        torch.set_num_threads(old_threads)
    (lp_t, gh_t, gw_t), (lp_s, gh_s, gw_s) = results
    assert torch.equal(lp_t, lp_s) and torch.equal(gh_t, gh_s) and torch.equal(gw_t, gw_s)
    # not trivially equal: the model's own cross-entropy on the same logits rounds differently
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    ce = F.cross_entropy(h @ w.t(), targets.masked_fill(~keep, -100), reduction="sum") / keep.sum().clamp(min=1)
    ce.backward()
    assert not torch.equal(w.grad, gw_t)


def test_single_tile_head_leaves_every_other_case_to_trl(monkeypatch):
    """Inside single_tile_head, TRL's tile function is still the one called for what the single tile
    does not cover (a bias, a temperature, extra outputs, more tokens than one tile), and it is put
    back on exit."""
    import trl.trainer.utils as trl_utils
    from trl.kernels import ChunkedLogProbFunction
    from trl.kernels.chunked_logprob import TOKEN_CHUNK_SIZE

    from lib import sft_trainer

    calls = []
    monkeypatch.setattr(sft_trainer.SingleTileLogProb, "apply", staticmethod(lambda *a: calls.append("single") or a[0][:, 0]))
    original = trl_utils._ChunkedLogProbFunction
    h, w, t = torch.randn(8, 4), torch.randn(6, 4), torch.randint(0, 6, (8,))
    cases = {
        "single": (h, w, None, t, 1.0, 32768, None, 1.0, ("log_probs",)),
        "bias": (h, w, torch.zeros(6), t, 1.0, 32768, None, 1.0, ("log_probs",)),
        "temperature": (h, w, None, t, 0.7, 32768, None, 1.0, ("log_probs",)),
        "entropy": (h, w, None, t, 1.0, 32768, None, 1.0, ("log_probs", "entropy")),
        "softcap": (h, w, None, t, 1.0, 32768, 30.0, 1.0, ("log_probs",)),
        "vocab chunks": (h, w, None, t, 1.0, 4, None, 1.0, ("log_probs",)),
        "token chunks": (torch.randn(TOKEN_CHUNK_SIZE + 1, 4), w, None, torch.randint(0, 6, (TOKEN_CHUNK_SIZE + 1,)),
                         1.0, 32768, None, 1.0, ("log_probs",)),
        "bf16": (h.bfloat16(), w.bfloat16(), None, t, 1.0, 32768, None, 1.0, ("log_probs",)),
    }
    with sft_trainer.single_tile_head():
        dispatch = trl_utils._ChunkedLogProbFunction
        assert dispatch is not original
        for name, args in cases.items():
            calls.clear()
            out = dispatch.apply(*args)
            assert calls == (["single"] if name == "single" else []), name
            if name != "single":
                assert torch.equal(out[0], ChunkedLogProbFunction.apply(*args)[0]), name
    assert trl_utils._ChunkedLogProbFunction is original
