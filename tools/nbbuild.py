"""Write a clean notebook (no outputs, no execution counts) from a list of cells.

Used to author the stage notebooks from plain text: `python tools/nbbuild.py SPEC.py OUT.ipynb`
where SPEC.py separates cells with lines `# %% [markdown]` / `# %%` / `# %% [parameters]`
(the jupytext "percent" convention). The parameters cell is then filled by
`python -m lib.recipe --sync-notebooks`.
"""
import json
import re
import sys
from pathlib import Path

KERNELSPEC = {"name": "phi4mr", "display_name": "Python (phi4-mini-reasoning)", "language": "python"}


def build(spec: str) -> dict:
    cells = []
    for block in re.split(r"^(?=# %%)", spec, flags=re.M):
        if not block.strip():
            continue
        header, _, body = block.partition("\n")
        body = body.strip("\n")
        if "[markdown]" in header:
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            cells.append({"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)})
        else:
            meta = {"tags": ["parameters"]} if "[parameters]" in header else {}
            cells.append({"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
                          "source": body.splitlines(keepends=True)})
    return {"cells": cells, "metadata": {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


if __name__ == "__main__":
    src, out = sys.argv[1], sys.argv[2]
    nb = build(Path(src).read_text())
    for i, c in enumerate(nb["cells"]):
        c["id"] = f"c{i:02d}"
    Path(out).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
