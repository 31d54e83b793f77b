"""What ``python -m lib.recipe PARAMS --dry-run`` checks before anything runs, stage by stage.

For each stage: its parameters are rebuilt exactly as its notebook will receive them (only the
keys the stage reads, validated by :func:`lib.params.from_flat`, nothing filled in from another
file), and what the stage constructs is constructed - the verifier with its LLM judge, the
teacher, the tagger, the problem source's field mapping, the evaluation sets' names - without
loading weights, calling a server or downloading data. A failure names the stage and the fault.
"""
from __future__ import annotations

from pathlib import Path

from lib import evaluation, params as params_mod, rollouts, stages, tagging, teachers, training
from lib.eval_sets import PRESETS
from lib.paths import resolve




class PreflightError(ValueError):
    """A stage would fail on these parameters; the message names the stage and what to fix."""


def eval_spec_problem(spec: str) -> str | None:
    """Why an evaluation set name cannot be loaded (None when it can): 'synthetic', a preset, a file."""
    if spec == "synthetic" or spec in PRESETS:
        return None
    if spec.endswith((".jsonl", ".json")):
        return None if resolve(spec).is_file() else f"evaluation set file not found: {resolve(spec)}"
    return f"unknown evaluation set {spec!r}: use 'synthetic', a .jsonl path, or one of the presets {sorted(PRESETS)}"


def launcher_processes(accelerate_config: str | None) -> int:
    """Processes an accelerate config starts (``num_processes``; 1 without a launcher)."""
    if not accelerate_config:
        return 1
    import yaml

    return int((yaml.safe_load(resolve(accelerate_config).read_text()) or {}).get("num_processes", 1))


def check_stage(p: params_mod.Params, stage: stages.Stage) -> list[str]:
    """Build what ``stage`` builds from ``p``; return what was checked, or raise :class:`PreflightError`."""
    try:
        q = params_mod.from_flat(params_mod.to_flat(p, stage.sections), stage.sections)
    except params_mod.ParamsError as e:
        raise PreflightError(f"{stage.name}: its notebook would reject its parameters: {e}") from None
    done = [f"{len(params_mod.flat_names(stage.sections))} parameters"]
    names = {s.partition(".")[0] for s in stage.sections}
    try:
        if "verify" in names:
            # in-process: the dry run starts no worker processes; the judge is built, not called
            with evaluation.make_verifier(q.verify.model_copy(update={"workers": 0})) as v:
                done.append(f"verifier (second opinion: {v.judge.name if v.judge else 'none'})")
        if "teacher" in names:
            t = teachers.from_params(q.teacher, seed=q.run.seed, progress=False)
            done.append(f"teacher {t.name}")
            if hasattr(t, "close"):
                t.close()
        if "tagging" in names:
            tagger = tagging.from_params(q.tagging, q.teacher, seed=q.run.seed)
            done.append(f"LLM tagger, {tagger.max_concurrency} at a time" if q.tagging.tagger == "llm" else "rule tagger")
            for spec in q.tagging.decontaminate_against:
                if (why := eval_spec_problem(spec)) is not None:
                    raise PreflightError(f"{stage.name}: tagging.decontaminate_against: {why}")
        if stage.name == "01_generate_data" and q.problems.source != "synthetic":
            specs = q.problems.sources or [{"dataset": q.problems.dataset, "field_map": q.problems.field_map}]
            for i, src in enumerate(specs):
                where = f"problems.sources[{i}]" if q.problems.sources else "problems"
                unknown = sorted(set(src.get("field_map") or {}) - set(rollouts.DEFAULT_FIELDS))
                if unknown:
                    raise PreflightError(f"{stage.name}: {where}.field_map maps unknown field(s) {unknown}; "
                                         f"our fields: {sorted(rollouts.DEFAULT_FIELDS)}")
                local = q.problems.source == "jsonl" or Path(src["dataset"]).suffix in (".jsonl", ".json", ".parquet", ".csv")
                if local and not resolve(src["dataset"]).exists():
                    raise PreflightError(f"{stage.name}: {where}.dataset not found: {resolve(src['dataset'])}")
            done.append(f"problem source {q.problems.source}:" + ", ".join(
                src["dataset"] + (f" (cap {src['cap']:,})" if src.get("cap") else "") for src in specs))
        if "eval.benchmarks" in stage.sections and {"problems", "problems.source"} & set(stage.sections):
            try:
                done.append(f"key metric on {evaluation.heldout_spec(q.problems, q.eval)}")
            except evaluation.NoHeldoutSetError as e:
                raise PreflightError(f"{stage.name}: {e}") from None
        for key, specs in (("eval.benchmarks", q.eval.benchmarks if "eval" in names else []),
                           ("rl.eval_set", [q.rl.eval_set] if "rl" in names else [])):
            for spec in specs:
                if (why := eval_spec_problem(spec)) is not None:
                    raise PreflightError(f"{stage.name}: {key}: {why}")
            if specs:
                done.append(f"{key} {', '.join(specs)}")
        for section in ("base_pretrain", "mid_train", "sft", "dpo", "rl"):
            cfg = getattr(q, section) if section in names else None
            if section == "rl" and cfg is not None and cfg.accelerate_config and cfg.use_vllm:
                raise PreflightError(f"{stage.name}: rl.use_vllm with rl.accelerate_config: colocated vLLM across "
                                     "processes is not wired; set one of them off")
            if cfg is not None and cfg.accelerate_config and not Path(resolve(cfg.accelerate_config)).is_file():
                raise PreflightError(f"{stage.name}: {section}.accelerate_config not found: {resolve(cfg.accelerate_config)}")
            if cfg is not None:
                processes = launcher_processes(cfg.accelerate_config)
                try:
                    accum = training.grad_accum_steps(cfg, processes)
                except training.BatchSizeError as e:
                    raise PreflightError(f"{stage.name}: {section}: {e}") from None
                done.append(f"{section}: {cfg.batch_size} x {accum} x {processes} process(es) per step")
    except PreflightError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise PreflightError(f"{stage.name}: {type(e).__name__}: {e}") from None
    return done
