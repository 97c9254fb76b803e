"""IP discovery stays off the start-up path (the per-module import checks are in
test_import_hygiene.py): a scan without sweeps never imports scapy."""

from __future__ import annotations

import subprocess
import sys


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
