"""Model checkpoints: build the tiny scratch transformer, load any causal LM, save a standard folder.

Every checkpoint the recipe writes is a plain ``save_pretrained`` folder (weights, config,
generation config, tokenizer with its chat template), so transformers, TRL and vLLM accept it
without project code.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig,
                          PreTrainedModel, PreTrainedTokenizerBase, Qwen2Config)

from lib import bars

bars.hook_transformers()  # in a notebook, checkpoint shard bars save as text, not widgets


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; asking for CUDA without one is an error, not a fallback."""
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params ask for run.device='cuda' but torch sees no GPU; use 'auto' or 'cpu'")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int) -> None:
    """0 keeps torch's default; otherwise pin intra-op threads (2 on the reference laptop)."""
    if threads:
        torch.set_num_threads(threads)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX), so bf16 autocast pays off.

    Without either, bf16 matmuls are emulated and training runs ~3x slower than fp32
    (docs/stack_notes.md); with avx512_bf16 (this project's 2-core EPYC machines) bf16 autocast trained
    1.3-1.7x faster than fp32 (``benchmarks/bench_training.py``, tiny mid-training). ``PHI4MR_CPU_BF16=0/1``
    overrides the detection.
    """
    forced = os.environ.get("PHI4MR_CPU_BF16")
    if forced is not None:
        if forced not in ("0", "1"):
            raise ValueError(f"PHI4MR_CPU_BF16 must be 0 or 1, got {forced!r}")
        return forced == "1"
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def train_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The training precision from params ``model.dtype`` (weights stay fp32; bf16 = bf16 autocast).

    'auto': bf16 on CUDA, fp32 on CPU. On the tiny recipe, bf16 autocast on an avx512_bf16 CPU
    trained 1.7x faster but scored lower at every stage (LOG.md, 2026-11-29), so a CPU run gets
    bf16 only when asked for ('bfloat16'); asking for it on a CPU without native bf16 warns,
    since it runs ~3x slower there (:func:`cpu_has_fast_bf16`).
    """
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"model.dtype must be 'auto', 'float32' or 'bfloat16', got {dtype!r}")
    if dtype == "bfloat16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.warn("model.dtype: bfloat16 on a CPU without avx512_bf16/AMX: bf16 is emulated there and "
                      "training runs ~3x slower than float32 (docs/stack_notes.md); use 'auto' or 'float32'",
                      stacklevel=2)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]


def build_scratch(m, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised decoder (Llama or Qwen2 architecture) sized by params ``model``."""
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads,
        max_position_embeddings=m.max_position_embeddings,
        tie_word_embeddings=True,  # as Phi-4-mini; also halves the embedding parameters
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlamaConfig(**common) if m.architecture == "llama" else Qwen2Config(**common)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    return model


def n_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint named by a path that exists nowhere it was looked for."""


def _path_like(name: str) -> bool:
    """A name meant as a local path: absolute, ./ ../ ~, outputs/..., or more than one slash
    (a hub id is ``org/name``: one slash, no leading dot)."""
    return (os.path.isabs(name) or name.startswith((".", "~", "outputs")) or name.count("/") > 1
            or name.count(os.sep) > 1 or name.endswith("/"))


def resolve_checkpoint(path_or_id: str | os.PathLike) -> str:
    """A checkpoint folder or hub id, resolved: a relative path is looked up in the current folder,
    then under the repository root (the README's ``outputs/tiny/06_rl/model`` works from anywhere).
    A path-like name found nowhere raises :class:`CheckpointNotFoundError` naming every place tried,
    instead of a hub lookup that fails later; anything else is returned as is (a hub id)."""
    from lib.paths import ROOT

    name = os.fspath(path_or_id)
    p = Path(name).expanduser()
    tried = [p.resolve()] if p.is_absolute() else [Path.cwd() / p, ROOT / p]
    for cand in tried:
        if cand.exists():
            return str(cand)
    if isinstance(path_or_id, Path) or _path_like(name):
        raise CheckpointNotFoundError(
            f"no checkpoint at {name!r}; looked in: {', '.join(str(c) for c in dict.fromkeys(tried))}. "
            "Fix the path, or run the stage that writes it first (python -m lib.recipe PARAMS.yaml --only NN)")
    return name


def load(path_or_id: str | os.PathLike, device: str | torch.device = "cpu",
         dtype: torch.dtype | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a checkpoint folder or hub id with its tokenizer (clear error if it is not there;
    relative paths: :func:`resolve_checkpoint`)."""
    path_or_id = resolve_checkpoint(path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype=dtype or "auto")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # Pad == EOS masks EOS from the loss and the model never learns to stop (the paper, stage 2).
        raise ValueError(f"{path_or_id}: tokenizer pad token must exist and differ from EOS "
                         f"(pad={tokenizer.pad_token!r}, eos={tokenizer.eos_token!r})")
    return model.to(device).eval(), tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prepare_pretrained(path_or_id: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[str]]:
    """Load a pretrained base (hub id or folder) and make it fit the recipe's conventions.

    - ``<think>``/``</think>`` become ordinary added tokens if the vocabulary lacks them
      (special tokens would vanish from decoded text that reward functions read).
    - A pad token distinct from EOS is added if missing or equal to EOS (Phi-4-mini ships
      pad == EOS == ``<|endoftext|>``), so EOS stays in the loss and the model learns to stop.
    - A chat template is required (the recipe formats every prompt with it).
    Returns the model, tokenizer and a list of the changes made, for the manifest.
    """
    from lib.chat import THINK_CLOSE, THINK_OPEN

    path_or_id = resolve_checkpoint(path_or_id)
    tokenizer = AutoTokenizer.from_pretrained(str(path_or_id))
    model = AutoModelForCausalLM.from_pretrained(str(path_or_id), dtype="auto")
    changes = []
    missing = [t for t in (THINK_OPEN, THINK_CLOSE) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=False)
        changes.append(f"added ordinary tokens {missing}")
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        changes.append("added pad token <|pad|> distinct from EOS")
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
        changes.append(f"resized embeddings to {len(tokenizer)}")
    if not tokenizer.chat_template:
        raise ValueError(f"{path_or_id}: the tokenizer has no chat template; pick an instruct/chat "
                         "checkpoint or set tokenizer.chat_template before starting the recipe")
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, changes


def unsloth_available() -> bool:
    try:
        import unsloth  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def load_for_training(path_or_id, device, use_unsloth: bool = False, max_seq_length: int = 4096):
    """Load a checkpoint to train: through unsloth when asked for and usable (GPU), else transformers.

    Returns ``(model, tokenizer, backend)``. unsloth patches the model for faster, leaner GPU
    training; it is never imported unless enabled, and asking for it where it cannot run falls
    back to transformers and says so in ``backend`` rather than failing a CPU run.

    Precision policy: the weights that train are float32 (master weights), whatever dtype the
    checkpoint was saved in (Phi-4-mini ships bfloat16). bf16 enters only as autocast
    (:func:`train_dtype`): updates at DPO/RL's lr 5e-7 are far below bf16's resolution of a
    weight (~2^-8 of it) and would mostly round away if the weights themselves were bf16.
    """
    if use_unsloth and unsloth_available():
        from unsloth import FastLanguageModel

        path_or_id = resolve_checkpoint(path_or_id)
        model, tokenizer = FastLanguageModel.from_pretrained(str(path_or_id), max_seq_length=max_seq_length,
                                                             dtype=None, load_in_4bit=False, full_finetuning=True)
        return model, tokenizer, "unsloth"
    model, tokenizer = load(path_or_id, device=device, dtype=torch.float32)
    model.train()
    return model, tokenizer, "transformers" + (" (unsloth requested but not available)" if use_unsloth else "")
