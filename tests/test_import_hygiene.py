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
    "catkeeper.filtering",
    "catkeeper.cli.headless",
    "catkeeper.cli",
    "catkeeper.cli.reserve",
    "catkeeper.cli.console",
    "catkeeper.cli.scan",
    "catkeeper.cli.vm",
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
    below = [*sorted((root / "backend").rglob("*.py")), root / "model.py", root / "config.py"]
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
