"""Packing (lib/packing.py): lossless bins, and packed == one-by-one losses and gradients.

The loss/gradient equalities are the proof that packed examples do not see each other; the
negative controls show the same check fails when the block mask is missing.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from lib import chat, packing, problems
from lib.model import build_scratch
from lib.packing import IGNORE, PackedCollator, pack


pytestmark = pytest.mark.usefixtures("one_thread")


def _ex(n: int, start: int = 0, prompt: int = 2) -> dict:
    ids = list(range(start, start + n))
    return {"input_ids": ids, "labels": [IGNORE] * min(prompt, n) + ids[prompt:]}


def _features(rows):
    return [{"input_ids": r.input_ids, "labels": r.labels, "seq_lengths": r.seq_lengths} for r in rows]


# --------------------------------------------------------------------------- pack
@pytest.mark.parametrize("lengths,max_length,expected_rows", [
    ([5, 5, 5, 5], 10, [[0, 1], [2, 3]]),
    # BFD: 6 -> r0 (4 left), 5 -> r1 (5 left), 4 -> r0 (exact fit beats r1), 3 -> r1, 2 -> r1
    ([6, 5, 4, 3, 2], 10, [[0, 2], [1, 3, 4]]),
    ([3, 9, 1], 10, [[1, 2], [0]]),
    ([10, 10], 10, [[0], [1]]),
    ([12, 3], 10, [[0], [1]]),           # 12 is truncated to 10 and fills a row alone
    ([1], 10, [[0]]),
])
def test_pack_bfd_table(lengths, max_length, expected_rows):
    rows, _ = pack([_ex(n, 100 * i) for i, n in enumerate(lengths)], max_length)
    assert [r.example_ids for r in rows] == expected_rows


def test_pack_is_lossless_and_counts_truncation():
    rng = random.Random(0)
    lengths = [rng.randint(1, 80) for _ in range(300)] + [100, 130]  # two longer than max_length
    examples = [_ex(n, 1000 * i) for i, n in enumerate(lengths)]
    rows, stats = pack(examples, 96)

    seen = sorted(i for r in rows for i in r.example_ids)
    assert seen == list(range(len(examples)))  # every example exactly once, none dropped
    for r in rows:
        assert len(r.input_ids) == len(r.labels) == sum(r.seq_lengths) <= 96
        off = 0
        for i, n in zip(r.example_ids, r.seq_lengths):
            assert n == min(lengths[i], 96)
            assert r.input_ids[off:off + n] == examples[i]["input_ids"][:n]  # truncation keeps the start
            assert r.labels[off:off + n] == examples[i]["labels"][:n]
            off += n
    assert stats.n_truncated == 2 and stats.tokens_truncated == (100 - 96) + (130 - 96)
    assert stats.tokens == sum(min(n, 96) for n in lengths) == sum(len(r.input_ids) for r in rows)
    assert stats.n_rows == len(rows) and stats.n_examples == len(examples)
    lower_bound = -(-stats.tokens // 96)
    assert stats.n_rows <= lower_bound * 11 / 9 + 1 and stats.fill > 0.9  # BFD's bound; near-full rows
    assert pack(examples, 96) == (rows, stats)  # deterministic


def test_pack_counts_examples_left_without_loss():
    ex = {"input_ids": list(range(20)), "labels": [IGNORE] * 15 + list(range(15, 20))}
    _, stats = pack([ex], 10)  # the prompt alone fills the row: kept, and counted
    assert (stats.n_truncated, stats.n_without_loss) == (1, 1)


def test_pack_rejects_bad_examples():
    with pytest.raises(ValueError, match="labels"):
        pack([{"input_ids": [1, 2], "labels": [1]}], 10)
    with pytest.raises(ValueError, match="empty"):
        pack([{"input_ids": [], "labels": []}], 10)


# --------------------------------------------------------------------------- collate
def test_collator_shapes_positions_labels_and_mask():
    feats = [{"input_ids": [11, 12, 13, 21, 22], "labels": [11, 12, 13, 21, 22], "seq_lengths": [3, 2]},
             {"input_ids": [31, 32, 33, 34, 35, 36, 37], "labels": [IGNORE] * 2 + [33, 34, 35, 36, 37]}]
    b = PackedCollator(pad_token_id=0)(feats)
    assert {k: (tuple(v.shape), v.dtype) for k, v in b.items()} == {
        "input_ids": ((2, 7), torch.long), "labels": ((2, 7), torch.long),
        "position_ids": ((2, 7), torch.long), "attention_mask": ((2, 1, 7, 7), torch.bool)}
    assert b["input_ids"][0].tolist() == [11, 12, 13, 21, 22, 0, 0]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1], list(range(7))]
    # first token of every example and every pad carry no loss
    assert b["labels"][0].tolist() == [IGNORE, 12, 13, IGNORE, 22, IGNORE, IGNORE]
    seg = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    expected = (seg[:, None] == seg[None, :]) & torch.ones(7, 7, dtype=torch.bool).tril()
    assert torch.equal(b["attention_mask"][0, 0], expected)
    assert torch.equal(b["attention_mask"][1, 0], torch.ones(7, 7, dtype=torch.bool).tril())
    assert b["attention_mask"].any(-1).all()  # no query row is fully masked (sdpa would give NaN)

    f = PackedCollator(pad_token_id=0, mask_dtype=torch.float32, pad_to_multiple_of=8)(feats)["attention_mask"]
    assert f.shape == (2, 1, 8, 8) and f.dtype == torch.float32
    assert set(f.unique().tolist()) == {0.0, torch.finfo(torch.float32).min}
    assert "attention_mask" not in PackedCollator(pad_token_id=0, mask="none")(feats)


@pytest.mark.parametrize("attn,mode,dtype", [("sdpa", "4d", torch.bool), ("eager", "4d", torch.float32)])
def test_collator_for_fits_the_attention(tiny_tokenizer, smoke_params, attn, mode, dtype):
    model = build_scratch(smoke_params.model, tiny_tokenizer)
    model.set_attn_implementation(attn)
    c = packing.collator_for(model, tiny_tokenizer)
    assert (c.mask, c.mask_dtype, c.pad_token_id) == (mode, dtype, tiny_tokenizer.pad_token_id)


def test_collator_rejects_inconsistent_seq_lengths():
    with pytest.raises(ValueError, match="seq_lengths"):
        PackedCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lengths": [2]}])


# --------------------------------------------------------------------------- equivalence
def _rows(n: int, seed: int = 0) -> list[dict]:
    """Chat rows whose answers vary from a short CoT to several re-checked passes (long CoT)."""
    rng = random.Random(seed)
    out = []
    for p in problems.generate(n, seed=seed):
        cot = problems.cot_solution(p)
        out.append(chat.conversation(p.problem, cot + "\nLet me check.\n" + cot * rng.randint(0, 2)))
    return out


@pytest.fixture(scope="module")
def model_and_examples(tiny_tokenizer, smoke_params):
    """A fresh model (tokenize() patches TRL's LM head onto it), and TRL-tokenized examples."""
    torch.manual_seed(0)
    model = build_scratch(smoke_params.model, tiny_tokenizer).eval()
    with torch.no_grad():  # sharper attention than the init's near-uniform one: leaks show up clearly
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8)
    examples = packing.tokenize(model, tiny_tokenizer, _rows(24))
    return model, examples


def _token_logprobs(logits, labels) -> torch.Tensor:
    """Log-prob of each labelled next token, in order (flattened)."""
    lp = F.log_softmax(logits[:, :-1].float(), -1)
    lab = labels[:, 1:]
    keep = lab != IGNORE
    return lp.gather(-1, lab.clamp(min=0)[..., None])[..., 0][keep]


def _one_by_one(model, examples) -> torch.Tensor:
    return torch.cat([_token_logprobs(model(input_ids=torch.tensor([e["input_ids"]])).logits,
                                      torch.tensor([e["labels"]])) for e in examples])


def _packed(model, examples, max_length, **collator_kw):
    rows, _ = pack(examples, max_length)
    batch = PackedCollator(pad_token_id=0, **collator_kw)(_features(rows))
    # reorder examples to packing order so token log-probs line up with the one-by-one reference
    order = [i for r in rows for i in r.example_ids]
    return batch, [examples[i] for i in order]


def test_tokenize_matches_trl_prompt_completion(model_and_examples, tiny_tokenizer):
    _, examples = model_and_examples
    row = _rows(24)[0]
    text = tiny_tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    assert tiny_tokenizer.decode(examples[0]["input_ids"]) == text
    n_prompt = len(tiny_tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)["input_ids"])
    lab = examples[0]["labels"]
    assert lab[:n_prompt] == [IGNORE] * n_prompt and IGNORE not in lab[n_prompt:]
    assert lab[-1] == tiny_tokenizer.eos_token_id  # the model learns to stop


def test_tokenize_workers_only_for_large_sets():
    assert packing.tokenize_workers(100, cpus=2) is None  # a few hundred rows: this process
    assert packing.tokenize_workers(packing.PARALLEL_TOKENIZE_ROWS - 1, cpus=16) is None
    assert packing.tokenize_workers(17_714, cpus=2) == 2  # tiny's mid-training set on 2 cores
    assert packing.tokenize_workers(17_714, cpus=16) == 4  # one per 4,096 rows
    assert packing.tokenize_workers(10**6, cpus=64) == 8
    assert packing.tokenize_workers(10**6, cpus=1) is None


def test_tokenizing_in_worker_processes_gives_the_same_examples(tiny_tokenizer, smoke_params, monkeypatch):
    """The workers only split TRL's map: the same ids and labels, in the same order."""
    torch.manual_seed(0)
    model = build_scratch(smoke_params.model, tiny_tokenizer)
    rows = _rows(120, seed=3)
    one = packing.tokenize(model, tiny_tokenizer, rows)
    monkeypatch.setattr(packing, "PARALLEL_TOKENIZE_ROWS", 40)
    assert packing.tokenize_workers(len(rows), cpus=2) == 2
    two = packing.tokenize(model, tiny_tokenizer, rows)
    assert two == one and len(one) == 120


@pytest.mark.parametrize("attn,mask_dtype,mode", [
    ("sdpa", torch.bool, "4d"),
    ("eager", torch.float32, "4d"),
    ("sdpa", torch.bool, "none"),  # transformers infers the blocks from position_ids (needs use_cache=False)
])
def test_packed_loss_equals_one_by_one(model_and_examples, attn, mask_dtype, mode):
    model, examples = model_and_examples
    model.set_attn_implementation(attn)
    try:
        batch, ordered = _packed(model, examples, 512, mask=mode, mask_dtype=mask_dtype)
        assert batch["input_ids"].shape[0] < len(examples) / 2  # several examples per row
        with torch.no_grad():
            ref = _one_by_one(model, ordered)
            got = _token_logprobs(model(**batch, use_cache=False).logits, batch["labels"])
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-4, rtol=0)
        assert abs(got.sum() - ref.sum()) <= 1e-4 * abs(ref.sum())
    finally:
        model.set_attn_implementation("sdpa")


def test_without_block_mask_examples_leak(model_and_examples):
    """Negative controls: plain causal over the row; position_ids with a cache built (a plain
    forward's default, which turns off transformers' packed-sequence detection); and a bool mask
    given to eager attention, which adds it to the scores (+0/+1) instead of masking."""
    model, examples = model_and_examples
    batch, ordered = _packed(model, examples, 512)
    with torch.no_grad():
        ref = _one_by_one(model, ordered)
        plain = _token_logprobs(model(input_ids=batch["input_ids"], use_cache=False).logits, batch["labels"])
        cached = _token_logprobs(model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                       use_cache=True).logits, batch["labels"])
        model.set_attn_implementation("eager")
        try:
            eager_bool = _token_logprobs(model(**batch, use_cache=False).logits, batch["labels"])
        finally:
            model.set_attn_implementation("sdpa")
    for leaky in (plain, cached, eager_bool):
        # 100x the tolerance of the equality test, on a large share of tokens (the first example
        # of a row is unaffected). The summed loss of a random model barely moves (~5e-5 relative):
        # cross-attention errors average out, which is why the equality test compares every token.
        assert (leaky - ref).abs().max() > 1e-2
        assert ((leaky - ref).abs() > 1e-4).float().mean() > 0.25


def test_packed_gradients_equal_padded(model_and_examples, tiny_tokenizer):
    """One step's gradient: packed rows vs TRL's padded batches of the same examples."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model, examples = model_and_examples
    examples = examples[:12]

    def grads(batch):
        model.zero_grad()
        lp = _token_logprobs(model(**batch, use_cache=False).logits, batch["labels"])
        (-lp.sum() / lp.numel()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, lp.numel()

    padded = DataCollatorForLanguageModeling(pad_token_id=tiny_tokenizer.pad_token_id)(examples)
    batch, _ = _packed(model, examples, 512)
    g_pad, n_pad = grads(padded)
    g_pack, n_pack = grads(batch)
    model.zero_grad()
    assert n_pad == n_pack and g_pad.keys() == g_pack.keys()
    for name in g_pad:
        assert torch.allclose(g_pack[name], g_pad[name], rtol=1e-4, atol=1e-6), name


# --------------------------------------------------------------------------- training
def test_fit_packed_trains_and_counts_real_tokens(tiny_tokenizer, smoke_params, tmp_path):
    from lib import training
    from lib.training import sft_config

    torch.manual_seed(0)
    model = build_scratch(smoke_params.model, tiny_tokenizer)
    cfg = sft_config(smoke_params.base_pretrain, tmp_path, device=torch.device("cpu"), dtype=torch.float32,
                     seed=0, max_length=256, per_device_train_batch_size=4, num_train_epochs=3,
                     learning_rate=3e-3, warmup_steps=0.0, logging_steps=1)
    stats = training.fit_packed(model, tiny_tokenizer, _rows(48), cfg)
    assert {"steps", "train_loss", "final_loss", "tokens_seen", "tokens_per_s", "train_seconds",
            "curve", "packing"} <= stats.keys()
    p = stats["packing"]
    assert stats["steps"] == 3 * -(-p["n_rows"] // 4)
    assert stats["tokens_seen"] == 3 * p["tokens"]  # real tokens, each row once per epoch
    losses = [c["loss"] for c in stats["curve"]]
    assert losses[-1] < losses[0] - 0.5


def test_pack_drop_eos_ablation_removes_only_a_closing_eos():
    eos = 7
    ends_with_eos = {"input_ids": [1, 2, 3, eos], "labels": [IGNORE, 2, 3, eos]}
    eos_inside = {"input_ids": [eos, 4, 5], "labels": [IGNORE, 4, 5]}
    rows, stats = pack([ends_with_eos, eos_inside], 16, drop_eos_id=eos)
    by_id = {i: (r.input_ids[sum(r.seq_lengths[:k]):sum(r.seq_lengths[:k + 1])]) for r in rows
             for k, i in enumerate(r.example_ids)}
    assert by_id[0] == [1, 2, 3] and by_id[1] == [eos, 4, 5]
    assert stats.n_eos_dropped == 1 and stats.tokens == 6
    _, kept = pack([ends_with_eos, eos_inside], 16)  # the default keeps everything
    assert kept.n_eos_dropped == 0 and kept.tokens == 7


def test_fit_packed_keep_eos_false_never_trains_the_stop(model_and_examples, tiny_tokenizer, smoke_params, tmp_path,
                                                         monkeypatch):
    from lib import training

    eos = tiny_tokenizer.eos_token_id
    model, examples = model_and_examples
    assert all(e["input_ids"][-1] == eos and e["labels"][-1] == eos for e in examples)  # TRL ends each with EOS
    seen = []
    real_pack = packing.pack
    monkeypatch.setattr(packing, "pack", lambda *a, **k: seen.append(real_pack(*a, **k)) or seen[-1])
    cfg = training.sft_config(smoke_params.mid_train, tmp_path, device=torch.device("cpu"), dtype=torch.float32,
                              seed=0, max_steps=1)
    rows = _rows(24)
    stats = training.fit(build_scratch(smoke_params.model, tiny_tokenizer), tiny_tokenizer, rows, cfg, packing=True,
                         keep_eos=False)
    packed, pstats = seen[-1]
    assert stats["packing"]["n_eos_dropped"] == pstats.n_eos_dropped == len(rows)
    assert all(eos not in r.labels for r in packed)  # no example teaches where an answer ends
    with pytest.raises(ValueError, match="ablation of packed training"):
        training.fit(model, tiny_tokenizer, rows, cfg, packing=False, keep_eos=False)


# --------------------------------------------------------------------------- values, not shapes
# Found by mutation testing (`make mutation`; docs/mutation.md): the packing statistics and the
# dataset handed to the trainer were barely checked. Expected values are worked by hand.
def test_pack_stats_hand_worked():
    only_first_label = {"input_ids": [1, 2, 3], "labels": [1, IGNORE, IGNORE]}  # the first label is masked anyway
    last_label = {"input_ids": [4, 5, 6], "labels": [IGNORE, IGNORE, 6]}
    examples = [_ex(10, 100), _ex(12, 200), only_first_label, _ex(4, 300, prompt=4), _ex(5, 400), last_label]
    rows, stats = pack(examples, 10)
    # kept lengths 10 (exactly max_length: not truncated), 10 (12 cut by 2), 3, 4, 5, 3; BFD, longest
    # first: 0 -> r0 (full), 1 -> r1 (full), 4 (5) -> r2, 3 (4) -> r2 (1 left), 2 (3) -> r3, 5 (3) -> r3
    assert [r.example_ids for r in rows] == [[0], [1], [4, 3], [2, 5]]
    assert [r.seq_lengths for r in rows] == [[10], [10], [5, 4], [3, 3]]
    assert stats.as_dict() == {"n_examples": 6, "n_rows": 4, "max_length": 10, "tokens": 35, "n_truncated": 1,
                               "tokens_truncated": 2, "n_without_loss": 2, "fill": 35 / 40, "n_eos_dropped": 0}


def test_pack_edge_cases():
    rows, stats = pack([], 10)
    assert rows == [] and (stats.n_rows, stats.tokens, stats.fill) == (0, 0, 0.0)
    rows, stats = pack([_ex(3), _ex(1, 50)], 2)  # the smallest allowed row
    assert [r.seq_lengths for r in rows] == [[2], [1]] and (stats.n_truncated, stats.tokens_truncated) == (1, 1)
    # a lone EOS is not dropped (the example would be empty)
    rows, stats = pack([{"input_ids": [7], "labels": [7]}], 4, drop_eos_id=7)
    assert rows[0].input_ids == [7] and stats.n_eos_dropped == 0
    with pytest.raises(ValueError, match="max_length must be >= 2, got 1"):
        pack([_ex(3)], 1)
    with pytest.raises(ValueError, match="example 1: 2 input_ids but 1 labels"):
        pack([_ex(3), {"input_ids": [1, 2], "labels": [1]}], 10)
    with pytest.raises(ValueError, match="example 1 is empty"):
        pack([_ex(3), {"input_ids": [], "labels": []}], 10)


def test_rows_dataset_keeps_the_example_boundaries():
    rows, _ = pack([_ex(3, 10), _ex(2, 20), _ex(4, 30)], 10)  # one row: 4 (ex 2), 3 (ex 0), 2 (ex 1)
    ds = packing.rows_dataset(rows)
    assert ds.column_names == ["input_ids", "labels", "seq_lengths"]
    assert ds[0] == {"input_ids": [30, 31, 32, 33, 10, 11, 12, 20, 21],
                     "labels": [IGNORE, IGNORE, 32, 33, IGNORE, IGNORE, 12, IGNORE, IGNORE],
                     "seq_lengths": [4, 3, 2]}
    # what the trainer does with it: the collator must see three examples, not one
    batch = PackedCollator(pad_token_id=0)([ds[0]])
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1]
    assert not batch["attention_mask"][0, 0, 4, :4].any()  # the second example cannot see the first


def test_collator_float_mask_blocks_exactly_what_the_bool_mask_blocks():
    feats = [{"input_ids": [11, 12, 13, 21, 22], "labels": [11, 12, 13, 21, 22], "seq_lengths": [3, 2]}]
    allowed = PackedCollator(pad_token_id=0)(feats)["attention_mask"]
    additive = PackedCollator(pad_token_id=0, mask_dtype=torch.float32)(feats)["attention_mask"]
    assert torch.equal(additive == 0, allowed)
    assert torch.equal(additive == torch.finfo(torch.float32).min, ~allowed)
    with pytest.raises(ValueError, match="mask must be '4d' or 'none', got 'bad'"):
        PackedCollator(pad_token_id=0, mask="bad")
    with pytest.raises(ValueError, match="row 0: seq_lengths sum to 2 but the row has 3 tokens"):
        PackedCollator(pad_token_id=0)([{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lengths": [2]}])


def test_pack_counts_each_dropped_eos_and_keeps_labels_aligned():
    eos = 7
    examples = [{"input_ids": [5, eos], "labels": [5, eos]}, {"input_ids": [1, 2, eos], "labels": [IGNORE, 2, eos]}]
    rows, stats = pack(examples, 8, drop_eos_id=eos)
    assert stats.n_eos_dropped == 2 and stats.tokens == 3
    assert (rows[0].input_ids, rows[0].labels, rows[0].seq_lengths) == ([1, 2, 5], [IGNORE, 2, 5], [2, 1])


def test_pack_loss_and_tie_rules():
    # the second label is the only one: that example has a loss (only the first label is masked in a row)
    _, stats = pack([{"input_ids": [1, 2, 3], "labels": [IGNORE, 2, IGNORE]}], 4)
    assert stats.n_without_loss == 0
    # equal lengths: input order decides, whatever the token ids
    rows, _ = pack([_ex(3, 50), _ex(3, 10)], 4)
    assert [r.example_ids for r in rows] == [[0], [1]]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_collator_additive_mask_in_the_models_dtype(dtype):
    feats = [{"input_ids": [1, 2, 3], "labels": [1, 2, 3], "seq_lengths": [2, 1]}]
    m = PackedCollator(pad_token_id=0, mask_dtype=dtype)(feats)["attention_mask"]
    assert m.dtype == dtype
    assert m[0, 0].tolist() == [[0, torch.finfo(dtype).min, torch.finfo(dtype).min],
                                [0, 0, torch.finfo(dtype).min],
                                [torch.finfo(dtype).min, torch.finfo(dtype).min, 0]]


def test_the_recipes_loss_is_trls_loss_and_the_one_by_one_mean(model_and_examples, tiny_tokenizer, smoke_params,
                                                                 tmp_path):
    """PackedSFTTrainer's two loss paths, TRL's fused LM head and the model's own loss (faster on
    CPU; lib.sft_trainer): on the same packed batch both give the mean negative log-prob of every labelled token, as the
    examples scored one by one give it, and the same gradients."""
    from lib.training import sft_config

    _, examples = model_and_examples
    cfg = sft_config(smoke_params.mid_train, tmp_path, device=torch.device("cpu"), dtype=torch.float32, seed=0,
                     max_length=256, per_device_train_batch_size=4)
    losses, grads = {}, {}
    for trl_loss in (False, True):
        torch.manual_seed(0)  # the same fresh model for both (a deep copy would keep TRL's patch on the original)
        m = build_scratch(smoke_params.model, tiny_tokenizer)
        batch, ordered = _packed(m, examples, 512, mask_dtype=torch.bool)  # long enough that nothing is truncated
        with torch.no_grad():
            expected = -_one_by_one(m.eval(), ordered).mean()
        trainer, _ = packing.packed_trainer(m.train(), tiny_tokenizer, _rows(4), cfg)
        trainer.trl_loss = trl_loss
        m.eval()  # no dropout: both paths must see the same network
        n_items = int((batch["labels"][:, 1:] != IGNORE).sum())
        loss = trainer.compute_loss(m, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5), trl_loss
        losses[trl_loss] = float(loss.detach())
        grads[trl_loss] = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    assert grads[False].numel() == sum(p.numel() for p in m.parameters())  # every weight got a gradient
    assert torch.allclose(grads[False], grads[True], rtol=1e-4, atol=1e-7)
