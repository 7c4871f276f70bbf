"""The import graph of ``sslray/``, read from the code: no cycle, and no Ray below the Ray layer.

Every ``import`` that runs counts, lazy ones inside functions included: a cycle hidden by a lazy
import still ties the modules together (docs/architecture.md, "The rules"). Imports under
``if TYPE_CHECKING:`` never run; they only name a type for annotations, so they are not edges.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslray"
# The Ray Tune/MLflow glue of evaluation; every other evaluate module is a head (maths only).
EVALUATION_GLUE = {"sslray.evaluate.run", "sslray.evaluate.mil", "sslray.evaluate.tune_grid",
                   "sslray.evaluate.knn_protocol", "sslray.evaluate.profiling"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> sslray modules it imports, module -> top-level external packages it imports)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    internal: dict[str, set[str]] = {m: set() for m in modules}
    external: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, package, modules):
                (internal if target in modules else external)[name].add(target if target in modules
                                                                          else target.split(".")[0])
    return internal, external


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (annotation-only imports)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _targets(node: ast.AST, package: str, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [_existing(alias.name, modules) for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, *([base] if base else [])])
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _existing(base, modules) for a in node.names]


def _existing(name: str, modules: dict) -> str:
    """The longest prefix of ``name`` that is an sslray module (``name`` itself if external)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_graph_is_read_from_the_code():
    internal, external = import_graph()
    assert "sslray.artifacts.checksums" in internal["sslray.artifacts.tile_store"]
    assert "ray" in external["sslray.data.datasource"] and "zarr" in external["sslray.artifacts.store_format"]


def test_lazy_imports_count_and_type_checking_imports_do_not():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\ndef f():\n    import b\n")
    imported = {alias.name for node in _runtime_nodes(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {"b"}


def test_find_cycle_names_the_modules_of_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_sslray_has_no_import_cycle():
    cycle = find_cycle(import_graph()[0])
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _importing_ray(roots: list[str]) -> dict[str, list[str]]:
    internal, external = import_graph()
    found = {}
    for root in roots:
        culprits = sorted(m for m in reachable(internal, root) if "ray" in external[m])
        if culprits:
            found[root] = culprits
    return found


def test_methods_evaluation_heads_profiling_and_artifacts_never_import_ray():
    modules = import_graph()[0]
    roots = [m for m in modules if m.startswith(("sslray.methods", "sslray.artifacts", "sslray.profile"))]
    roots += [m for m in modules if m.startswith("sslray.evaluate.") and m not in EVALUATION_GLUE]
    assert _importing_ray(roots) == {}, "these modules reach Ray through the listed modules"
