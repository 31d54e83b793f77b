"""Committed notebooks: clean, one per registered stage, parameters cell in sync with tiny.yaml."""
from __future__ import annotations

import functools
import json
import shlex
import subprocess

import pytest

from lib import params as P
from lib import recipe, stages
from lib.paths import NOTEBOOKS_DIR, PARAMS_DIR, ROOT

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def clean_filter(path) -> str | None:
    """The clean-filter command git runs on ``path`` when it is added (``.gitattributes`` names the
    filter, ``make setup`` configures it), or None when git would store the file as it is."""
    rel = path.relative_to(ROOT).as_posix()
    attr = _git("check-attr", "filter", "--", rel)
    name = attr.rsplit(": ", 1)[-1] if attr else "unspecified"
    if name in ("unspecified", "unset", "set"):
        return None
    cmd = _git("config", "--get", f"filter.{name}.clean")
    return cmd.replace("%f", shlex.quote(rel)) if cmd else None


@functools.cache
def _differ_from_index() -> frozenset[str]:
    """Files whose content, through their filters, differs from the index (git does the filtering)."""
    return frozenset((_git("diff", "--name-only", "--", "notebooks") or "").splitlines())


def as_committed(path, text: str | None = None) -> str:
    """What ``git add`` would store for ``path`` (holding ``text``, by default its current content)."""
    cmd = clean_filter(path)
    if cmd is None:
        return path.read_text() if text is None else text
    rel = path.relative_to(ROOT).as_posix()
    if text is None and rel not in _differ_from_index():  # filtered, it is the staged file: no filter run
        return subprocess.run(["git", "show", f":{rel}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    text = path.read_text() if text is None else text
    return subprocess.run(cmd, shell=True, cwd=ROOT, input=text, capture_output=True, text=True, check=True).stdout


def test_one_notebook_per_stage():
    assert [nb.stem for nb in NOTEBOOKS] == [s.name for s in stages.STAGES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    """What git would commit: the file through the nbstripout filter once `make setup` installed it
    (a notebook run in JupyterLab keeps its outputs on disk), the file itself otherwise."""
    nb = json.loads(as_committed(path))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name}: a code cell has outputs (strip them)"
            assert cell["execution_count"] is None, f"{path.name}: a code cell has an execution count"
    assert nb["metadata"]["kernelspec"]["name"] == recipe.KERNEL


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_matches_tiny_yaml(path):
    """Defaults are the embedded default's; regenerate with `python -m lib.recipe --sync-notebooks`."""
    nb = json.loads(path.read_text())
    _, source = recipe.parameters_source(nb)
    expected = P.parameters_cell(stages.get(path.stem).sections, P.load(PARAMS_DIR / "tiny.yaml"))
    assert source == expected, f"{path.name}: parameters cell is stale; run python -m lib.recipe --sync-notebooks"


def test_parameters_cell_defines_exactly_the_stage_parameters():
    import papermill as pm

    for s in stages.STAGES:
        declared = pm.inspect_notebook(str(NOTEBOOKS_DIR / f"{s.name}.ipynb"))
        assert set(declared) == set(P.flat_names(s.sections)), s.name


# --------------------------------------------------------------------------- chapters
# Each notebook is a chapter: what the stage does and why, the lesson as a plot, what the
# miniature shows and where it differs from the paper, and a closing "Try this" list.

def _markdown(nb: dict) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_structure(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "**What this stage does, and why.**" in "".join(cells[0]["source"]), \
        f"{path.name}: the first cell says what the stage does and why"
    params_cell = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    assert params_cell["metadata"].get("jupyter", {}).get("source_hidden") is True, \
        f"{path.name}: the generated parameters cell is collapsed"
    assert any(m.startswith("## What the miniature shows, and where it differs from the paper") for m in _markdown(nb))
    assert cells[-1]["cell_type"] == "markdown" and "".join(cells[-1]["source"]).startswith("## Try this")
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert ".savefig(" in code, f"{path.name}: the lesson is shown as a saved plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_try_this_commands_are_valid_runs(path):
    """2-4 commands, each `python -m lib.recipe params/tiny.yaml --set ...` whose overrides validate."""
    import re

    text = "".join(json.loads(path.read_text())["cells"][-1]["source"])
    commands = re.findall(r"`(python -m lib\.recipe [^`]+)`", text)
    assert 2 <= len(commands) <= 4, f"{path.name}: {len(commands)} commands in Try this"
    for cmd in commands:
        args = cmd.split()
        assert args[:4] == ["python", "-m", "lib.recipe", "params/tiny.yaml"], cmd
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        assert sets and len(sets) * 2 == len(args) - 4, f"only --set overrides expected: {cmd}"
        P.load(PARAMS_DIR / "tiny.yaml", overrides=sets)  # raises on an unknown key or a bad value


def test_try_this_validation_catches_a_bad_key():
    with pytest.raises(P.ParamsError):
        P.load(PARAMS_DIR / "tiny.yaml", overrides=["dpo.betta=0.5"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_links_stay_inside_the_repository(path):
    """No web links; every relative link resolves to a file of this repository."""
    import re

    from lib.paths import ROOT

    for text in _markdown(json.loads(path.read_text())):
        assert not re.search(r"https?://|www\.", text), f"{path.name}: a link leaves the repository"
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            resolved = (path.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), f"{path.name}: broken link {target}"


def test_saved_by_jupyterlab_after_a_run_commits_unchanged():
    """A notebook JupyterLab saved after running it (outputs, counts, widget state, full
    language_info) goes through the filter into exactly the committed file: git status stays clean."""
    import nbformat

    path = NOTEBOOKS_DIR / "07_eval.ipynb"  # the one that outlasts the Lab's autosave interval
    if clean_filter(path) is None:
        pytest.skip("no git clean filter for notebooks here (`make setup` installs nbstripout's)")
    committed = as_committed(path)
    nb = nbformat.reads(committed, as_version=4)
    for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = n + 1
        cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n"),
                        nbformat.v4.new_output("display_data", data={
                            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                         "version_minor": 0},
                            "text/plain": "HBox()"})]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    nb.metadata["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                                    "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
                                    "pygments_lexer": "ipython3", "version": "3.11.2"}
    assert as_committed(path, nbformat.writes(nb) + "\n") == committed
