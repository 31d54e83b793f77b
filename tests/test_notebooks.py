"""Committed notebooks: clean, one per registered stage, parameters cell in sync with tiny.yaml."""
from __future__ import annotations

import json

import pytest

from lib import params as P
from lib import recipe, stages
from lib.paths import NOTEBOOKS_DIR, PARAMS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_one_notebook_per_stage():
    assert [nb.stem for nb in NOTEBOOKS] == [s.name for s in stages.STAGES]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
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
