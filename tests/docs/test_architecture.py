"""docs/architecture/ml-workflow.md against the real import graph: the table, the diagram and the rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.import_graph import (
    cycles,
    import_time_graph,
    module_imports,
    package_graph,
    reachable,
    unit_of,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture" / "ml-workflow.md"
FOUNDATION = {"errors", "fsutil", "redact", "procs", "failpoints", "extras", "layout", "state"}
HEAVY_SDKS = {
    "mlflow",
    "torch",
    "kubernetes",
    "kserve",
    "libvirt",
    "boto3",
    "botocore",
    "transformers",
    "oumi",
}
# Package cycles the page explains; a new one must be explained there (and here) or removed.
KNOWN_CYCLES = [
    ["config", "kube", "provision"],
    ["deployers", "monitoring", "pipeline", "stack"],
    ["executors", "slurm"],
]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return package_graph()


def documented_table(text: str) -> dict[str, set[str]]:
    block = text.split("<!-- import-graph:start -->")[1].split("<!-- import-graph:end -->", maxsplit=1)[0]
    table: dict[str, set[str]] = {}
    for line in block.strip().splitlines()[2:]:
        name, _job, imports = (cell.strip() for cell in line.strip().strip("|").split("|"))
        table[name.strip("`")] = set(re.findall(r"`([a-z_]+)`", imports))
    return table


def row(name: str, imports: set[str]) -> str:
    return f"`{name}` imports " + (", ".join(f"`{i}`" for i in sorted(imports)) or "—")


def test_the_dependency_table_is_the_real_import_graph(graph: dict[str, set[str]]) -> None:
    table = documented_table(DOC.read_text(encoding="utf-8"))
    wrong = [
        row(name, graph.get(name, set()))
        for name in sorted(set(graph) | set(table))
        if graph.get(name) != table.get(name)
    ]
    assert not wrong, "docs/architecture/ml-workflow.md's table is stale; the source says:\n" + "\n".join(
        wrong
    )


def test_every_edge_of_the_module_diagram_is_a_real_import(graph: dict[str, set[str]]) -> None:
    text = DOC.read_text(encoding="utf-8")
    diagram = next(block for block in text.split("```mermaid")[1:] if "test_architecture.py" in block)
    edges = re.findall(r"^\s*([a-z_]+) --> ([a-z_]+)\s*$", diagram.split("```")[0], flags=re.MULTILINE)
    assert len(edges) > 10
    missing = [f"{a} --> {b}" for a, b in edges if b not in graph.get(a, set())]
    assert not missing, f"the diagram shows imports the source does not have: {missing}"


def test_the_model_server_depends_on_neither_the_pipeline_nor_the_registry(
    graph: dict[str, set[str]],
) -> None:
    forbidden = {"pipeline", "tracking", "deployers", "stack", "kube", "monitoring", "cli"}
    assert not graph["serving"] & forbidden


def test_importing_the_config_loads_no_backend_and_no_heavy_sdk() -> None:
    loaded = reachable("ai_how.config", module_imports())
    ai_how = {unit_of(name) for name in loaded if name.startswith("ai_how.")}
    assert ai_how <= {"config", "errors", "kube"}, ai_how
    kube = {name for name in loaded if name.startswith("ai_how.kube.") and name.count(".") <= 3}
    assert {n for n in kube if not n.startswith("ai_how.kube.kubespray.releases")} <= {
        "ai_how.kube.kubespray"
    }
    assert not {name.split(".")[0] for name in loaded} & HEAVY_SDKS


def test_workloads_and_the_foundation_import_no_backend(graph: dict[str, set[str]]) -> None:
    for name in FOUNDATION:
        assert graph[name] <= FOUNDATION, name
    assert graph["workloads"] <= FOUNDATION


def test_only_the_docs_generator_imports_the_cli(graph: dict[str, set[str]]) -> None:
    assert {name for name, imports in graph.items() if "cli" in imports} == {"docs_gen"}


def test_package_cycles_are_the_documented_ones(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == KNOWN_CYCLES


def test_no_module_imports_itself_back_at_import_time() -> None:
    """Module-level imports only (what runs on import): the module graph has no cycle."""
    assert cycles(import_time_graph()) == []


def test_the_checks_fail_on_a_wrong_table() -> None:
    """The table parser reads what a stale row says (so the comparison above can fail)."""
    text = "<!-- import-graph:start -->\n| m | j | i |\n|---|---|---|\n| `serving` | x | `pipeline` |\n<!-- import-graph:end -->"
    assert documented_table(text) == {"serving": {"pipeline"}}
    assert documented_table(text)["serving"] != package_graph()["serving"]
