"""The import graph of pipeline/ has no cycle, of modules or of parts (docs/architecture.md, "Layers").

Every import counts: at the top of a module, inside a function (deferred), under TYPE_CHECKING. A part
is a folder under pipeline/ (attack, data, infra, model, susceptibility, with their subfolders) or a
module directly in it (config.py, figures.py, …). In a graph without cycles each module can be read,
tested and changed knowing only the modules below it.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"


def module_names(package: Path) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports(package: Path) -> dict[str, set[str]]:
    """module → the modules of the package it imports (a name imported from a package resolves to the
    module of that name when there is one, else to the package)."""
    modules = module_names(package)
    root = package.name

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                module = resolve(target) if target.split(".")[0] == root else None
                # a module's own package (its __init__) is loaded before it: no edge of its making
                if module and module != name and not name.startswith(module + "."):
                    found.add(module)
        graph[name] = found
    return graph


def part(module: str) -> str:
    """pipeline.attack.spaces.record → pipeline.attack; pipeline.config → pipeline.config."""
    return ".".join(module.split(".")[:2])


def parts_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    parts: dict[str, set[str]] = {part(m): set() for m in graph}
    for module, targets in graph.items():
        parts[part(module)] |= {part(t) for t in targets if part(t) != part(module) and "." in part(t)}
    return parts


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def edges_within(graph: dict[str, set[str]], component: list[str], of=lambda m: m) -> list[str]:
    members = set(component)
    return sorted(f"{m} → {t}" for m, ts in graph.items() for t in ts
                  if of(m) in members and of(t) in members and of(m) != of(t))


def test_no_module_imports_itself_round_about():
    graph = imports(PACKAGE)
    found = cycles(graph)
    assert not found, "\n".join(f"cycle {c}:\n  " + "\n  ".join(edges_within(graph, c)) for c in found)


def test_no_part_imports_itself_round_about():
    graph = imports(PACKAGE)
    found = cycles(parts_graph(graph))
    assert not found, "\n".join(f"cycle {c}:\n  " + "\n  ".join(edges_within(graph, c, part)) for c in found)


def test_config_and_the_infrastructure_import_no_research_code():
    """The bottom layers: config (and what it imports), hashing, errors, features and infra/ know nothing of
    the data, the model, the attack or the analysis (a stage is found by the registry, by name)."""
    parts = parts_graph(imports(PACKAGE))
    research = {"pipeline.data", "pipeline.model", "pipeline.attack", "pipeline.susceptibility"}
    for bottom in ("pipeline.config", "pipeline.options", "pipeline.hashing", "pipeline.errors",
                   "pipeline.features", "pipeline.infra"):
        assert not parts[bottom] & research, (bottom, parts[bottom] & research)


def test_the_attack_core_imports_nothing_of_the_package():
    graph = imports(PACKAGE)
    assert graph["pipeline.attack.core"] == set()
    spaces = {m for m in graph if m.startswith("pipeline.attack.spaces")}
    searches = {"pipeline.attack.l1", "pipeline.attack.one_edit", "pipeline.attack.fewest_edits",
                "pipeline.attack.fewest_errors", "pipeline.attack.undetected"}
    wirings = {m for m in graph if m.startswith("pipeline.attack.wiring")}
    for module in spaces:  # geometry: the spaces use the core, never a search nor a wiring
        assert not graph[module] & (searches | wirings), (module, graph[module] & (searches | wirings))
    for module in searches:  # the searches know the spaces, not how they are wired or stored
        assert not graph[module] & wirings, (module, graph[module] & wirings)


def test_the_stages_and_the_analysis_reach_a_space_by_its_name_only():
    """Only the wiring of a space (and the searches that work in it) import a named space's module; the
    `attack` stage, the targets and the analysis ask the registries (spaces.get, wiring.get, wiring.of)."""
    from pipeline.config import SPACES

    graph = imports(PACKAGE)
    named = {f"pipeline.attack.{layer}.{name}" for layer in ("spaces", "wiring") for name in SPACES}
    searches = {"pipeline.attack.l1", "pipeline.attack.one_edit", "pipeline.attack.fewest_edits",
                "pipeline.attack.fewest_errors", "pipeline.attack.undetected"}
    for module, targets in graph.items():
        if module.startswith("pipeline.attack.wiring.") or module in searches:
            assert not targets & {n for n in named if ".wiring." in n}, module  # a wiring is reached by name
            continue
        assert not targets & named, (module, targets & named)


@pytest.mark.parametrize(("planted", "cycle"), [
    ({"a/__init__.py": "", "a/x.py": "from a.y import f\n", "a/y.py": "def f():\n    from a import x  # late\n"},
     ["a.x", "a.y"]),
    ({"a/__init__.py": "", "a/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from a.y import T\n",
      "a/y.py": "from . import x\n"}, ["a.x", "a.y"]),
])
def test_the_check_finds_a_deferred_or_type_only_cycle(planted, cycle, tmp_path):
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(imports(tmp_path / "a")) == [cycle]
