"""Where a training stage runs: in the notebook's process, or as a command under ``accelerate launch``.

    python -m lib.launch --model CKPT --rows rows.jsonl --config train.json --out DIR [--packing]
    python -m lib.launch --task dpo --model CKPT --rows pairs.jsonl [--eval-rows heldout.jsonl] ...
    python -m lib.launch --task grpo --model CKPT --rows prompts.jsonl --eval-rows tracked.jsonl ...
    accelerate launch --config_file configs/accelerate_zero3_8gpu.yaml -m lib.launch ...

:func:`train_stage` (mid-training, SFT), :func:`train_dpo_stage` (rollout DPO) and
:func:`train_rl_arms` (stage 06's GRPO arms: one after the other through :func:`train_rl_arm`, or
on a CPU with ``rl.arms_side_by_side`` as processes at once through :func:`launch_side_by_side`)
are what the stage notebooks call. Each trains in process,
or writes its rows and params section to the stage folder and runs this module as a command
(:func:`launch`). Either way the work is the same library call (:func:`lib.training.fit`,
:func:`lib.dpo.fit_dpo`, :func:`lib.rl.run_grpo`), so one process, DDP on several CPU processes
or GPUs, DeepSpeed ZeRO-3 and FSDP all run the same stage code (the Trainer reads the launcher's
environment). ``train.json`` is a params training section (``mid_train``, ``sft``, ``dpo``,
``rl``: lr, epochs, batch_size, ...) plus ``seed`` and ``dtype`` (and for ``grpo`` the arm:
tricks, the ``verify`` section, the tracked set's name, a step-0 row). The main process saves
``DIR/model`` (a ``save_pretrained`` folder) and ``DIR/train_stats.json``; checkpoints go to
``DIR/trainer`` and a rerun resumes from the newest one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from lib import model as modellib
from lib import progress, training
from lib.params import DPO, Train
from lib.paths import ROOT, resolve


# what each task trains on: the columns every JSONL row needs
TASKS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"), "grpo": ("problem", "answer")}


def _read_rows(path: Path, task: str = "sft") -> list[dict]:
    need = TASKS[task]
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or any(k not in row for k in need):
            raise ValueError(f"{path}:{i}: a {task} row needs {', '.join(repr(k) for k in need)}"
                             + {"sft": " (TRL conversational format)", "dpo": " (a preference pair)",
                                "grpo": " (an RL prompt with its reference answer)"}[task])
        rows.append(row)
    return rows


def _fit_dpo(start_checkpoint, pairs, heldout, section, out_dir: Path, *, device, dtype, seed: int,
             load_device=None) -> tuple:
    """DPO from ``start_checkpoint`` (also the frozen reference): the stage's work, in any process.
    ``load_device``: where the weights are loaded (a launched process loads on CPU and lets the
    Trainer place them on its own device); ``device`` by default."""
    import pandas as pd

    from lib import dpo

    load_device = device if load_device is None else load_device
    model, tokenizer, backend = modellib.load_for_training(start_checkpoint, load_device, section.use_unsloth,
                                                           max_seq_length=section.max_length)
    ref_model, _ = modellib.load(start_checkpoint, device=load_device)
    cfg = dpo.dpo_config(section, out_dir / "trainer", device=device, dtype=dtype, seed=seed)
    stats = dpo.fit_dpo(model, ref_model, tokenizer, pd.DataFrame(pairs), pd.DataFrame(heldout), cfg)
    return model, tokenizer, stats, backend


def _fit_grpo(start_checkpoint, prompts, section, out_dir: Path, *, verify_section, tracked, device, dtype,
              seed: int, tricks: bool, use_vllm: bool, start: dict | None, track: bool = True,
              load_device=None) -> tuple:
    """One GRPO arm from ``start_checkpoint``: the stage's work, in any process.

    ``tracked``: the :class:`lib.evaluation.EvalSet` the tracker samples every ``eval_every``
    steps (``track=False``: no tracker, as on the processes other than the main one).
    Returns ``(model, tokenizer, summary, history, tracking_s)``.
    """
    import pandas as pd

    from lib import evaluation, rl

    load_device = device if load_device is None else load_device
    model, tokenizer, _ = modellib.load_for_training(start_checkpoint, load_device, section.use_unsloth,
                                                     max_seq_length=section.max_length)
    with evaluation.make_verifier(verify_section) as verifier:
        tracker = rl.tracker_for(section, tokenizer, tracked, verifier, seed=seed, start=start) if track else None
        trainer, summary = rl.run_grpo(model, tokenizer, pd.DataFrame(prompts), section, out_dir, verifier=verifier,
                                       device=device, dtype=dtype, seed=seed, tricks=tricks, tracker=tracker,
                                       use_vllm=use_vllm)
    history = tracker.history if tracker else []
    return trainer.model, tokenizer, summary, history, tracker.seconds if tracker else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="sft",
                    help="sft: prompt-completion rows (mid-training, SFT); dpo: preference pairs; grpo: RL prompts")
    ap.add_argument("--model", required=True, help="checkpoint folder (or hub id) to start from")
    ap.add_argument("--rows", required=True, type=Path, help="JSONL of training rows")
    ap.add_argument("--eval-rows", type=Path, help="dpo: JSONL of held-out pairs (preference accuracy); "
                    "grpo: JSONL of the tracked held-out problems")
    ap.add_argument("--config", required=True, type=Path, help="JSON training section + seed")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--packing", action="store_true")
    args = ap.parse_args(argv)

    from accelerate import PartialState  # the launcher's process state; only the command needs it

    spec = json.loads(args.config.read_text())
    seed = spec.pop("seed", 0)
    device = modellib.pick_device("auto")
    dtype = modellib.train_dtype(spec.get("dtype", "auto"), device)
    if args.task == "grpo":
        from lib.evaluation import EvalSet
        from lib.params import RL, Verify

        cfg = RL.model_validate({k: v for k, v in spec.items() if k in RL.model_fields})
        run = spec["grpo"]  # the arm: tricks, vLLM, verify section, tracked set's name, step-0 row
        tracked = EvalSet(run["eval_set"], _read_rows(args.eval_rows, "grpo"), multiple_choice=run["multiple_choice"])
        main_process = PartialState().is_main_process
        model, tokenizer, stats, history, tracking_s = _fit_grpo(
            args.model, _read_rows(args.rows, "grpo"), cfg, args.out / "trainer",
            verify_section=Verify.model_validate(run["verify"]), tracked=tracked, device=device, dtype=dtype,
            seed=seed, tricks=run["tricks"], use_vllm=run["use_vllm"], start=run.get("start"),
            track=main_process, load_device="cpu")  # the main process tracks; the others only train
        stats = {**stats, "history": history, "tracking_s": tracking_s}
    elif args.task == "dpo":
        cfg = DPO.model_validate({k: v for k, v in spec.items() if k in DPO.model_fields})
        heldout = _read_rows(args.eval_rows, "dpo") if args.eval_rows else []
        model, tokenizer, stats, _ = _fit_dpo(args.model, _read_rows(args.rows, "dpo"), heldout, cfg, args.out,
                                              device=device, dtype=dtype, seed=seed, load_device="cpu")
    else:
        cfg = Train.model_validate({k: v for k, v in spec.items() if k in Train.model_fields})
        model, tokenizer, _ = modellib.load_for_training(args.model, "cpu", cfg.use_unsloth, cfg.max_length)
        sft_cfg = training.sft_config(cfg, args.out / "trainer", device=device, dtype=dtype, seed=seed)
        stats = training.fit(model, tokenizer, _read_rows(args.rows), sft_cfg, packing=args.packing,
                             keep_eos=spec.get("keep_eos", True))
    state = PartialState()
    if state.is_main_process:
        modellib.save(model, tokenizer, args.out / "model")
        stats["world_size"] = state.num_processes
        stats["torch_threads"] = torch.get_num_threads()
        (args.out / "train_stats.json").write_text(json.dumps(stats, indent=2, default=_plain) + "\n")
    if state.num_processes > 1:
        # every process waits for the main one's save, then the process group is torn down before
        # the interpreter exits (a process leaving on its own while gloo's threads run aborted with
        # "terminate called without an active exception" in a clean-clone test run)
        state.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return 0


def _plain(obj):
    """JSON for what training statistics hold besides plain values (numpy scalars, tuples in Counters)."""
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _write_jsonl(path: Path, rows) -> Path:
    """Rows (dicts, or a DataFrame's records) as JSONL; numpy scalars become plain JSON numbers."""
    if hasattr(rows, "to_json"):
        path.write_text(rows.to_json(orient="records", lines=True) if len(rows) else "")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def child_env(environ: dict | None = None) -> dict:
    """The environment of a launched training process: this checkout first on ``PYTHONPATH``.

    The caller's own ``PYTHONPATH`` entries are kept after it: packages installed with
    ``pip install --target`` (a cluster's module system, a GPU box's carried wheels) are found only
    through them, and a child without them fails at its first import (seen on the first GPU run).
    """
    env = dict(os.environ if environ is None else environ)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *rest])
    return env


def launch(model_dir, rows, train_section, seed: int, out_dir, *, packing: bool = False,
           accelerate_config: str | None = None, dtype: str = "auto", task: str = "sft", eval_rows=None,
           extra: dict | None = None) -> dict:
    """Run :func:`main` in a subprocess, under ``accelerate launch`` when a config is given.

    ``rows``: the training rows (a list of dicts or a DataFrame); ``eval_rows``: DPO's held-out
    pairs. Returns the statistics the main process wrote. The subprocess's output streams through.
    """
    cmd = _command(model_dir, rows, train_section, seed, out_dir, packing=packing, accelerate_config=accelerate_config,
                   dtype=dtype, task=task, eval_rows=eval_rows, extra=extra)
    r = subprocess.run(cmd, cwd=ROOT, env=child_env())
    if r.returncode != 0:
        raise RuntimeError(f"training subprocess failed with exit code {r.returncode}: {' '.join(cmd)}")
    return json.loads((Path(out_dir) / "train_stats.json").read_text())


def launch_side_by_side(jobs: dict[str, dict], *, threads: int = 1, report: str | None = None,
                        poll_s: float = 0.5) -> dict[str, dict]:
    """Run several :func:`launch` jobs at once, each one process of ``threads`` torch threads.

    ``jobs``: name -> :func:`launch`'s keyword arguments (no ``accelerate_config``). Only the job
    named ``report`` writes to the stage's progress file (the runner follows one task at a time).
    When a job fails, the others are stopped (their checkpoints stay: a rerun resumes them) and
    a ``RuntimeError`` names the failed ones. Returns name -> the statistics each job wrote.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    procs: dict[str, tuple[subprocess.Popen, list[str]]] = {}
    try:
        for name, job in jobs.items():
            if job.get("accelerate_config"):
                raise ValueError(f"job {name!r}: side-by-side jobs are single processes; drop accelerate_config")
            cmd = _command(**job)
            env = child_env()
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            if name != report:
                env.pop(progress.ENV, None)
            procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env), cmd)
        while True:
            failed = [n for n, (p, _) in procs.items() if p.poll() not in (None, 0)]
            if failed or all(p.poll() is not None for p, _ in procs.values()):
                break
            time.sleep(poll_s)
        if failed:
            stopped = [n for n, (p, _) in procs.items() if p.poll() is None]
            raise RuntimeError("side-by-side training failed: " + "; ".join(
                f"{n} exited with code {procs[n][0].returncode} ({' '.join(procs[n][1])})" for n in failed)
                + (f"; stopped {', '.join(stopped)} (a rerun resumes from their checkpoints)" if stopped else ""))
    finally:
        for p, _ in procs.values():  # an error or an interrupt here leaves no training process behind
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return {name: json.loads((Path(job["out_dir"]) / "train_stats.json").read_text()) for name, job in jobs.items()}


def _command(model_dir, rows, train_section, seed: int, out_dir, *, packing: bool = False,
             accelerate_config: str | None = None, dtype: str = "auto", task: str = "sft", eval_rows=None,
             extra: dict | None = None) -> list[str]:
    """Write a job's rows and config to ``out_dir`` and return the command that runs :func:`main` on them."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "rows.jsonl", rows)
    (out / "train.json").write_text(json.dumps({**train_section.model_dump(), "seed": seed, "dtype": dtype,
                                                **(extra or {})}, default=_plain))
    cmd = ["-m", "lib.launch", "--task", task, "--model", str(model_dir), "--rows", str(out / "rows.jsonl"),
           "--config", str(out / "train.json"), "--out", str(out)] + (["--packing"] if packing else [])
    if eval_rows is not None and len(eval_rows):
        cmd += ["--eval-rows", str(_write_jsonl(out / "eval_rows.jsonl", eval_rows))]
    if accelerate_config:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)] + cmd
    return [sys.executable] + cmd


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


def train_dpo_stage(start_checkpoint, train_pairs, heldout_pairs, section: DPO, out_dir, *, device: torch.device,
                    seed: int, dtype: str = "auto"):
    """Rollout DPO's training, in process or under ``accelerate launch`` (``section.accelerate_config``).

    The start checkpoint (the SFT model) is also the frozen reference. ``train_pairs`` and
    ``heldout_pairs``: DataFrames of :data:`lib.dpo.PAIR_COLUMNS`. Returns ``(model, tokenizer,
    stats)`` with the trained model on ``device``; ``stats`` as :func:`lib.dpo.fit_dpo`.
    Checkpoints go to ``out_dir/trainer`` (a rerun resumes from the newest).
    """
    out = Path(out_dir)
    if section.accelerate_config:
        stats = launch(start_checkpoint, train_pairs, section, seed, out, dtype=dtype, task="dpo",
                       eval_rows=heldout_pairs, accelerate_config=str(resolve(section.accelerate_config)))
        model, tokenizer = modellib.load(out / "model", device=device)
        stats["backend"] = f"accelerate launch --config_file {section.accelerate_config}"
        return model, tokenizer, stats
    model, tokenizer, stats, backend = _fit_dpo(start_checkpoint, train_pairs, heldout_pairs, section, out,
                                                device=device, dtype=modellib.train_dtype(dtype, device), seed=seed)
    stats["backend"] = backend
    return model, tokenizer, stats


def train_rl_arm(start_checkpoint, prompts, section, out_dir, *, verify_section, tracked, device: torch.device,
                 seed: int, tricks: bool, use_vllm: bool = False, start: dict | None = None, dtype: str = "auto"):
    """One GRPO arm of stage 06, in process or under ``accelerate launch`` (``section.accelerate_config``).

    ``prompts``: a DataFrame with ``problem, answer``; ``tracked``: the held-out
    :class:`lib.evaluation.EvalSet` sampled every ``rl.eval_every`` steps (on the main process);
    ``start``: a step-0 row measured by another arm from the same checkpoint. Returns
    ``(model, tokenizer, summary, history, tracking_s)`` with the trained model on ``device``;
    ``summary`` as :func:`lib.rl.run_grpo`. Checkpoints go to ``out_dir`` (a rerun resumes).
    """
    out = Path(out_dir)
    if section.accelerate_config:
        if use_vllm:
            raise ValueError("rl.use_vllm under rl.accelerate_config: colocated vLLM across processes is not wired; "
                             "set one of them off")
        job = _grpo_job(start_checkpoint, prompts, section, out, verify_section=verify_section, tracked=tracked,
                        seed=seed, tricks=tricks, start=start, dtype=dtype)
        stats = launch(**job, accelerate_config=str(resolve(section.accelerate_config)))
        return _launched_arm(out, stats, device, f"accelerate launch --config_file {section.accelerate_config}")
    return _fit_grpo(start_checkpoint, prompts, section, out, verify_section=verify_section, tracked=tracked,
                     device=device, dtype=modellib.train_dtype(dtype, device), seed=seed, tricks=tricks,
                     use_vllm=use_vllm, start=start)


def _grpo_job(start_checkpoint, prompts, section, out: Path, *, verify_section, tracked, seed: int, tricks: bool,
              start: dict | None, dtype: str) -> dict:
    """:func:`launch`'s keyword arguments for one GRPO arm run as a command (vLLM is not wired there)."""
    arm = {"tricks": tricks, "use_vllm": False, "verify": verify_section.model_dump(), "start": start,
           "eval_set": tracked.name, "multiple_choice": tracked.multiple_choice}
    return dict(model_dir=start_checkpoint, rows=prompts[["problem", "answer"]].astype(str), train_section=section,
                seed=seed, out_dir=out, dtype=dtype, task="grpo", eval_rows=tracked.items, extra={"grpo": arm})


def _launched_arm(out: Path, stats: dict, device: torch.device, backend: str) -> tuple:
    """:func:`train_rl_arm`'s tuple for an arm a command trained into ``out``: its model loaded on
    ``device``, and the history and tracking seconds split off the statistics it wrote."""
    model, tokenizer = modellib.load(out / "model", device=device)
    history, tracking_s = stats.pop("history"), stats.pop("tracking_s")
    stats["backend"] = backend
    return model, tokenizer, stats, history, tracking_s


def arms_side_by_side(section, n_arms: int, device: torch.device) -> bool:
    """Whether :func:`train_rl_arms` runs its arms at once: ``rl.arms_side_by_side``, two arms or
    more, a CPU, and no ``rl.accelerate_config`` (a launcher decides the processes itself)."""
    return bool(section.arms_side_by_side and n_arms > 1 and device.type == "cpu" and not section.accelerate_config)


def train_rl_arms(start_checkpoint, arms: dict[str, tuple], section, out_root, *, verify_section, tracked,
                  device: torch.device, seed: int, use_vllm: bool = False, dtype: str = "auto") -> dict[str, tuple]:
    """Stage 06's arms from one checkpoint: ``arms`` maps a name to ``(prompts, tricks)``; each arm
    trains in ``out_root/tricks`` or ``out_root/plain``. Returns name -> :func:`train_rl_arm`'s tuple.

    One after the other (the default), the first arm measures the tracked set at step 0 and the
    others reuse that row. Side by side (:func:`arms_side_by_side`) the step-0 row is measured here
    once, then every arm runs at once as its own process with an equal share of this process's
    torch threads; the last arm (plain GRPO, which samples at the start temperature throughout and
    so ends last) feeds the progress file.
    """
    names = list(arms)
    dirs = {name: Path(out_root) / ("tricks" if tricks else "plain") for name, (_, tricks) in arms.items()}
    if len(set(dirs.values())) != len(dirs):
        raise ValueError(f"two arms with the same tricks setting would share a folder: {sorted(arms)}")
    common = dict(verify_section=verify_section, tracked=tracked, device=device, seed=seed, use_vllm=use_vllm,
                  dtype=dtype)
    if not arms_side_by_side(section, len(arms), device):
        out, first = {}, None
        for name in names:
            prompts, tricks = arms[name]
            out[name] = train_rl_arm(start_checkpoint, prompts, section, dirs[name], tricks=tricks, start=first, **common)
            history = out[name][3]
            if first is None and history and history[0]["step"] == 0:  # (a resumed run has no step 0)
                first = history[0]
        return out
    from lib import evaluation, rl

    model, tokenizer = modellib.load(start_checkpoint, device=device)
    with evaluation.make_verifier(verify_section) as verifier:
        first = rl.tracker_for(section, tokenizer, tracked, verifier, seed=seed).measure(model, 0)
    del model
    threads = max(1, torch.get_num_threads() // len(arms))
    jobs = {name: _grpo_job(start_checkpoint, arms[name][0], section, dirs[name], verify_section=verify_section,
                            tracked=tracked, seed=seed, tricks=arms[name][1], start=first, dtype=dtype)
            for name in names}
    stats = launch_side_by_side(jobs, threads=threads, report=names[-1])
    backend = f"side by side: {len(arms)} processes of {threads} torch thread{'s' * (threads > 1)}"
    return {name: _launched_arm(dirs[name], stats[name], device, backend) for name in names}

if __name__ == "__main__":
    sys.exit(main())
