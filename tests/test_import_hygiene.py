"""The backend, the model, the config and the --json path never pull in textual or rich;
no module pulls in scapy (about 1.5 s) on import: sweeps import it when they run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_support import cli_env, imported_top_levels, run_catkeeper

MODULES = [
    "catkeeper.model",
    "catkeeper.config",
    "catkeeper.backend.fleet",
    "catkeeper.backend.host",
    "catkeeper.backend.inventory",
    "catkeeper.backend.eventloop",
    "catkeeper.backend.actions",
    "catkeeper.backend.reservations",
    "catkeeper.backend.ssh",
    "catkeeper.backend.console.plan",
    "catkeeper.backend.console.viewer",
    "catkeeper.backend.console.serial",
    "catkeeper.backend.ipscan.book",
    "catkeeper.backend.ipscan",
    "catkeeper.backend.ipscan.scheduler",
    "catkeeper.backend.ipscan.local_sweep",
    "catkeeper.backend.ipscan.remote",
    "catkeeper.backend.ipscan.libvirt_source",
    "catkeeper.backend.vm.create",
    "catkeeper.backend.vm.vmops",
    "catkeeper.backend.vm.xmledit",
    "catkeeper.backend.vm.snapshots",
    "catkeeper.backend.capacity",
    "catkeeper.filtering",
    "catkeeper.cli.headless",
    "catkeeper.cli",
    "catkeeper.cli.reserve",
    "catkeeper.cli.console",
    "catkeeper.cli.scan",
    "catkeeper.cli.vm",
    "catkeeper.cli.hosts",
]


@pytest.mark.parametrize("module", MODULES)
def test_no_ui_modules(module: str) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'scapy')); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_the_tui_leaves_heavy_occasional_modules_unloaded() -> None:
    """What every open TUI holds: scapy (sweeps run in their own process) and pycdlib (only
    creating a VM with cloud-init needs it; 2-5 MB resident) stay out until used."""
    code = (
        "import sys, catkeeper.app; "
        "print(','.join(sorted(m for m in ('scapy', 'pycdlib') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"catkeeper.app imports {out.stdout.strip()}"


def test_json_run_loads_no_ui_modules(tmp_path: Path) -> None:
    """``catkeeper --demo --json`` (the installed script) never imports textual or rich."""
    env = cli_env(tmp_path / "state", extra={"PYTHONPROFILEIMPORTTIME": "1"})
    r = run_catkeeper("--demo", "--json", "--log", "/dev/null", cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert r.json()["vms"]
    imported = imported_top_levels(r.err)
    assert {"catkeeper", "libvirt"} <= imported  # the probe sees the run's imports
    assert not imported & {"textual", "rich"}


def test_no_ui_import_anywhere_below_the_line() -> None:
    """Also catches imports inside functions, which the module imports above never run."""
    import catkeeper

    root = Path(catkeeper.__file__).parent
    config = sorted((root / "config").rglob("*.py")) or [root / "config.py"]
    below = [*sorted((root / "backend").rglob("*.py")), root / "model.py", *config]
    offenders = []
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(root)}:{node.lineno} {name}"
                for name in names
                if name.split(".")[0] in ("textual", "rich")
            ]
    assert offenders == []


# ---- the house's shape: no circle, arrows only downwards, small modules ---------------------

ROOT = Path(__file__).resolve().parent.parent / "catkeeper"
# Layers, top first (design.md): a module may import only from its own layer or below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("catkeeper.cli", "catkeeper.__main__"),
    ("catkeeper.app",),
    ("catkeeper.tui",),
    ("catkeeper.screens",),
    ("catkeeper.widgets",),
    ("catkeeper.commands",),
    (
        "catkeeper.backend",
        "catkeeper.filtering",
        "catkeeper.demo",
        "catkeeper.looplag",
        "catkeeper.heap",
        "catkeeper.logsetup",
    ),
    ("catkeeper.model", "catkeeper.config"),
    ("catkeeper.values",),
    ("catkeeper",),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """The catkeeper modules ``tree`` imports, at the top or in functions; what is only
    imported for type checking (``if TYPE_CHECKING:``) is not an import at run time."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined by the module itself
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {
        name: _imports(ast.parse(path.read_text(), str(path)), modules) - {name}
        for name, path in paths.items()
    }


def _layer(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if module in prefixes or any(module.startswith(p + ".") for p in prefixes if "." in p):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_the_graph_sees_imports() -> None:
    """The checks below are only as good as the graph: it must see known arrows."""
    graph = _graph()
    assert "catkeeper.tui.dispatch" in graph["catkeeper.app"]
    assert "catkeeper.model" in graph["catkeeper.widgets.vm_table"]
    assert "catkeeper.backend.actions.simple" in graph["catkeeper.backend.actions"]


def test_no_import_circle() -> None:
    graph = _graph()
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert circles == [], "\n".join(" → ".join(c) for c in circles)


def test_arrows_point_down() -> None:
    graph = _graph()
    upward = [
        f"{module} → {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) < _layer(module)
    ]
    assert upward == []


def test_widgets_import_only_the_model() -> None:
    graph = _graph()
    extra = [
        f"{module} → {target}"
        for module, targets in sorted(graph.items())
        if module.startswith("catkeeper.widgets")
        for target in sorted(targets)
        if not target.startswith("catkeeper.widgets") and target != "catkeeper.model"
    ]
    assert extra == []


def test_pure_layers_import_no_ui() -> None:
    """backend, model, config and the command table never import textual or rich."""
    pure = [
        p for p in ROOT.rglob("*.py") if _layer(_module_name(p)) >= _layer("catkeeper.commands")
    ]
    offenders = []
    for path in pure:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}:{node.lineno} {n}"
                for n in names
                if n.split(".")[0] in ("textual", "rich")
            ]
    assert offenders == []


def test_module_sizes() -> None:
    """app.py is wiring (≤ 300 lines); no module is over 400 (``wc -l``)."""
    lines = {p: len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert lines[ROOT / "app.py"] <= 300
    big = sorted(f"{p.relative_to(ROOT)}: {n}" for p, n in lines.items() if n > 400)
    assert big == []
