"""IP discovery stays off the start-up path: no scapy (~1.5 s) and no UI modules on import."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "catkeeper.backend.ipbook",
    "catkeeper.backend.ipscan.scheduler",
    "catkeeper.backend.ipscan.local_sweep",
    "catkeeper.backend.ipscan.remote",
    "catkeeper.backend.ipscan.libvirt_source",
    "catkeeper.scan_cli",
]


@pytest.mark.parametrize("module", MODULES)
def test_import_loads_neither_scapy_nor_ui(module: str) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('scapy', 'textual', 'rich')); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_scan_without_sweeps_never_imports_scapy() -> None:
    """`catkeeper scan --no-sweep` on the demo fleet: libvirt sources only, no scapy."""
    code = (
        "import sys, io, contextlib\n"
        "from catkeeper.scan_cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--demo', 'scan', '--no-sweep', '--json'])\n"
        "scapy = any(m.split('.')[0] == 'scapy' for m in sys.modules)\n"
        "print(rc, scapy, '\"ips\"' in out.getvalue())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "True"], out.stderr
