"""The house's layering (DESIGN.md, README's layout): a module imports only modules on its own floor
or below, never one above, and no two modules import each other, directly or around a circle. Imports
inside functions count too: a lazy import is still a dependency."""

import ast
from pathlib import Path

import leanformers

PACKAGE = Path(leanformers.__file__).parent

# Bottom to top. A module may import from its own floor (another module of the same package) or
# from a floor below it.
FLOORS = ["files", "hub", "weights", "gguf_quants", "gguf", "config", "kernels", "tokenization", "generation", "models", "auto",
          "data", "training", "pipelines", "serve", "cli", "__init__"]
# Floors that must not see each other although one stands above the other.
UNRELATED = {"data": {"generation", "models", "auto"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set) -> set:
    """The leanformers modules that the file at `path` imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from .x import name`: the module is .x
                target = target.rpartition(".")[0]
            if target.startswith("leanformers.") and target != name:
                found.add(target)
    return found


def import_graph() -> dict:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, known) for f in files}


def floor_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def upward_imports(graph: dict) -> list:
    wrong = []
    for module, imports in graph.items():
        floor = floor_of(module)
        for target in imports:
            target_floor = floor_of(target)
            if target_floor not in FLOORS or floor not in FLOORS:
                wrong.append(f"{module} -> {target}: {target_floor if target_floor not in FLOORS else floor} "
                             "is on no floor of the house (add it to FLOORS and to DESIGN.md)")
            elif FLOORS.index(target_floor) > FLOORS.index(floor) or target_floor in UNRELATED.get(floor, ()):
                wrong.append(f"{module} -> {target}")
    return wrong


def import_circles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_one_on_a_higher_floor():
    graph = import_graph()
    assert "leanformers.files" in graph and graph["leanformers.config"], "the import graph was not read"
    assert upward_imports(graph) == []


def test_no_two_modules_import_each_other():
    assert import_circles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_circle():
    graph = import_graph()
    graph["leanformers.config"] = graph["leanformers.config"] | {"leanformers.models.llama"}
    assert upward_imports(graph) == ["leanformers.config -> leanformers.models.llama"]
    assert any("leanformers.config" in circle for circle in import_circles(graph))
    graph = import_graph()
    graph["leanformers.data.load"] = graph["leanformers.data.load"] | {"leanformers.models.base"}
    assert upward_imports(graph) == ["leanformers.data.load -> leanformers.models.base"]
