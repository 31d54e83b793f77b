"""Mutation testing of four core modules with mutmut 3.8, on a temporary copy of the repository.

    python tools/mutation.py [metrics rl answers packing] [--max-children N] [--keep]

(``verify`` is accepted as an alias of ``answers``: the answer extraction moved from lib/verify.py
to lib/answers.py.)

For each module: copy the repository's files (git's tracked and untracked-not-ignored files) to
a temporary directory, write a ``[mutmut]`` section into that copy's ``setup.cfg`` that mutates
only that module and runs only its own fast unit tests, run ``mutmut run`` there, and read the
verdicts back from ``mutants/lib/<module>.py.meta``. The working tree is never modified.

Score = killed / (mutants counted), where timeouts count as killed (mutmut's convention: the
mutant made the tests hang) and "no tests" counts as survived. Two kinds of mutant are left out
of the score, and listed:

* functions outside ``SCORED_FUNCTIONS``: those of lib/rl.py and lib/packing.py that need a
  model, a trainer or a tokenizer (the issue scores rl.py's pure functions). Their mutants are
  not even run. (lib/answers.py is all answer extraction -- both policies and the pre-filter --
  and is scored whole);
* message-only mutants: the mutation changes nothing but the text of an error or log message
  (a string literal inside ``raise ...(...)``/``warnings.warn``).

Writes, per module, ``outputs/mutation/<module>.txt`` (the table row, the excluded mutants and
the diff of every survivor) and prints a table of all modules. Not run in CI: it takes minutes
per module (see docs/mutation.md).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "mutation"

# mutmut's exit codes (mutmut/stats.py status_by_exit_code)
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}

MODULES = {
    # module: pytest arguments selecting its own fast unit tests
    "metrics": ["tests/test_metrics.py", "-m", "not slow"],
    "rl": ["tests/test_rl.py", "-m", "not slow", "-k",
           "not grpo and not normaliser and not fused_head and not heldout_tracker"],
    # Left out: timing tests (the megabyte extraction, the in-process adversarial deadlines, the
    # process pool's) fail under mutmut's call tracing on a busy box; the CLI tests run lib.verify
    # in a subprocess (4-5 s each, and no extraction path that the in-process tests miss).
    "answers": ["tests/test_answers.py", "tests/test_verify.py", "tests/test_verify_cases_real_outputs.py",
                "-m", "not slow", "-k",
                "not megabyte and not pool and not adversarial_in_process and not cli"],
    "packing": ["tests/test_packing.py", "-m", "not slow", "-k",
                "not loss_equals and not leak and not gradients_equal and not fit_packed and not tokenize"
                " and not collator_for"],
}

# The functions whose mutants are run and scored (None: every function of the module). The
# others need a model, a trainer, a tokenizer or worker processes (rl, packing); they are listed
# in the report, not run. lib/answers.py is scored whole: strict and lenient extraction, the
# multiple-choice letters and the pre-filter (`prefilter`, `nesting_depth`) are all extraction.
SCORED_FUNCTIONS = {
    "metrics": None,
    "rl": ["VerifiableReward.*", "length_cv", "probe", "select_prompts", "balance_mask", "group_advantages",
           "annealed_temperature", "step_curve"],
    "answers": None,
    "packing": ["pack", "rows_dataset", "PackedCollator.*"],
}
# Old module names still accepted on the command line.
ALIASES = {"verify": "answers"}


def mutant_patterns(module: str) -> list[str]:
    """``mutmut run`` arguments selecting the scored functions' mutants (fnmatch patterns)."""
    funcs = SCORED_FUNCTIONS[module]
    if funcs is None:
        return []
    out = []
    for f in funcs:
        if f.endswith(".*"):
            out.append(f"lib.{module}.xǁ{f[:-2]}ǁ*")
        elif "." in f:
            cls, meth = f.split(".")
            out.append(f"lib.{module}.xǁ{cls}ǁ{meth}__mutmut_*")
        else:
            out.append(f"lib.{module}.x_{f}__mutmut_*")
    return out


@dataclass
class Result:
    module: str
    seconds: float = 0.0
    status: dict[str, str] = field(default_factory=dict)      # mutant -> killed/survived/timeout/no tests/...
    excluded: dict[str, str] = field(default_factory=dict)    # mutant -> why it is not scored
    diffs: dict[str, str] = field(default_factory=dict)

    def count(self, *statuses: str) -> int:
        return sum(1 for m, s in self.status.items() if s in statuses and m not in self.excluded)

    @property
    def scored(self) -> int:
        return sum(1 for m in self.status if m not in self.excluded)

    @property
    def score(self) -> float:
        return 100.0 * self.count("killed", "timeout") / self.scored if self.scored else float("nan")


def status_of(code) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code == 37:
        return "type check"
    if code is None:
        return "not checked"
    return f"suspicious ({code})"


def function_of(mutant: str, module: str) -> str:
    """``lib.rl.xǁHeldoutTrackerǁmeasure__mutmut_3`` -> ``HeldoutTracker.measure``;
    ``lib.rl.x_probe__mutmut_1`` -> ``probe``."""
    name = mutant[len(f"lib.{module}."):]
    name = re.sub(r"__mutmut_\d+$", "", name)
    if name.startswith("xǁ"):
        return ".".join(p for p in name[2:].split("ǁ") if p)
    return name[2:] if name.startswith("x_") else name


def scored_function(func: str, module: str) -> bool:
    funcs = SCORED_FUNCTIONS[module]
    if funcs is None:
        return True
    return any(func.startswith(f[:-1]) if f.endswith(".*") else func == f for f in funcs)


def _message_call(node: ast.AST) -> bool:
    """A call that builds an error or a warning: ``SomeError(...)``, ``warnings.warn(...)``."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name.endswith(("Error", "Exception")) or name == "warn"


def _is_message(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, str))


class _BlankMessages(ast.NodeTransformer):
    """Replace each message argument of an exception or a warning by a marker, and collect the
    expressions its f-strings evaluate."""

    def __init__(self):
        self.expressions: list[str] = []

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _message_call(node):
            for i, arg in enumerate(node.args):
                if _is_message(arg):
                    self.expressions += [ast.dump(v) for v in ast.walk(arg) if isinstance(v, ast.FormattedValue)]
                    node.args[i] = ast.Constant("<message>")
        return node


def message_only(orig: str, mutant: str) -> bool:
    """True if the mutant differs from the original only in the message of an error or warning:
    the same code once every message is blanked, and the mutant's messages evaluate no expression
    the original's do not (so ``f"{sorted(r)}"`` -> ``f"{sorted(None)}"``, which raises another
    error, is not message-only, while ``"no rows"`` -> ``"XXno rowsXX"`` or ``None`` is)."""
    try:
        a, b = (ast.parse(textwrap.dedent(src)) for src in (orig, mutant))
    except SyntaxError:
        return False
    if ast.dump(a) == ast.dump(b):
        return False
    blank_a, blank_b = _BlankMessages(), _BlankMessages()
    if ast.dump(blank_a.visit(a)) != ast.dump(blank_b.visit(b)):
        return False
    return all(e in blank_a.expressions for e in blank_b.expressions)


def dump_diffs(names: list[str]) -> None:
    """Run inside a mutmut work directory: print {mutant: [diff, original code, mutant code]} as JSON."""
    import libcst as cst
    from mutmut.mutation.diff_apply import (find_mutant, get_diff_for_mutant, read_functions_from_index,
                                            read_mutant_function, read_mutants_module, read_original_function)

    out = {}
    for name in names:
        path = find_mutant(name).path
        funcs = read_functions_from_index(name, path)
        if funcs is None:
            module = read_mutants_module(path)
            funcs = (read_original_function(module, name), read_mutant_function(module, name))
        orig, mutant = (cst.Module([f]).code for f in funcs)
        out[name] = [get_diff_for_mutant(name, path=path), orig, mutant]
    json.dump(out, sys.stdout)


def copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for f in files:
        src = ROOT / f
        if not f or not src.is_file():
            continue
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / f)


def write_config(copy: Path, module: str) -> None:
    def lines(values):
        return "\n" + "\n".join(f"    {v}" for v in values)

    cfg = (
        "[mutmut]\n"
        "source_paths = lib\n"
        f"only_mutate = lib/{module}.py\n"
        f"pytest_add_cli_args_test_selection ={lines(MODULES[module])}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
        "use_git_change_detection = false\n"
    )
    with open(copy / "setup.cfg", "a") as f:
        f.write("\n" + cfg)


def run_module(module: str, max_children: int, keep: bool) -> Result:
    res = Result(module)
    tmp = Path(tempfile.mkdtemp(prefix=f"mutation-{module}-"))
    log = OUT / f"{module}.log"
    try:
        copy_repo(tmp)
        write_config(tmp, module)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTHONPATH", None)
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children),
                                   *mutant_patterns(module)],
                                  cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
        res.seconds = time.perf_counter() - start
        meta = tmp / "mutants" / "lib" / f"{module}.py.meta"
        if proc.returncode != 0 or not meta.exists():
            raise RuntimeError(f"mutmut run failed for {module} (exit {proc.returncode}); see {log}")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        res.status = {m: status_of(c) for m, c in codes.items()}
        to_show = []
        for m, s in res.status.items():
            func = function_of(m, module)
            if not scored_function(func, module):
                res.excluded[m] = f"not scored ({func})"
            elif s not in ("killed", "timeout"):
                to_show.append(m)
        if to_show:
            shown = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--dump-diffs", *to_show], cwd=tmp,
                                   env=env, capture_output=True, text=True, check=True).stdout
            for m, (diff, orig, mutant) in json.loads(shown).items():
                res.diffs[m] = f"# {m}: {res.status[m]}\n{diff}"
                if message_only(orig, mutant):
                    res.excluded[m] = "message only"
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


HEADER = f"{'module':<10} {'mutants':>8} {'excluded':>9} {'scored':>7} {'killed':>7} {'timeout':>8} " \
         f"{'survived':>9} {'no tests':>9} {'score':>7} {'time':>8}"


def row(r: Result) -> str:
    return (f"{r.module:<10} {len(r.status):>8} {len(r.excluded):>9} {r.scored:>7} {r.count('killed'):>7} "
            f"{r.count('timeout'):>8} {r.count('survived'):>9} {r.count('no tests'):>9} {r.score:>6.1f}% "
            f"{r.seconds / 60:>6.1f}m")


def report(r: Result) -> str:
    out = [HEADER, row(r), "", f"excluded from the score ({len(r.excluded)}):"]
    if SCORED_FUNCTIONS[r.module] is not None:
        out.append(f"  scored functions only: {', '.join(SCORED_FUNCTIONS[r.module])}")
        others = sorted({why[len("not scored ("):-1] for why in r.excluded.values() if why != "message only"})
        out.append(f"  not run (need a model/trainer/worker processes, or not scored): {', '.join(others)}")
    for m, why in sorted(r.excluded.items()):
        if why == "message only":
            out.append(f"  {m}: {why}")
    n_fn = sum(why != "message only" for why in r.excluded.values())
    out.append(f"  ({n_fn} mutants in functions not scored)")
    out.append("")
    survivors = [m for m, s in sorted(r.status.items()) if s not in ("killed", "timeout") and m not in r.excluded]
    out.append(f"survivors ({len(survivors)}):")
    for m in survivors:
        out.append(r.diffs.get(m, f"# {m}: {r.status[m]}").rstrip())
        out.append("")
    out.append("message-only mutants (excluded), diffs:")
    for m, why in sorted(r.excluded.items()):
        if why == "message only":
            out.append(r.diffs.get(m, m).rstrip())
            out.append("")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--dump-diffs":
        dump_diffs(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", default=list(MODULES), choices=[*MODULES, *ALIASES])
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", action="store_true", help="keep the temporary copies (for mutmut show/browse)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for module in dict.fromkeys(ALIASES.get(m, m) for m in args.modules):
        print(f"== lib/{module}.py: tests {' '.join(MODULES[module])}", flush=True)
        r = run_module(module, args.max_children, args.keep)
        (OUT / f"{module}.txt").write_text(report(r))
        print(row(r), f"-> {OUT / (module + '.txt')}", flush=True)
        results.append(r)
    print()
    print(HEADER)
    for r in results:
        print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
