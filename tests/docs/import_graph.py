"""The import graph of ai_how, read from the source with ``ast``: which top-level module of the package imports
which (``pipeline`` for ``ai_how.pipeline.*``, ``errors`` for ``ai_how.errors``).

Every import counts: at module level, inside functions (lazy) and under ``TYPE_CHECKING``. Imports of the root
package itself (``from ai_how import __version__``) do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module_name(path: Path) -> tuple[list[str], bool]:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return (parts[:-1] if is_package else parts), is_package


def _targets(node: ast.Import | ast.ImportFrom, parts: list[str], is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = parts if is_package else parts[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join([*base, node.module] if node.module else base)
    else:
        module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def unit_of(module: str) -> str | None:
    """``ai_how.pipeline.stages`` -> ``pipeline``; None outside ai_how or for the root package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ai_how" and len(parts) > 1 else None


def module_imports(src: Path = SRC) -> dict[str, set[str]]:
    """{``ai_how.x.y``: every name it imports (``ai_how.*`` and third-party)}, at module level or not."""
    found: dict[str, set[str]] = {}
    for path in sorted((src / "ai_how").rglob("*.py")):
        parts, is_package = _module_name(path)
        targets = found.setdefault(".".join(parts), set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets.update(_targets(node, parts, is_package))
    return found


def reachable(start: str, imports: dict[str, set[str]]) -> set[str]:
    """Every ai_how module that importing the modules under ``start`` can load, and every name they import."""
    seen: set[str] = set()
    pending = [m for m in imports if m == start or m.startswith(f"{start}.")]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        pending += [".".join(parts[:n]) for n in range(2, len(parts))]  # importing a.b.c runs a.b's __init__
        for target in imports.get(module, ()):
            if target in imports:
                pending.append(target)
            else:
                seen.add(target)
    return seen


def package_graph(src: Path = SRC) -> dict[str, set[str]]:
    """{top-level module: the other top-level modules it imports}."""
    graph: dict[str, set[str]] = {}
    for module, targets in module_imports(src).items():
        unit = unit_of(module)
        if unit is None:
            continue
        graph.setdefault(unit, set())
        for target in targets:
            other = unit_of(target)
            if other is not None and other not in (unit, "__version__"):
                graph[unit].add(other)
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def import_time_graph(src: Path = SRC) -> dict[str, set[str]]:
    """{``ai_how`` module: the ``ai_how`` modules its module-level imports load} (what runs on import)."""
    found: dict[str, set[str]] = {}
    for path in sorted((src / "ai_how").rglob("*.py")):
        parts, is_package = _module_name(path)
        targets = found.setdefault(".".join(parts), set())
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets.update(_targets(node, parts, is_package))
    return {name: {t for t in targets if t in found and t != name} for name, targets in found.items()}
