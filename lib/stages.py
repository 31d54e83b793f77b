"""The recipe's stages, in order: which params sections each reads, which stages it builds on,
and the metric shown on its progress line. One entry per notebook in ``notebooks/``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str                     # notebook stem and output folder, e.g. "00_base_model"
    title: str
    sections: tuple[str, ...]     # params sections passed to the notebook (and hashed for reruns)
    deps: tuple[str, ...] = ()    # stages whose artifacts it reads
    key_metric: str = ""          # metrics.json key shown on the runner's progress line


STAGES: tuple[Stage, ...] = (
    Stage("00_base_model", "Base model", ("run", "problems", "model", "base_pretrain", "eval"),
          key_metric="heldout_accuracy"),
)

BY_NAME = {s.name: s for s in STAGES}


def get(name: str) -> Stage:
    """A stage by full name or by its number/prefix (``"00"`` or ``"00_base"``)."""
    if name in BY_NAME:
        return BY_NAME[name]
    hits = [s for s in STAGES if s.name.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    raise KeyError(f"unknown stage '{name}'; stages: {', '.join(BY_NAME)}")
