"""IP discovery stays off the start-up path (the per-module import checks are in
test_import_hygiene.py): a scan without sweeps never imports scapy."""

from __future__ import annotations

from pathlib import Path

from tests.cli_support import cli_env, imported_top_levels, run_catkeeper


def test_scan_without_sweeps_never_imports_scapy(tmp_path: Path) -> None:
    """`catkeeper --demo scan --no-sweep --json` (the installed script): libvirt sources
    only, and no scapy in this process or any it starts (the probe is inherited)."""
    env = cli_env(tmp_path / "state", extra={"PYTHONPROFILEIMPORTTIME": "1"})
    r = run_catkeeper("--demo", "scan", "--no-sweep", "--json", cwd=tmp_path, env=env)
    assert r.code == 0, r.err
    assert any(vm["ips"] for vm in r.json()["vms"])
    imported = imported_top_levels(r.err)
    assert {"catkeeper", "libvirt"} <= imported  # the probe sees the run's imports
    assert "scapy" not in imported
