"""Base-model round trip, tokenizer conventions, and the sampler against a plain reference."""
from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lib import chat, sampling
from lib import model as modellib


def test_tokenizer_conventions(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == chat.END_OF_TURN
    ids = tok("<think>\n12 + 7 = 19\n</think>\\boxed{19}<|end|>")["input_ids"]
    toks = tok.convert_ids_to_tokens(ids)
    assert toks[0] == "<think>" and "</think>" in toks  # one token each
    assert [t for t in toks if t.strip("Ġ").isdigit()] == ["12", "Ġ7", "Ġ19", "19"]  # whole numbers
    # think tags are ordinary tokens: they survive skip_special_tokens (GRPO decodes that way)
    assert tok.decode(ids, skip_special_tokens=True) == "<think>\n12 + 7 = 19\n</think>\\boxed{19}"
    prompt = chat.prompt_text(tok, "What is 2 + 2?")
    assert prompt == "<|user|>What is 2 + 2?\n" + chat.INSTRUCTION + "<|end|><|assistant|>"


def test_whole_number_tokens(tmp_path):
    from lib.tokenizer import number_token_strings, train_tokenizer

    corpus = ["Start with 3. Add 4, then multiply by 2. What is the result?\n3 + 4 = 7\n7 * 2 = 14"] * 20
    tok = train_tokenizer(corpus, 400, number_tokens=60)
    assert len(tok) <= 400 + 2  # + <think>, </think>
    for n in range(61):  # each integer 0..60 is one token, with and without the space before it
        assert tok.convert_ids_to_tokens(tok(f" {n}")["input_ids"]) == [f"Ġ{n}"]
        assert tok.convert_ids_to_tokens(tok(f"({n})")["input_ids"])[1] == str(n)
    assert len(number_token_strings(60)) == 122
    # longer numbers: digit groups of at most three (as o200k), each group then BPE-encoded
    text = " 61 + 12345 = 12406, x = -3 and \\frac{3}{28}"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    toks = tok.convert_ids_to_tokens(ids)
    pieces = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" 12345")]
    assert pieces == ["Ġ123", "45"]
    assert "45" in toks and "Ġ61" not in toks  # 45 <= 60 is whole; 61 is not
    # a saved checkpoint's tokenizer encodes the same (ignore_merges survives the round trip)
    tok.save_pretrained(tmp_path / "tok")
    assert AutoTokenizer.from_pretrained(str(tmp_path / "tok"))(text)["input_ids"] == ids
    # number_tokens=0: one token per digit, the earlier scheme
    digits = train_tokenizer(corpus, 300, number_tokens=0)
    assert [t for t in digits.tokenize(" 14") if t != "Ġ"] == ["1", "4"]


def test_tokenizer_vocab_too_small_says_what_to_change():
    from lib.tokenizer import train_tokenizer

    with pytest.raises(ValueError, match=r"raise model.vocab_size to at least 462 or lower model.number_tokens"):
        train_tokenizer(["1 + 1 = 2"], 400, number_tokens=99)


def test_checkpoint_round_trip(tiny_model, tiny_tokenizer, tmp_path):
    path = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    assert (path / "config.json").is_file() and (path / "generation_config.json").is_file()
    model2, tok2 = modellib.load(path)
    text = chat.prompt_text(tiny_tokenizer, "Start with 3. Add 4.")
    assert tok2(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert tok2.chat_template == tiny_tokenizer.chat_template
    assert tok2.pad_token_id == tiny_tokenizer.pad_token_id != tok2.eos_token_id
    x = torch.tensor([tiny_tokenizer(text)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(tiny_model(x).logits, model2(x).logits, atol=1e-6)
    assert modellib.n_params(model2) == modellib.n_params(tiny_model)
    assert model2.config.tie_word_embeddings


def test_load_missing_checkpoint_is_clear(tmp_path):
    import pytest
    with pytest.raises(FileNotFoundError, match="run the stage that writes it first"):
        modellib.load(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        modellib.prepare_pretrained("/nonexistent/base")


def test_prepare_pretrained_fixes_pad_and_think(tmp_path, smoke_params):
    """A base like Phi-4-mini (pad == EOS, no think tokens) is adapted, not trained on as is."""
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "a", "b", "1", "2"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|end|>", pad_token="<|end|>",
                                  bos_token="<|endoftext|>")
    tok.chat_template = chat.CHAT_TEMPLATE
    model = modellib.build_scratch(smoke_params.model, tok)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")

    model2, tok2, changes = modellib.prepare_pretrained(tmp_path / "base")
    assert tok2.pad_token_id != tok2.eos_token_id
    assert "<think>" in tok2.get_vocab() and "<think>" not in tok2.all_special_tokens
    assert model2.get_input_embeddings().weight.shape[0] >= len(tok2)
    assert len(changes) == 3
    assert model2.config.pad_token_id == tok2.pad_token_id


def test_sampler_batched_equals_one_by_one(tiny_model, tiny_tokenizer):
    """The batched, length-sorted, left-padded fast path gives what one-by-one generate gives."""
    problems = ["Start with 3. Add 4.", "What is the greatest common divisor of 84 and 36?", "Solve 2x + 1 = 7.",
                "Start with 12. Multiply by 3, then subtract 5, then add 9."]
    batched = sampling.sample(tiny_model, tiny_tokenizer, problems, temperature=0.0, max_new_tokens=10,
                              batch_size=4, progress=False)
    for prob, got in zip(problems, batched):
        ids = tiny_tokenizer(chat.prompt_text(tiny_tokenizer, prob), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            ref = tiny_model.generate(**ids, do_sample=False, max_new_tokens=10,
                                      pad_token_id=tiny_tokenizer.pad_token_id)[0, ids["input_ids"].shape[1]:].tolist()
        eos = tiny_tokenizer.eos_token_id
        ref = ref[:ref.index(eos) + 1] if eos in ref else ref
        assert got[0].n_tokens == len(ref)
        assert got[0].text == tiny_tokenizer.decode(ref, skip_special_tokens=True)
        assert got[0].finished == (eos in ref)


def test_sampler_n_samples_and_seed(tiny_model, tiny_tokenizer):
    import pytest
    probs = ["Start with 3. Add 4.", "Solve 2x + 1 = 7."]
    a = sampling.sample(tiny_model, tiny_tokenizer, probs, n=3, temperature=1.0, max_new_tokens=8, seed=1, progress=False)
    b = sampling.sample(tiny_model, tiny_tokenizer, probs, n=3, temperature=1.0, max_new_tokens=8, seed=1, progress=False)
    assert [len(x) for x in a] == [3, 3]
    assert a == b  # reproducible for a seed
    assert len({c.text for c in a[0]}) > 1  # samples differ at T=1 from an untrained model
    with pytest.raises(ValueError, match="greedy"):
        sampling.sample(tiny_model, tiny_tokenizer, probs, n=2, temperature=0.0)


def test_unsloth_is_skipped_cleanly_without_gpu(tiny_model, tiny_tokenizer, tmp_path):
    path = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    assert modellib.unsloth_available() is False  # CI: not installed, no GPU
    model, tok, backend = modellib.load_for_training(path, "cpu", use_unsloth=True)
    assert backend == "transformers (unsloth requested but not available)" and model.training
    _, _, backend = modellib.load_for_training(path, "cpu", use_unsloth=False)
    assert backend == "transformers"


def test_training_weights_are_float32_whatever_the_checkpoint_dtype(tiny_model, tiny_tokenizer, tmp_path):
    """A bf16 checkpoint (as Phi-4-mini ships) trains with fp32 master weights: a 5e-7 step is kept."""
    import copy

    bf16 = copy.deepcopy(tiny_model).to(torch.bfloat16)
    path = modellib.save(bf16, tiny_tokenizer, tmp_path / "bf16")
    served, _ = modellib.load(path)
    assert {p.dtype for p in served.parameters()} == {torch.bfloat16}  # inference keeps the saved dtype
    model, _, _ = modellib.load_for_training(path, "cpu")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    for p, q in zip(model.parameters(), served.parameters()):
        assert torch.equal(p, q.float())  # same values, wider type
    w = next(model.parameters()).detach()
    w = w[w.abs() > 1e-3]  # an Adam step at lr 5e-7 moves each weight by ~5e-7
    stepped = w + 5e-7 * w.sign()
    assert not torch.equal(stepped, w)  # fp32 keeps an update of 5e-7 ...
    assert torch.equal(stepped.bfloat16(), w.bfloat16())  # ... that bf16 weights would round away


def test_unsloth_glue(monkeypatch, tiny_model, tiny_tokenizer, tmp_path):
    """With unsloth present (a stand-in here: it needs a GPU), the model comes from FastLanguageModel."""
    import sys
    import types

    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(name, **kw):
            calls["args"] = (name, kw)
            return "unsloth-model", "unsloth-tokenizer"

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    monkeypatch.setattr(modellib, "unsloth_available", lambda: True)
    path = modellib.save(tiny_model, tiny_tokenizer, tmp_path / "ckpt")
    model, tok, backend = modellib.load_for_training(path, "cuda", use_unsloth=True, max_seq_length=2048)
    assert (model, tok, backend) == ("unsloth-model", "unsloth-tokenizer", "unsloth")
    assert calls["args"][0] == str(path) and calls["args"][1]["max_seq_length"] == 2048
    assert calls["args"][1]["full_finetuning"] is True
