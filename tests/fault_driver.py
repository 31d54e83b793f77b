"""The long loop of each training stage at smoke size, for the kill-resume rows of tests/test_faults.py.

    python -m tests.fault_driver KIND OUT_DIR      # KIND: midtrain (03) | sft (04) | dpo (05) | grpo (06)

Trains a fixed tiny model with checkpoints every ``CKPT`` steps into ``OUT_DIR/trainer`` (resuming
from the newest complete checkpoint there, as the stages do) and writes ``OUT_DIR/result.json``:
the steps logged, the loss curve, tokens seen and a hash of the final weights. With
``LIB_TRAIN_TEST_KILL=step:N`` (lib.training.KILL_ENV) the process SIGKILLs itself at step N.
Everything is seeded and single-threaded, so an uninterrupted run and a killed-and-resumed one
can be compared exactly.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

STEPS = {"midtrain": 6, "sft": 6, "dpo": 6, "grpo": 4}
CKPT = {"midtrain": 2, "sft": 2, "dpo": 2, "grpo": 1}


def _tokenizer():
    from lib import chat, problems
    from lib.tokenizer import train_tokenizer

    ps = problems.generate(200, seed=0, split="train")
    return train_tokenizer([chat.user_content(p.problem) + "\n" + problems.cot_solution(p) for p in ps], 512,
                           number_tokens=99)


def _weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run(kind: str, out_dir: str | Path) -> dict:
    import pandas as pd
    import torch

    from lib import chat, dpo, params, problems, rl, training
    from lib.model import build_scratch
    from lib.paths import PARAMS_DIR
    from lib.verify import Verifier

    torch.set_num_threads(1)
    out = Path(out_dir)
    P = params.load(PARAMS_DIR / "smoke.yaml")
    tok = _tokenizer()
    torch.manual_seed(0)
    model = build_scratch(P.model, tok)
    cpu, f32 = torch.device("cpu"), torch.float32
    upd = {"max_steps": STEPS[kind], "checkpoint_every": CKPT[kind], "batch_size": 8, "warmup_ratio": 0.0}
    if kind in ("midtrain", "sft"):
        ps = problems.generate(48, seed=1)
        rows = [chat.conversation(p.problem, problems.cot_solution(p)) for p in ps]
        section = (P.mid_train if kind == "midtrain" else P.sft).model_copy(update=upd)
        cfg = training.sft_config(section, out / "trainer", device=cpu, dtype=f32, seed=0)
        stats = training.fit(model, tok, rows, cfg, packing=kind == "midtrain")
        curve, steps = stats["curve"], stats["steps"]
        result = {"tokens_seen": stats["tokens_seen"], "resumed_from_step": stats["resumed_from_step"]}
    elif kind == "dpo":
        rows = []
        for p in problems.generate(24, seed=3, levels=[2, 3]):
            good = problems.cot_solution(p)
            bad = good.replace("\\boxed{" + p.answer + "}", "\\boxed{" + p.answer + "1}")
            rows += [{"problem_id": p.id, "problem": p.problem, "text": good, "correct": True, "length": len(good),
                      "tag_difficulty": p.difficulty},
                     {"problem_id": p.id, "problem": p.problem, "text": bad, "correct": False, "length": len(bad),
                      "tag_difficulty": p.difficulty}]
        pairs, _ = dpo.build_pairs({"teacher": pd.DataFrame(rows)}, 1, True, seed=0)
        ref = build_scratch(P.model, tok)
        ref.load_state_dict(model.state_dict())
        cfg = dpo.dpo_config(P.dpo.model_copy(update=upd), out / "trainer", device=cpu, dtype=f32, seed=0)
        stats = dpo.fit_dpo(model, ref, tok, pairs, pairs.iloc[:0], cfg)
        curve, steps = stats["curve"], stats["steps"]
        result = {"tokens_seen": stats["tokens_seen"], "resumed_from_step": stats["resumed_from_step"]}
    elif kind == "grpo":
        ps = problems.generate(12, seed=1, split="train", levels=[1])
        prompts = pd.DataFrame({"problem": [p.problem for p in ps], "answer": [p.answer for p in ps]})
        section = P.rl.model_copy(update={**upd, "num_generations": 4, "max_length": 24, "lr": 1e-3})
        with Verifier(workers=0) as v:
            trainer, summary = rl.run_grpo(model, tok, prompts, section, out / "trainer", verifier=v, device=cpu,
                                           dtype=f32, seed=0, tricks=True)
        model = trainer.model
        curve = [{"step": r["step"], "loss": r.get("loss"), "reward": r.get("reward")} for r in summary["log"]]
        steps = summary["steps"]
        result = {"resumed_from": summary["resumed_from"]}
    else:
        raise SystemExit(f"unknown kind {kind!r}; one of {', '.join(STEPS)}")
    result.update({"kind": kind, "steps": steps, "logged_steps": [c["step"] for c in curve],
                   "losses": [c["loss"] for c in curve], "weights": _weights_hash(model)})
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
