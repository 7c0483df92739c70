"""The import graph of ``unlearn_core``: one downward path, no cycle, two faces side by side.

The graph is read from the source (every ``import`` of an ``unlearn_core`` module, including
those inside functions, except ``if TYPE_CHECKING:`` blocks), so a lazy import that climbs back
up is caught as well as a top-level one. Packages whose modules form one room (methods, data,
models, cli, ui) are one node; the ``runs`` package spans layers, so its modules are separate
nodes. docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "unlearn_core"
#: Rooms whose modules are one node of the graph.
ROOMS = ("unlearn_core.methods", "unlearn_core.data", "unlearn_core.models", "unlearn_core.cli", "unlearn_core.ui")
#: Layer of each node, bottom (0) to top; a node may import only nodes of its own layer or below.
LAYERS = {
    0: ("unlearn_core", "unlearn_core.errors", "unlearn_core.files", "unlearn_core.device", "unlearn_core.labels",
        "unlearn_core.plots", "unlearn_core.advice"),
    1: ("unlearn_core.metrics", "unlearn_core.progress", "unlearn_core.data", "unlearn_core.runs",
        "unlearn_core.privacy", "unlearn_core.distributed"),
    # the registry stores model files, so it sits beside models (whose weights format checks them)
    2: ("unlearn_core.models", "unlearn_core.runs.registry", "unlearn_core.runs.requests", "unlearn_core.runs.result",
        "unlearn_core.runs.jobs", "unlearn_core.runs.recipe", "unlearn_core.runs.attach", "unlearn_core.map_selection"),
    3: ("unlearn_core.training", "unlearn_core.evaluate", "unlearn_core.embedding", "unlearn_core.assets",
        "unlearn_core.stop_target", "unlearn_core.cka", "unlearn_core.stop_target_cache", "unlearn_core.run_estimate"),
    4: ("unlearn_core.methods", "unlearn_core.compose"),
    5: ("unlearn_core.pipeline", "unlearn_core.bench_large", "unlearn_core.runs.artifacts", "unlearn_core.preflight",
        "unlearn_core.bench_reference", "unlearn_core.bench_scenarios", "unlearn_core.bench_data",
        "unlearn_core.bench_table", "unlearn_core.forgetting_checks"),
    6: ("unlearn_core.runs.workflows", "unlearn_core.report", "unlearn_core.bench"),
    7: ("unlearn_core.exports",),
    8: ("unlearn_core.cli", "unlearn_core.ui"),
    9: ("unlearn_core.__main__",),
}
LAYER_OF = {node: layer for layer, nodes in LAYERS.items() for node in nodes}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _node(module: str) -> str:
    for room in ROOMS:
        if module == room or module.startswith(room + "."):
            return room
    return module


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    """The ``unlearn_core`` modules ``name`` imports at run time (anywhere in the file)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: use absolute imports"
            base = node.module or ""
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {module for module in found if module in MODULES and module != name}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        node = _node(name)
        graph.setdefault(node, set()).update(_node(m) for m in _imports(name, path) if _node(m) != node)
    return graph


GRAPH = _graph()


def test_every_node_has_a_layer():
    assert sorted(set(GRAPH) - set(LAYER_OF)) == []


def test_the_import_graph_has_no_cycle():
    try:
        list(TopologicalSorter(GRAPH).static_order())
    except CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_no_edge_goes_up_a_layer():
    upward = [f"{node} (layer {LAYER_OF[node]}) imports {target} (layer {LAYER_OF[target]})"
              for node, targets in GRAPH.items() for target in targets
              if node in LAYER_OF and target in LAYER_OF and LAYER_OF[target] > LAYER_OF[node]]
    assert upward == []


def test_the_two_faces_stand_side_by_side():
    assert "unlearn_core.cli" not in GRAPH["unlearn_core.ui"]
    assert "unlearn_core.ui" not in GRAPH["unlearn_core.cli"]
    pages = "\n".join(p.read_text() for p in (ROOT / "pages").glob("*.py")) + (ROOT / "app.py").read_text()
    assert "unlearn_core.cli" not in pages


def test_the_run_store_does_not_know_the_report():
    for module in ("unlearn_core.runs.registry", "unlearn_core.runs.jobs", "unlearn_core.runs.workflows",
                   "unlearn_core.runs.artifacts", "unlearn_core.runs.result", "unlearn_core.runs.requests"):
        assert "unlearn_core.report" not in GRAPH[module], module


def test_streamlit_stays_in_the_dashboard():
    for name, path in MODULES.items():
        if _node(name) != "unlearn_core.ui":
            assert "import streamlit" not in path.read_text(), name
    assert "unlearn_core.ui" not in (ROOT / "scripts" / "make_example_report.sh").read_text()


_ISOLATED = """
import importlib, sys
failed = []
for module in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "unlearn_core" or m.startswith("unlearn_core.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(module)
    except Exception as error:
        failed.append(f"{module}: {type(error).__name__}: {error}")
print("\\n".join(failed))
"""


def test_each_module_imports_on_its_own():
    """Each module imports with no other ``unlearn_core`` module loaded before it (third-party
    libraries stay loaded between modules, to keep this quick)."""
    modules = sorted(m for m in MODULES if not m.endswith("__main__"))
    done = subprocess.run([sys.executable, "-c", _ISOLATED, *modules], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""


def test_home_draws_before_torch_is_imported():
    """The entry point and Home import neither torch nor torchvision (~3 s each in a new server)
    nor pandas (~0.7 s) at module level, so Home's text and its "Load the demo" button are on
    screen first; Home imports the built-in set list (which needs torch) only below the button.
    Read from the two scripts' top-level import statements, run in a fresh interpreter."""
    statements = []
    for script in ("app.py", "pages/0_home.py"):
        tree = ast.parse((ROOT / script).read_text())
        statements += [ast.unparse(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
    probe = "\n".join([*statements, "import sys",
                       "print(sorted(m for m in ('torch', 'torchvision', 'sklearn', 'openTSNE', 'pandas')"
                       " if m in sys.modules))"])
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    home = (ROOT / "pages" / "0_home.py").read_text()
    assert home.index('st.button("Load the demo"') < home.index("from unlearn_core.data.builtin import BUILTIN_SETS")
