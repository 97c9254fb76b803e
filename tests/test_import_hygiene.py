"""The backend, the model, the config and the --json path never pull in textual or rich;
no module pulls in scapy (about 1.5 s) on import: sweeps import it when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    "catkeeper.backend.console",
    "catkeeper.backend.viewer",
    "catkeeper.backend.serial",
    "catkeeper.backend.ipbook",
    "catkeeper.backend.ipscan",
    "catkeeper.backend.ipscan.scheduler",
    "catkeeper.backend.ipscan.local_sweep",
    "catkeeper.backend.ipscan.remote",
    "catkeeper.backend.ipscan.libvirt_source",
    "catkeeper.backend.create",
    "catkeeper.backend.vmops",
    "catkeeper.backend.xmledit",
    "catkeeper.backend.snapshots",
    "catkeeper.filtering",
    "catkeeper.headless",
    "catkeeper.cli",
    "catkeeper.reserve_cli",
    "catkeeper.console_cli",
    "catkeeper.scan_cli",
    "catkeeper.vm_cli",
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


def test_json_run_loads_no_ui_modules() -> None:
    code = (
        "import sys, runpy, io, contextlib\n"
        "from catkeeper.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = main(['--demo', '--json', '--log', '/dev/null'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(rc, ','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", out.stdout


def test_no_ui_import_anywhere_below_the_line() -> None:
    """Also catches imports inside functions, which the module imports above never run."""
    import ast
    from pathlib import Path

    import catkeeper

    root = Path(catkeeper.__file__).parent
    below = [*sorted((root / "backend").rglob("*.py")), root / "model.py", root / "config.py"]
    offenders = []
    for path in below:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
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
