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
def test_trl_loss_without_token_metrics_trains_bit_for_bit_as_trl(tiny_tokenizer, smoke_params, tmp_path, packed):
    """The default (TRL's loss, no entropy/accuracy metrics) and TRL's own compute_loss
    (``token_metrics = True``) give the same losses and the same weights, to the bit, over a few
    optimizer steps; only the metrics-on trainer logs TRL's entropy and token accuracy."""
    from datasets import Dataset

    from lib import packing

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
    assert len(logs_trl) == len(logs_lean) == 3
    assert [h["loss"] for h in logs_trl] == [h["loss"] for h in logs_lean]
    assert torch.equal(w_trl, w_lean)
    assert all("mean_token_accuracy" in h and "entropy" in h for h in logs_trl)
    assert not any("mean_token_accuracy" in h or "entropy" in h for h in logs_lean)
    assert logs_lean[-1]["num_tokens"] == logs_trl[-1]["num_tokens"] > 0
