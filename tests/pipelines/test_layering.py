"""The house's rooms, checked on the source: which module imports which (imports inside functions
included), and where a store is named.

- no import cycle among the modules of ``operators/`` and ``pipelines/``, nor among the
  sub-packages of ``pipelines/``;
- the OUT format (``pipelines/out``) is below every job: it imports no other room of ``pipelines/``;
- ``operators/`` imports nothing of ``pipelines/``; Ray is imported in the Ray executor alone;
- Milvus is named (an identifier) only in the Milvus store's modules, the store registry, the
  option declarations and the cost model with its two readers (report, plan).
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGES = ("operators", "pipelines")
MILVUS_ALLOWED = ("operators/stores/milvus/", "operators/stores/__init__.py", "pipelines/options.py",
                  "pipelines/analysis/costs.py", "pipelines/analysis/report.py", "pipelines/analysis/capacity.py")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(REPO).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (at any depth of its code)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                r = resolve(t)
                if r and r != name:
                    graph[name].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def room(module: str) -> str:
    """``pipelines.ingest.job`` -> ``pipelines.ingest``; a top-level module is its own room."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_import_cycle_among_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycle_among_the_rooms_of_pipelines():
    rooms: dict[str, set[str]] = defaultdict(set)
    for a, bs in import_graph().items():
        for b in bs:
            if room(a) != room(b):
                rooms[room(a)].add(room(b))
    assert cycles(rooms) == []


def test_the_out_format_is_below_every_job():
    graph = import_graph()
    jobs = {"pipelines.ingest", "pipelines.index", "pipelines.analysis", "pipelines.executors", "pipelines.cli"}
    for a, bs in graph.items():
        if room(a) == "pipelines.out":
            assert not {room(b) for b in bs} & jobs, (a, sorted(b for b in bs if room(b) in jobs))


def test_operators_import_nothing_of_pipelines_and_ray_is_in_one_module():
    for a, bs in import_graph().items():
        if a.startswith("operators"):
            assert not [b for b in bs if b.startswith("pipelines")], a
    with_ray = []
    for p in [*(REPO / "operators").rglob("*.py"), *(REPO / "pipelines").rglob("*.py")]:
        tree = ast.parse(p.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        if any(n == "ray" or n.startswith("ray.") for n in names):
            with_ray.append(p.relative_to(REPO).as_posix())
    assert with_ray == ["pipelines/executors/ray_executor.py"]


def milvus_names() -> dict[str, int]:
    """Identifiers naming Milvus, per file outside the allowed ones."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((REPO / pkg).rglob("*.py")):
            rel = p.relative_to(REPO).as_posix()
            if rel.startswith(MILVUS_ALLOWED):
                continue
            n = sum(1 for t in tokenize.generate_tokens(io.StringIO(p.read_text()).readline)
                    if t.type == tokenize.NAME and "milvus" in t.string.lower())
            if n:
                out[rel] = n
    return out


def test_milvus_is_named_only_behind_the_store_door():
    assert milvus_names() == {}
