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
