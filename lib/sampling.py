"""The shared sampler: checkpoint + prompts -> n completions each, formatted exactly as training.

Prompts go through :func:`lib.chat.prompt_text` (chat template + the paper's instruction).
Generation is batched with the KV cache on CPU or GPU; prompts are sorted by length so a batch
carries little left padding, and results come back in the caller's order. Each completion
records whether it finished with EOS (``finished``) and its token count, which evaluation
reports as the truncated share and response length.

vLLM is used only when asked for (``use_vllm=True``) and installed; otherwise, or on CPU,
transformers' ``generate`` does the work. Sampling is seeded per batch, so a run is
reproducible for a given seed, batch size and device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.chat import prompt_text
from lib.progress import Bar


@dataclass(frozen=True)
class Completion:
    text: str        # decoded answer, special tokens removed (think tags are kept)
    n_tokens: int    # generated tokens including the EOS when present
    finished: bool   # ended with EOS before the max_new_tokens budget ran out


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


# On a CPU, a sampling job's batches can run in forked processes of one torch thread each
# (lib.params Run.sample_processes, set per stage by lib.artifacts.open_stage).
_PROCESSES = 1


def set_processes(n: int) -> None:
    """How many processes a multi-batch CPU sampling job is split over (1: in this process)."""
    global _PROCESSES
    if n < 1:
        raise ValueError(f"sample processes must be >= 1, got {n}")
    _PROCESSES = n


def _can_fork(device: torch.device) -> bool:
    import os
    import sys

    return device.type == "cpu" and hasattr(os, "fork") and sys.platform.startswith("linux")


def _generate_batch(model, prompt_ids, chunk: list[int], b: int, *, eos_token_id: int, pad_token_id: int,
                    temperature: float, top_p: float, max_new_tokens: int, seed: int, device
                    ) -> list[tuple[int, tuple[list[int], bool]]]:
    """Batch ``b``: the prompts ``chunk`` (indices), left-padded, seeded ``seed * 1_000_003 + b``."""
    width = max(len(prompt_ids[k]) for k in chunk)
    ids = torch.full((len(chunk), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for r, k in enumerate(chunk):
        n = len(prompt_ids[k])
        ids[r, width - n:] = torch.tensor(prompt_ids[k], dtype=torch.long)
        mask[r, width - n:] = 1
    torch.manual_seed(seed * 1_000_003 + b)
    kwargs = dict(do_sample=temperature > 0, max_new_tokens=max_new_tokens,
                  pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)[:, width:]
    out = []
    for k, row in zip(chunk, gen.tolist()):
        if eos_token_id in row:
            out.append((k, (row[:row.index(eos_token_id) + 1], True)))
        else:
            out.append((k, ([t for t in row if t != pad_token_id], False)))
    return out


class SamplingWorkerError(RuntimeError):
    """A forked sampling process failed; the message carries its traceback."""


def _forked_batches(batches, run_batch, processes: int, on_batch) -> None:
    """Run ``run_batch(b, chunk)`` for every batch in ``processes`` forked children of one torch thread.

    Batches are handed out one at a time, each to the next idle child, so a child with long
    completions does not hold the others back; a batch's result depends on ``b`` only, not on
    which child ran it. Each child sends ``("ok", results)`` per batch (``("error", traceback)`` on
    failure) and leaves with ``os._exit``; the parent calls ``on_batch`` with each batch's results as
    they arrive. The parent's torch RNG ends in the state the last batch left it in, as in one
    process. A child that dies without a word, or reports an error, raises
    :class:`SamplingWorkerError`; on any exit the remaining children are killed and reaped.
    """
    import logging
    import os
    import pickle
    import signal
    import socket
    import sys
    import traceback
    import warnings
    from multiprocessing.connection import Connection, wait

    children: dict[Connection, int] = {}
    try:
        for _ in range(processes):
            parent_sock, child_sock = socket.socketpair()
            pid = os.fork()
            if pid == 0:  # the child: run the batches it is given, never return into the caller's stack
                code = 0
                conn = None
                try:
                    parent_sock.close()
                    for other in children:
                        other.close()
                    conn = Connection(child_sock.detach())
                    sys.stdout = sys.stderr = open(os.devnull, "w")  # a kernel's streams are unusable after a fork
                    logging.disable(logging.CRITICAL)
                    warnings.simplefilter("ignore")
                    torch.set_num_threads(1)
                    by_index = dict(batches)
                    while (b := conn.recv()) is not None:
                        results = run_batch(b, by_index[b])
                        conn.send_bytes(pickle.dumps(("ok", (b, results, torch.get_rng_state()))))
                except BaseException:  # noqa: BLE001 - everything goes back to the parent
                    code = 1
                    try:
                        conn.send_bytes(pickle.dumps(("error", traceback.format_exc())))
                    except BaseException:  # noqa: BLE001
                        pass
                finally:
                    os._exit(code)
            child_sock.close()
            children[Connection(parent_sock.detach())] = pid
        todo = [b for b, _ in batches]
        last, final_rng = todo[-1], None
        busy = set()
        for conn in children:
            if todo:
                conn.send(todo.pop(0))
                busy.add(conn)
        while busy:
            for conn in wait(list(busy)):
                pid = children[conn]
                try:
                    kind, payload = pickle.loads(conn.recv_bytes())
                except EOFError:
                    _, status = os.waitpid(pid, 0)
                    children[conn] = None
                    raise SamplingWorkerError(
                        f"a sampling process (pid {pid}) ended without its results (wait status {status}); "
                        "set run.sample_processes: 1 to sample in the stage's own process") from None
                if kind == "error":
                    raise SamplingWorkerError(f"a sampling process failed:\n{payload}")
                b, results, rng_state = payload
                if b == last:  # leave the RNG where sampling in one process would have left it
                    final_rng = rng_state
                on_batch(results)
                if todo:
                    conn.send(todo.pop(0))
                else:
                    conn.send(None)
                    busy.discard(conn)
        torch.set_rng_state(final_rng)
    finally:
        for conn, pid in children.items():
            conn.close()
            if pid is None:
                continue
            try:
                if os.waitpid(pid, os.WNOHANG) == (0, 0):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            except ChildProcessError:
                pass


@torch.inference_mode()
def generate_ids(model, prompt_ids: list[list[int]], *, eos_token_id: int, pad_token_id: int,
                 temperature: float = 0.6, top_p: float = 0.95, max_new_tokens: int = 256, batch_size: int = 32,
                 seed: int = 0, progress: bool = False, processes: int | None = None) -> list[tuple[list[int], bool]]:
    """The token-level core: one completion per prompt, as ``(ids, finished)`` in the caller's order.

    ``ids`` runs through the first EOS when the completion finished, else it holds the
    ``max_new_tokens`` generated tokens. Prompts are sorted by length and left-padded per batch;
    batch ``b`` is seeded with ``seed * 1_000_003 + b``. RL (lib.rl) generates through this
    function, evaluation through :func:`sample` on top of it.

    On a CPU under Linux, with ``processes`` (default: :func:`set_processes`'s value) above 1 and
    more than one batch, the batches run in that many forked processes of one torch thread each,
    handed out as the processes become free. The batches, their seeds and so the samples are the
    same as in one process wherever the model's logits do not depend on the thread count
    (`benchmarks/bench_threads.py` checks that; the tests compare the two paths token for token).
    """
    processes = _PROCESSES if processes is None else processes
    order = sorted(range(len(prompt_ids)), key=lambda k: (len(prompt_ids[k]), k))
    out: list[tuple[list[int], bool] | None] = [None] * len(prompt_ids)
    device = next(model.parameters()).device
    batches = [(b, order[start:start + batch_size]) for b, start in enumerate(range(0, len(order), batch_size))]
    was_training = model.training
    model.eval()
    bar = Bar(len(order), "sampling", unit="prompt", display=progress, leave=False)

    def run_batch(b, chunk):
        return _generate_batch(model, prompt_ids, chunk, b, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                               temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
                               device=device)

    def take(results):
        for k, item in results:
            out[k] = item
        bar.update(len(results))

    try:
        workers = min(processes, len(batches))
        if workers > 1 and _can_fork(device):
            _forked_batches(batches, run_batch, workers, take)
        else:
            for b, chunk in batches:
                take(run_batch(b, chunk))
        bar.close()
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def sample(model, tokenizer, problems: list[str], *, n: int = 1, temperature: float = 0.6,
           top_p: float = 0.95, max_new_tokens: int = 256, batch_size: int = 32, seed: int = 0,
           multiple_choice: bool = False, progress: bool = True) -> list[list[Completion]]:
    """Generate ``n`` completions for each problem; ``temperature=0`` means greedy (then n must be 1)."""
    if temperature == 0 and n > 1:
        raise ValueError("greedy decoding (temperature=0) gives n identical samples; use n=1 or temperature>0")
    prompts = [prompt_text(tokenizer, p, multiple_choice) for p in problems]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    jobs = [encoded[i] for i in range(len(prompts)) for _ in range(n)]
    gens = generate_ids(model, jobs, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, seed=seed, progress=progress)
    texts = tokenizer.batch_decode([ids for ids, _ in gens], skip_special_tokens=True)
    it = iter(zip(gens, texts))
    return [[Completion(text, len(ids), finished) for (ids, finished), text in (next(it) for _ in range(n))]
            for _ in prompts]


@dataclass
class HFSampler:
    """Sampling settings bound to a loaded transformers model (CPU or GPU)."""
    model: object
    tokenizer: object
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 32
    progress: bool = True

    def sample(self, problems: list[str], n: int = 1, seed: int = 0,
               multiple_choice: bool = False) -> list[list[Completion]]:
        return sample(self.model, self.tokenizer, problems, n=n, temperature=self.temperature, top_p=self.top_p,
                      max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=seed,
                      multiple_choice=multiple_choice, progress=self.progress)


_VLLM_ENGINES: dict[str, object] = {}


@dataclass
class VLLMSampler:
    """The same interface on vLLM (GPU, real scale): continuous batching, prefix caching.

    Prompts are built with the checkpoint's own chat template through :func:`prompt_text`,
    exactly as for :class:`HFSampler`. One engine per checkpoint path is kept for the process.
    """
    checkpoint: str
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    gpu_memory_utilization: float = 0.85

    def _engine(self):
        from vllm import LLM

        if self.checkpoint not in _VLLM_ENGINES:
            _VLLM_ENGINES[self.checkpoint] = LLM(model=str(self.checkpoint), dtype="bfloat16",
                                                 gpu_memory_utilization=self.gpu_memory_utilization,
                                                 enable_prefix_caching=True)
        return _VLLM_ENGINES[self.checkpoint]

    def sample(self, problems: list[str], n: int = 1, seed: int = 0,
               multiple_choice: bool = False) -> list[list[Completion]]:
        from vllm import SamplingParams

        llm = self._engine()
        tokenizer = llm.get_tokenizer()
        prompts = [prompt_text(tokenizer, p, multiple_choice) for p in problems]
        greedy = self.temperature == 0
        params = SamplingParams(n=n, temperature=self.temperature, top_p=1.0 if greedy else self.top_p,
                                max_tokens=self.max_new_tokens, seed=seed, skip_special_tokens=True)
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [[Completion(o.text, len(o.token_ids), o.finish_reason == "stop") for o in out.outputs]
                for out in outputs]


def make_sampler(checkpoint, *, device, use_vllm: bool, temperature: float, top_p: float, max_new_tokens: int,
                 batch_size: int, progress: bool = True):
    """vLLM when asked for and usable (installed + CUDA), else transformers on ``device``.

    Returns ``(sampler, backend_name)``; asking for vLLM where it cannot run falls back to
    transformers and says so in the backend name rather than failing a CPU run.
    """
    settings = dict(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    if use_vllm and vllm_available():
        return VLLMSampler(str(checkpoint), **settings), "vllm"
    from lib.model import load

    model, tokenizer = load(checkpoint, device=device)
    backend = "transformers" + (" (vLLM requested but not available)" if use_vllm else "")
    return HFSampler(model, tokenizer, batch_size=batch_size, progress=progress, **settings), backend
