"""Where a training stage runs: in the notebook's process, or as a command under ``accelerate launch``.

    python -m lib.launch --model CKPT --rows rows.jsonl --config train.json --out DIR [--packing]
    accelerate launch --config_file configs/accelerate_zero3_8gpu.yaml -m lib.launch ...

:func:`train_stage` is what a stage notebook calls. It trains in process, or writes the rows and
the section to the stage folder and runs this module as a command (:func:`launch`). Either way
the work is the same :func:`lib.training.fit`, so one process, DDP on several CPU
processes or GPUs, DeepSpeed ZeRO-3 and FSDP all run the same stage code (the Trainer reads the
launcher's environment). ``train.json`` is a params training section (``mid_train``, ``sft``:
lr, epochs, batch_size, ...) plus ``seed``. The main process saves ``DIR/model`` (a
``save_pretrained`` folder) and ``DIR/train_stats.json``; checkpoints go to ``DIR/trainer`` and
a rerun resumes from the newest one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from lib import model as modellib
from lib import training
from lib.params import Train
from lib.paths import ROOT, resolve


def _read_rows(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or "prompt" not in row or "completion" not in row:
            raise ValueError(f"{path}:{i}: a row needs 'prompt' and 'completion' (TRL conversational format)")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint folder (or hub id) to start from")
    ap.add_argument("--rows", required=True, type=Path, help="JSONL of prompt-completion rows")
    ap.add_argument("--config", required=True, type=Path, help="JSON training section + seed")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--packing", action="store_true")
    args = ap.parse_args(argv)

    from accelerate import PartialState  # the launcher's process state; only the command needs it

    spec = json.loads(args.config.read_text())
    seed = spec.pop("seed", 0)
    cfg = Train.model_validate({k: v for k, v in spec.items() if k in Train.model_fields})
    device = modellib.pick_device("auto")
    model, tokenizer, _ = modellib.load_for_training(args.model, "cpu", cfg.use_unsloth, cfg.max_length)
    sft_cfg = training.sft_config(cfg, args.out / "trainer", device=device,
                                  dtype=modellib.train_dtype(spec.get("dtype", "auto"), device), seed=seed)
    stats = training.fit(model, tokenizer, _read_rows(args.rows), sft_cfg, packing=args.packing,
                         keep_eos=spec.get("keep_eos", True))
    if PartialState().is_main_process:
        modellib.save(model, tokenizer, args.out / "model")
        stats["world_size"] = PartialState().num_processes
        (args.out / "train_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return 0


def launch(model_dir, rows: list[dict], train_section, seed: int, out_dir, *, packing: bool = False,
           accelerate_config: str | None = None, dtype: str = "auto") -> dict:
    """Run :func:`main` in a subprocess, under ``accelerate launch`` when a config is given.

    Returns the statistics the main process wrote. The subprocess's output streams through.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "train.json").write_text(json.dumps({**train_section.model_dump(), "seed": seed, "dtype": dtype}))
    cmd = ["-m", "lib.launch", "--model", str(model_dir), "--rows", str(out / "rows.jsonl"),
           "--config", str(out / "train.json"), "--out", str(out)] + (["--packing"] if packing else [])
    if accelerate_config:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)] + cmd
    else:
        cmd = [sys.executable] + cmd
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        raise RuntimeError(f"training subprocess failed with exit code {r.returncode}: {' '.join(cmd)}")
    return json.loads((out / "train_stats.json").read_text())


def train_stage(start_checkpoint, rows: list[dict], section: Train, out_dir, *, device: torch.device, seed: int,
                packing: bool = False, dtype: str = "auto"):
    """A training stage's work, in process or under ``accelerate launch`` (``section.accelerate_config``).

    ``dtype`` is params ``model.dtype`` (:func:`lib.model.train_dtype`).

    Returns ``(model, tokenizer, stats)`` with the trained model loaded on ``device``.
    Checkpoints go to ``out_dir/trainer`` (a rerun resumes from the newest).
    """
    if section.accelerate_config:
        stats = launch(start_checkpoint, rows, section, seed, out_dir, packing=packing, dtype=dtype,
                       accelerate_config=str(resolve(section.accelerate_config)))
        model, tokenizer = modellib.load(Path(out_dir) / "model", device=device)
        stats["backend"] = f"accelerate launch --config_file {section.accelerate_config}"
        return model, tokenizer, stats
    model, tokenizer, backend = modellib.load_for_training(start_checkpoint, device, section.use_unsloth,
                                                           max_seq_length=section.max_length)
    cfg = training.sft_config(section, Path(out_dir) / "trainer", device=device,
                              dtype=modellib.train_dtype(dtype, device), seed=seed)
    stats = training.fit(model, tokenizer, rows, cfg, packing=packing, keep_eos=getattr(section, "keep_eos", True))
    stats["backend"] = backend
    return model, tokenizer, stats


if __name__ == "__main__":
    sys.exit(main())
