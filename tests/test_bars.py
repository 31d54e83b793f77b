"""lib.bars: a live widget bar in Jupyter whose saved output is its final text line."""
from __future__ import annotations

import pytest

from lib import bars
from lib.paths import ROOT

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_plain_tqdm_outside_a_notebook(capsys):
    assert not bars.in_notebook()
    assert sum(1 for _ in bars.tqdm(range(3), desc="x")) == 3
    assert "3/3" in capsys.readouterr().err


@pytest.mark.slow
def test_saved_notebook_keeps_text_not_widgets():
    """Executed in a real kernel: the bar was a widget while it ran, the saved output is text."""
    import nbformat
    from nbclient import NotebookClient

    from lib.recipe import ensure_kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from lib.bars import tqdm, in_notebook\nprint(in_notebook())"),
        nbformat.v4.new_code_cell("for _ in tqdm(range(5), desc='kept', unit='problem'):\n    pass"),
        nbformat.v4.new_code_cell("for _ in tqdm(range(5), desc='gone', leave=False):\n    pass"),
        nbformat.v4.new_code_cell("bar = tqdm(total=4, desc='stopped')\nbar.update(2)\nbar.close()"),
        nbformat.v4.new_code_cell("import lib.model  # routes transformers' own bars to lib.bars\n"
                                  "from transformers.utils import logging as hf_logging\n"
                                  "for _ in hf_logging.tqdm(range(2), desc='Writing model shards'):\n    pass"),
    ]
    NotebookClient(nb, kernel_name=ensure_kernel(), timeout=120,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    outs = [c.outputs for c in nb.cells]
    assert outs[0][0]["text"].strip() == "True"  # the widget bar was in use
    for cell in outs[1:]:
        assert all(WIDGET not in o.get("data", {}) for o in cell), cell
    kept = outs[1][0]["data"]["text/plain"]
    assert kept.startswith("kept: 100%") and "5/5" in kept and "problem/s" in kept
    assert outs[2][0]["data"]["text/plain"] == ""
    assert "2/4" in outs[3][0]["data"]["text/plain"]  # an interrupted bar shows where it stopped
    assert outs[4][0]["data"]["text/plain"].startswith("Writing model shards: 100%")
