"""Shared by the console tests on real daemons: a private Xvfb, a fleet with one host over
the ``sshd`` fixture's ssh, domains with special graphics, and waits with generous bounds.

Fixtures are registered under short names; test modules import the ``*_fixture`` names.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.console.viewer import Console, Consoles
from catkeeper.backend.fleet import Fleet
from catkeeper.config import Config, HostConfig, SshSettings, Timing
from catkeeper.model import HostState
from tests.daemons import DomainFactory, SshServer, tcg_domain_xml, unique_domain_name
from tests.environment import require_tools

TIMING = Timing(connect_timeout=8, call_timeout=10, refresh_interval=0, backoff_initial=0.2)
TIGER = ("xtigervncviewer", "{host}::{port}")
VNC_PASSWORD = "Kp9vQz2m"  # libvirt allows 8 characters, as VNC uses
# The bound of every wait in the console tests. What they wait for takes a second or two on
# an idle machine; the bound only ends a hang, so a loaded 2-core machine still passes.
WAIT = 60.0


@pytest.fixture(name="xvfb")
def xvfb_fixture() -> Iterator[str]:
    """A private X server; yields its DISPLAY (":N"), ended by PID afterwards."""
    require_tools("Xvfb", "xtigervncviewer", root=False)
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        # -displayfd: the server picks a free display and writes its number when ready;
        # -noreset: it would otherwise rewrite it (to our closed pipe) after each reset.
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-nolisten",
            "tcp",
            "-noreset",
            "-screen",
            "0",
            "1024x768x24",
        ],
        pass_fds=(write_end,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        number = b""
        deadline = time.monotonic() + 15
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            chunk = os.read(read_end, 16)
            if not chunk:
                break
            number += chunk
        if not number.strip():
            pytest.fail("Xvfb did not report a display")
        yield f":{number.decode().strip()}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        os.close(read_end)


def ssh_config(sshd: SshServer, *, viewer: tuple[str, ...] | None = TIGER) -> Config:
    host = HostConfig(
        name="viassh",
        uri="qemu:///system",
        ssh=SshSettings(
            host="127.0.0.1",
            user="root",
            port=sshd.port,
            key=str(sshd.client_key),
            known_hosts=str(sshd.known_hosts),
        ),
    )
    return Config(hosts=(host,), source="<test>", timing=TIMING, viewer=viewer)


@pytest.fixture(name="fleet")
async def fleet_fixture(sshd: SshServer) -> AsyncIterator[Fleet]:
    f = Fleet(ssh_config(sshd))
    await f.start()
    assert await f.wait_settled(30)
    assert f.session("viassh").host.state is HostState.UP, f.session("viassh").host.error
    yield f
    await f.aclose()


def define(factory: DomainFactory, xml: str, *, start: bool = True) -> libvirt.virDomain:
    """Define (and start) a domain from our own XML; the factory removes it afterwards."""
    dom = factory.conn.defineXML(xml)
    factory.domains.append(dom)
    if start:
        dom.create()
    return dom


def with_graphics(graphics_xml: str) -> str:
    return tcg_domain_xml(unique_domain_name()).replace(
        "<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>", graphics_xml
    )


def vnc_clients(dom: libvirt.virDomain) -> int:
    """Clients qemu's VNC server has right now (HMP ``info vnc``)."""
    out = subprocess.run(
        ["virsh", "-c", "qemu:///system", "qemu-monitor-command", dom.name(), "--hmp", "info vnc"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    return out.count("Client:")


async def until(check: Callable[[], bool], timeout: float, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {what}")
        await asyncio.sleep(0.05)


async def process_argv(pid: int) -> list[bytes]:
    """The argv of process ``pid`` as the kernel shows it. Right after a spawn returns, the
    child can still be inside execve, past closing its close-on-exec fds (which is what the
    spawner waits for) but before the new image's arguments are set up: ``/proc/PID/cmdline``
    then reads empty, so wait for it to fill."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    await until(lambda: cmdline.read_bytes() != b"", WAIT, f"pid {pid} has its arguments")
    return cmdline.read_bytes().rstrip(b"\0").split(b"\0")


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def listening_on(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":
                found.add(addr)
    return found


async def open_console(consoles: Consoles, fleet: Fleet, dom: libvirt.virDomain) -> Console:
    session = fleet.session("viassh")
    vm = await session.refresh_domain(dom.UUIDString())
    assert vm is not None
    return await consoles.open(session, vm)
