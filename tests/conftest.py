"""Shared fixtures: params, and a tiny tokenizer + untrained model built in a second."""
from __future__ import annotations

import pytest

from lib import params as params_mod
from lib.paths import PARAMS_DIR, ROOT

# The frozen copies of real benchmarks next to this checkout (a user's clone has none: those tests skip).
SHARED_BENCHMARKS = ROOT.parent / "shared" / "data" / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_dir(monkeypatch):
    """lib.eval_sets.load_local reads PHI4MR_BENCHMARKS_DIR; the tests point it at the frozen copies."""
    if SHARED_BENCHMARKS.is_dir():
        monkeypatch.setenv("PHI4MR_BENCHMARKS_DIR", str(SHARED_BENCHMARKS))


@pytest.fixture(scope="session")
def smoke_params():
    return params_mod.load(PARAMS_DIR / "smoke.yaml")


@pytest.fixture(scope="session")
def tokenizer_corpus():
    """Prompts + step-by-step solutions of 200 training problems: what the test tokenizers learn from."""
    from lib import chat, problems

    ps = problems.generate(200, seed=0, split="train")
    return [chat.user_content(p.problem) + "\n" + problems.cot_solution(p) for p in ps]


@pytest.fixture(scope="session")
def tiny_tokenizer(tokenizer_corpus):
    from lib.tokenizer import train_tokenizer

    return train_tokenizer(tokenizer_corpus, 512, number_tokens=99)  # as params/smoke.yaml


@pytest.fixture(scope="session")
def digit_tokenizer(tokenizer_corpus):
    """One token per digit (``number_tokens=0``): for tests calibrated on that scheme."""
    from lib.tokenizer import train_tokenizer

    return train_tokenizer(tokenizer_corpus, 320)


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer, smoke_params):
    import torch

    from lib.model import build_scratch

    torch.manual_seed(0)
    return build_scratch(smoke_params.model, tiny_tokenizer).eval()


@pytest.fixture
def use_fake_stages(monkeypatch, tmp_path):
    """``use_fake_stages(stages)`` installs a fake stage registry with fixed code and library
    hashes, and returns a params loader (smoke values, writing under a temporary output root)."""
    from lib import artifacts, stages

    def install(fake):
        monkeypatch.setattr(stages, "STAGES", fake)
        monkeypatch.setattr(stages, "BY_NAME", {s.name: s for s in fake})
        monkeypatch.setattr(artifacts, "notebook_hash", lambda name: "code-" + name)
        monkeypatch.setattr(artifacts, "lib_hash", lambda name: "lib-" + name)
        return lambda *overrides: params_mod.load(PARAMS_DIR / "smoke.yaml", [f"run.output_root={tmp_path}", *overrides])

    return install


@pytest.fixture
def one_thread():
    """One torch thread: the tests share 2 cores with other work, and oversubscribed threads run ~20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
