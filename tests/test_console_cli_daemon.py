"""``catkeeper console`` (alias ``vnc``) against a real VNC server through a real ssh tunnel:
the installed script, as a user runs it (tests/cli_support.py), with a real viewer on a
private Xvfb (tests/console_support.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.cli_support import cli_env, end, start_catkeeper
from tests.console_support import (
    WAIT,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    process_argv,
    refused,
    until,
    vnc_clients,
    xvfb_fixture,  # noqa: F401 - the xvfb fixture
)
from tests.daemons import DomainFactory, SshServer, rfb_banner

pytestmark = pytest.mark.daemon


def ssh_config_file(path: Path, sshd: SshServer, *, viewer: str = "") -> Path:
    path.write_text(
        "hosts:\n"
        "  - name: viassh\n"
        "    ssh:\n"
        "      host: 127.0.0.1\n"
        "      user: root\n"
        f"      port: {sshd.port}\n"
        f"      key: {sshd.client_key}\n"
        f"      known_hosts: {sshd.known_hosts}\n" + viewer
    )
    return path


async def test_cli_print_holds_the_tunnel_until_interrupted(
    sshd: SshServer, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    dom = tcg_domain(start=True)
    cfg = ssh_config_file(tmp_path / "config.yaml", sshd)
    proc = await start_catkeeper(
        "--config", str(cfg), "vnc", f"viassh/{dom.name()}", "--print", cwd=tmp_path
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert first.startswith(b"endpoint 127.0.0.1:"), first
        port = int(first.split(b":")[-1])
        assert await asyncio.to_thread(rfb_banner, port) == b"RFB 003.008\n"
        rest = await asyncio.wait_for(proc.stdout.readuntil(b"Ctrl-C closes the tunnel.\n"), WAIT)
        assert b"ssh      ssh -N -L" in rest
        assert proc.returncode is None  # it holds the tunnel until told
        assert sshd.connections() == 1
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0
        assert await asyncio.to_thread(refused, port)
    finally:
        await end(proc)


async def test_cli_starts_the_viewer_through_the_tunnel_and_reports_its_failure(
    sshd: SshServer, tcg_domain: DomainFactory, tmp_path: Path, xvfb: str
) -> None:
    """Without --print and with a display: the configured viewer starts, connects through
    the ssh tunnel, and when it dies catkeeper says so (exit 1) and closes the tunnel."""
    dom = tcg_domain(start=True)
    cfg = ssh_config_file(
        tmp_path / "config.yaml", sshd, viewer='viewer: [xtigervncviewer, "{host}::{port}"]\n'
    )
    proc = await start_catkeeper(
        "--config",
        str(cfg),
        "vnc",
        f"viassh/{dom.name()}",
        cwd=tmp_path,
        env=cli_env(tmp_path / "state", display=xvfb),
    )
    try:
        assert proc.stderr is not None
        line = (await asyncio.wait_for(proc.stderr.readline(), WAIT)).decode()
        # catkeeper vnc: viewer pid N (named as typed) → 127.0.0.1:PORT (target)
        assert line.startswith("catkeeper vnc: viewer pid "), line
        pid = int(line.split()[4])
        port = int(line.split()[6].rsplit(":", 1)[1])
        argv = await process_argv(pid)
        assert argv == [b"xtigervncviewer", f"127.0.0.1::{port}".encode()]
        await until(lambda: vnc_clients(dom) == 1, WAIT, "qemu sees the viewer")
        assert proc.returncode is None  # it waits for the viewer
        os.kill(pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 1
        err = (await proc.stderr.read()).decode()
        assert "catkeeper vnc: viewer xtigervncviewer exited with -9" in err
        assert await asyncio.to_thread(refused, port)
        await until(lambda: vnc_clients(dom) == 0, WAIT, "qemu sees the client go")
    finally:
        await end(proc)
