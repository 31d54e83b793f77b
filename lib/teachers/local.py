"""A transformers checkpoint as teacher (this project's own included), through the shared sampler."""
from __future__ import annotations

from typing import Sequence


from lib.teachers.base import ProblemLike, Rollout, _check_n, strip_reasoning



class LocalModelTeacher:
    """A transformers checkpoint as teacher, sampled through :func:`lib.sampling.sample`.

    The same sampler, chat template and instruction as evaluation, so a project checkpoint used
    as teacher (e.g. a stage-2 model writing rollouts) is asked exactly as it was trained.
    Sampling is seeded per batch (see :mod:`lib.sampling`): output depends on batch size and
    order, so a resumed :func:`lib.rollouts.generate_rollouts` run is complete and duplicate-free
    but not byte-identical to an uninterrupted one. Paper sampling settings: T=0.6, top-p 0.95.
    """

    def __init__(self, checkpoint_path, temperature: float = 0.6, top_p: float = 0.95,
                 max_new_tokens: int = 512, batch_size: int = 32, device: str = "cpu"):
        self.checkpoint_path = str(checkpoint_path)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.max_new_tokens, self.batch_size, self.device = int(max_new_tokens), int(batch_size), device
        self.name = f"local:{self.checkpoint_path}"
        self._model = self._tokenizer = None

    @property
    def config(self) -> dict:
        return {"kind": "local", "checkpoint_path": self.checkpoint_path, "temperature": self.temperature,
                "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}

    def _load(self):
        if self._model is None:
            from lib.model import load

            self._model, self._tokenizer = load(self.checkpoint_path, device=self.device)
        return self._model, self._tokenizer

    def generate(self, problems: Sequence[ProblemLike], n: int, seed: int = 0) -> list[list[Rollout]]:
        from lib.sampling import sample

        _check_n(n)
        if not problems:
            return []
        model, tok = self._load()
        out = sample(model, tok, [p.problem for p in problems], n=n, temperature=self.temperature,
                     top_p=self.top_p, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                     seed=seed, progress=False)
        return [[Rollout(c.text, None, c.finished, c.n_tokens, {}) for c in row] for row in out]

    def complete(self, prompt: str) -> str:
        """The raw prompt as the user turn (no instruction appended); returns the answer part."""
        import torch

        model, tok = self._load()
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
        kwargs = dict(max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, do_sample=self.temperature > 0)
        if self.temperature > 0:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        torch.manual_seed(0)
        with torch.inference_mode():
            gen = model.generate(**enc, **kwargs)[0, enc["input_ids"].shape[1]:]
        return strip_reasoning(tok.decode(gen, skip_special_tokens=True))

