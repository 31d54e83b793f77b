"""The library's shape: its modules import each other one way (no cycle, counting imports inside
functions too: a function-level import that only breaks a loop is still a loop)."""
from __future__ import annotations

from lib.artifacts import _lib_imports, _module_file
from lib.paths import LIB_DIR


def import_graph(lib_dir=LIB_DIR) -> dict[str, set[str]]:
    def name_of(f):
        return ".".join(f.relative_to(lib_dir).with_suffix("").parts).removesuffix(".__init__")

    graph = {}
    for f in lib_dir.rglob("*.py"):
        if f.name == "__init__.py" and f.parent == lib_dir:
            continue
        deps = {name_of(m) for d in _lib_imports(f.read_text()) if (m := _module_file(d, lib_dir))}
        graph[name_of(f)] = deps - {name_of(f)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(n, path):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (c := visit(d, path + [d])):
                return c
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n, [n])):
            return c
    return None


def test_lib_has_no_import_cycle():
    graph = import_graph()
    assert {"training", "packing", "launch", "teachers", "teachers.endpoint"} <= graph.keys()
    assert "packing" in graph["training"] and "training" not in graph["packing"]  # one way
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    from lib import b\n")
    (tmp_path / "b.py").write_text("from lib.c import x\n")
    (tmp_path / "c.py").write_text("import lib.a\n")
    assert find_cycle(import_graph(tmp_path)) in (["a", "b", "c", "a"],)
