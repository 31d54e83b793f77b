"""The README's layout tree names every file and folder the repository holds where it matters:
each lib module, each notebook, each params file, each top-level entry, and nothing that is gone."""
from __future__ import annotations

import re
import subprocess

from lib.paths import ROOT


def _tree() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def _named(tree: list[str]) -> set[str]:
    """Paths the tree names, rebuilt from its indentation (two spaces a level)."""
    out, stack = set(), []
    for line in tree:
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.strip().split()[0]
        stack = stack[:depth] + [name.rstrip("/")]
        names = re.match(r"[\w./-]+(?:,\s*[\w./-]+)*", line.strip()).group(0)  # "report.py, plots.py"
        for part in re.split(r",\s*", names):
            out.add("/".join(stack[:-1] + [part.strip().rstrip("/")]))
    return out


def _tracked() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return {f for f in files if (ROOT / f).exists()}


def test_readme_tree_matches_the_repository():
    named, tracked = _named(_tree()), _tracked()
    wanted = {f for f in tracked if re.fullmatch(r"(lib/.+\.py|notebooks/[^/]+\.ipynb|params/[^/]+\.yaml)", f)
              and not f.endswith("__init__.py")}
    wanted |= {f.split("/")[0] for f in tracked if not f.startswith(".")}
    missing = sorted(wanted - named)
    assert not missing, f"README layout does not mention: {missing}"
    gone = sorted(n for n in named if n.startswith(("lib/", "notebooks/", "params/")) and n not in tracked
                  and not any(t.startswith(n + "/") for t in tracked))
    assert not gone, f"README layout names what no longer exists: {gone}"


def test_library_and_notebooks_point_nowhere_outside_the_repository():
    """A user's clone has no ../shared: no module or notebook sends a reader there (docs/ holds what they need)."""
    outside = re.compile(r"\.\./shared|\bSPEC\.md|STACK_NOTES|MINIATURE_NOTES")
    hits = []
    for f in sorted((ROOT / "lib").rglob("*.py")) + sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if outside.search(line):
                hits.append(f"{f.relative_to(ROOT)}:{i}: {line.strip()[:80]}")
    assert not hits, "\n".join(hits)
