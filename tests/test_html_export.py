"""lib.html_export on a tiny fake run folder holding real (small) executed notebooks."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from lib import html_export
from lib.paths import ROOT

pytestmark = pytest.mark.slow  # executes one small notebook in a real kernel


@pytest.fixture(scope="module")
def executed_notebook(tmp_path_factory):
    """One notebook with a markdown cell, a plot, a plain tqdm.auto widget bar and a lib.bars bar."""
    import nbformat
    from nbclient import NotebookClient

    from lib.recipe import ensure_kernel

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A stage\nSome *text*."),
        nbformat.v4.new_code_cell("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                                  "plt.plot([1, 2, 3], [3, 1, 2]); plt.show()"),
        nbformat.v4.new_code_cell("from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='widgetbar'):\n    pass"),
        nbformat.v4.new_code_cell("from lib.bars import tqdm as ptqdm\nfor _ in ptqdm(range(3), desc='textbar'):\n    pass"),
    ]
    NotebookClient(nb, kernel_name=ensure_kernel(), timeout=120,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    path = tmp_path_factory.mktemp("nb") / "executed.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def fake_run(tmp_path, executed_notebook):
    import nbformat

    run = tmp_path / "fakerun"
    for name in ("00_base_model", "01_generate_data", "03_mid_train"):
        (run / name).mkdir(parents=True)
        shutil.copy(executed_notebook, run / name / f"{name}.ipynb")
    (run / "00_base_model" / "manifest.json").write_text(json.dumps({"elapsed_s": 75.4}))
    (run / "00_base_model" / "metrics.json").write_text(json.dumps({"heldout_accuracy": 0.125}))
    nb = nbformat.read(run / "03_mid_train" / "03_mid_train.ipynb", as_version=4)  # a stage that failed
    nb.cells[1].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[]))
    nbformat.write(nb, run / "03_mid_train" / "03_mid_train.ipynb")
    (run / "07_eval").mkdir()
    (run / "07_eval" / "by_level.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (run / "REPORT.md").write_text("# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![by level](07_eval/by_level.png)\n\n"
                                   "[metrics](00_base_model/metrics.json)\n")
    (run / "params.yaml").write_text("run:\n  name: fakerun\n")
    (run / "html").mkdir()
    (run / "html" / "stale.html").write_text("old")
    return run


def test_export_run(fake_run):
    index = html_export.export_run(fake_run)
    out = fake_run / "html"
    assert index == out / "index.html"
    assert not (out / "stale.html").exists()  # rebuilt from scratch
    page = index.read_text()
    links = re.findall(r'href="([^"]+)"', page)
    assert links == ["report.html", "00_base_model.html", "01_generate_data.html", "03_mid_train.html"]
    for link in links:
        assert (out / link).is_file()
    assert "completed" in page and "1m15s" in page and "heldout_accuracy 0.125" in page
    assert "incomplete (no manifest)" in page  # 01: notebook but no manifest
    assert "error: ValueError: boom" in page
    assert "name: fakerun" in page

    stage = (out / "00_base_model.html").read_text()
    assert "data:image/png;base64," in stage  # the plot, inline
    assert "widget-view+json" not in stage and "Error displaying widget" not in stage
    assert "textbar: 100%" in stage  # lib.bars left its final line as text
    assert "<h1" in stage and "A stage" in stage

    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report and "<table>" in report
    assert 'href="../00_base_model/metrics.json"' in report


def test_export_empty_run(tmp_path):
    index = html_export.export_run(tmp_path / "empty")
    assert "No executed stage notebooks" in index.read_text()
