"""Consoles for real: qemu's VNC server, catkeeper's ssh tunnels, a real TigerVNC viewer on
a real Xvfb, and the serial console of a guest that writes to COM1.

The ssh host is this machine through the ``sshd`` fixture; the viewer runs on an Xvfb the
test starts on a free display (``-displayfd``) and ends by PID (tests/console_support.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import struct
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.console.plan import Route
from catkeeper.backend.console.serial import SerialConsole, SerialError
from catkeeper.backend.console.viewer import ConsoleError, Consoles
from catkeeper.backend.fleet import Fleet
from catkeeper.config import Config, HostConfig
from tests.console_support import (
    TIGER,
    TIMING,
    VNC_PASSWORD,
    WAIT,
    define,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    listening_on,
    open_console,
    process_argv,
    refused,
    until,
    vnc_clients,
    with_graphics,
    xvfb_fixture,  # noqa: F401 - the xvfb fixture
)
from tests.daemons import DomainFactory, SshServer, rfb_banner, tcg_domain_xml, unique_domain_name

pytestmark = pytest.mark.daemon


# ---------------------------------------------------------------------------------------
# A real viewer through the tunnel


async def test_real_viewer_connects_through_the_tunnel_which_closes_when_it_exits(
    fleet: Fleet, tcg_domain: DomainFactory, xvfb: str, sshd: SshServer
) -> None:
    dom = tcg_domain(start=True)
    consoles = Consoles(TIGER, env={**os.environ, "DISPLAY": xvfb})
    try:
        console = await open_console(consoles, fleet, dom)
        viewer, tunnel = console.viewer, console.tunnel
        assert viewer is not None and tunnel is not None
        assert console.plan.route is Route.TUNNEL
        assert viewer.argv == ["xtigervncviewer", f"127.0.0.1::{tunnel.local_port}"]
        assert listening_on(tunnel.local_port) == {"0100007F"}  # loopback only
        await until(lambda: vnc_clients(dom) == 1, WAIT, "qemu sees the viewer")
        assert tunnel.connections == 1
        await until(  # the viewer's own log: past the RFB handshake and ServerInit
            lambda: any("Using pixel format" in line for line in viewer.stderr_tail), WAIT
        )
        assert sshd.connections() == 1

        os.kill(viewer.pid, signal.SIGKILL)  # the user closes the viewer, rudely
        await asyncio.wait_for(console.wait(), WAIT)
        ssh = fleet.session("viassh").ssh
        assert ssh is not None
        assert tunnel.closed and tunnel not in ssh.tunnels
        assert await asyncio.to_thread(refused, tunnel.local_port)
        await until(lambda: vnc_clients(dom) == 0, WAIT, "qemu sees the client go")
    finally:
        await consoles.aclose()


async def test_two_viewers_share_the_one_ssh_connection_and_end_with_catkeeper(
    fleet: Fleet, tcg_domain: DomainFactory, xvfb: str, sshd: SshServer
) -> None:
    doms = [tcg_domain(start=True), tcg_domain(start=True)]
    consoles = Consoles(TIGER, env={**os.environ, "DISPLAY": xvfb})
    opened = [await open_console(consoles, fleet, d) for d in doms]
    for d in doms:

        def has_client(d: libvirt.virDomain = d) -> bool:
            return vnc_clients(d) == 1

        await until(has_client, WAIT, f"viewer on {d.name()}")
    ports = {c.tunnel.local_port for c in opened if c.tunnel}
    assert len(ports) == 2
    assert sshd.connections() == 1 and sshd.authentications() == 1
    pids = [c.viewer.pid for c in opened if c.viewer]
    await consoles.aclose()  # catkeeper quitting: viewers ended, tunnels closed
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    for port in ports:
        assert await asyncio.to_thread(refused, port)
    assert consoles.active == []


async def test_vnc_password_reaches_the_viewer_through_a_private_file_only(
    fleet: Fleet, tcg_domain: DomainFactory, xvfb: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dom = define(
        tcg_domain,
        with_graphics(
            f"<graphics type='vnc' autoport='yes' listen='127.0.0.1' passwd='{VNC_PASSWORD}'/>"
        ),
    )
    consoles = Consoles(TIGER, env={**os.environ, "DISPLAY": xvfb})
    try:
        console = await open_console(consoles, fleet, dom)
        viewer = console.viewer
        assert viewer is not None and console.plan.has_password is True
        assert viewer.argv[1] == "-passwd"
        pwfile = Path(viewer.argv[2])
        assert stat.S_IMODE(pwfile.stat().st_mode) == 0o600
        assert stat.S_IMODE(pwfile.parent.stat().st_mode) == 0o700
        argv = await process_argv(viewer.pid)
        assert argv[:2] == [b"xtigervncviewer", b"-passwd"]
        assert not any(VNC_PASSWORD[:8].encode() in arg for arg in argv)
        # Authenticated: qemu keeps the client and the viewer got past VncAuth.
        await until(
            lambda: any("Using pixel format" in line for line in viewer.stderr_tail),
            WAIT,
            "viewer authenticated",
        )
        assert any("VncAuth" in line for line in viewer.stderr_tail)
        assert vnc_clients(dom) == 1
        os.kill(viewer.pid, signal.SIGTERM)
        await asyncio.wait_for(console.wait(), WAIT)
        assert not pwfile.exists() and not pwfile.parent.exists()
    finally:
        await consoles.aclose()
    assert VNC_PASSWORD[:8] not in caplog.text
    assert VNC_PASSWORD[:8] not in repr(fleet.vms())  # the model only knows "has one"


async def test_without_a_display_the_tunnel_stays_and_info_says_how(
    fleet: Fleet, tcg_domain: DomainFactory, sshd: SshServer
) -> None:
    dom = tcg_domain(start=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    consoles = Consoles(TIGER, env=env)
    try:
        console = await open_console(consoles, fleet, dom)
        assert console.viewer is None and console.tunnel is not None
        info = console.info
        assert info.reason is not None and "no display" in info.reason
        assert (info.host, info.port) == console.tunnel.endpoint
        vnc = console.plan.port
        assert info.ssh_command == f"ssh -N -L {vnc}:127.0.0.1:{vnc} -p {sshd.port} root@127.0.0.1"
        assert await asyncio.to_thread(rfb_banner, info.port) == b"RFB 003.008\n"
    finally:
        await consoles.aclose()
    assert await asyncio.to_thread(refused, info.port)


async def test_shut_off_vm_gives_a_reason_not_a_tunnel(
    fleet: Fleet, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain()
    consoles = Consoles(TIGER, env={"DISPLAY": ":99"})
    with pytest.raises(ConsoleError, match="shutoff: start it"):
        await open_console(consoles, fleet, dom)
    ssh = fleet.session("viassh").ssh
    assert ssh is not None and ssh.tunnels == []


async def test_vnc_on_a_unix_socket_through_ssh_and_locally(
    fleet: Fleet, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    path = f"/run/catkeeper-tests/{unique_domain_name()}.vnc"
    dom = define(
        tcg_domain,
        with_graphics(f"<graphics type='vnc'><listen type='socket' socket='{path}'/></graphics>"),
    )
    try:
        env = {"PATH": os.environ.get("PATH", "")}  # no display: set up the endpoint only
        consoles = Consoles(TIGER, env=env)
        over_ssh = await open_console(consoles, fleet, dom)
        assert over_ssh.plan.route is Route.TUNNEL_SOCKET and over_ssh.plan.socket == path
        assert over_ssh.tunnel is not None
        assert await asyncio.to_thread(rfb_banner, over_ssh.tunnel.local_port) == b"RFB 003.008\n"
        assert over_ssh.info.ssh_command is not None and f":{path} " in over_ssh.info.ssh_command

        local = Fleet(
            Config(hosts=(HostConfig("here", "qemu:///system"),), source="<t>", timing=TIMING)
        )
        await local.start()
        try:
            assert await local.wait_settled(30)
            session = local.session("here")
            vm = await session.refresh_domain(dom.UUIDString())
            assert vm is not None
            relayed = await consoles.open(session, vm)
            assert relayed.plan.route is Route.LOCAL_SOCKET and relayed.tunnel is not None
            port = relayed.tunnel.local_port
            assert listening_on(port) == {"0100007F"}
            assert await asyncio.to_thread(rfb_banner, port) == b"RFB 003.008\n"
        finally:
            await consoles.aclose()
            await local.aclose()
        assert await asyncio.to_thread(refused, port)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


# ---------------------------------------------------------------------------------------
# Serial console


def serial_kernel(path: Path, message: bytes) -> Path:
    """A 100-byte multiboot "kernel" that writes ``message`` to COM1 forever.

    The guest must produce serial output without an OS image; qemu's -kernel loads a
    multiboot binary directly (flag bit 16: load addresses in the header, no ELF needed).
    32-bit code: for each byte: out 0x3f8; then a short delay loop; repeat.
    """
    base, magic, flags = 0x100000, 0x1BADB002, 0x00010000
    header = struct.pack(
        "<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, base, base, 0, 0, base + 32
    )
    code = (
        b"\xbe"
        + struct.pack("<I", base + 60)  # mov esi, message
        + b"\x8a\x06\x84\xc0\x74\x08"  # next: mov al,[esi]; test al,al; jz done
        + b"\x66\xba\xf8\x03\xee\x46\xeb\xf2"  # mov dx,0x3f8; out dx,al; inc esi; jmp next
        + b"\xb9\x00\x00\x00\x02\xe2\xfe"  # done: mov ecx,0x2000000; loop $
        + b"\xeb\xe4"  # jmp to the start
    )
    assert len(header + code) == 60
    path.write_bytes(header + code + message + b"\0")
    return path


async def test_serial_console_streams_guest_output_over_ssh(
    fleet: Fleet, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    kernel = serial_kernel(tmp_path / "serial.bin", b"catkeeper serial \xc3\xa9t\xc3\xa9\r\n")
    xml = (
        tcg_domain_xml(unique_domain_name())
        .replace("hvm</type>", f"hvm</type><kernel>{kernel}</kernel>")
        .replace("<memballoon", "<serial type='pty'/><console type='pty'/><memballoon")
    )
    dom = define(tcg_domain, xml)
    session = fleet.session("viassh")
    serial = await SerialConsole.open(session, dom.UUIDString())
    try:
        text = ""
        async with asyncio.timeout(WAIT):  # the guest writes the line every ~0.1 s
            async for chunk in serial:
                text += chunk
                if text.count("catkeeper serial été\r\n") >= 2:
                    break
        # A second reader is refused unless it forces its way in.
        with pytest.raises(SerialError, match="serial console"):
            await SerialConsole.open(session, dom.UUIDString())
        await asyncio.to_thread(dom.destroy)  # the guest stops: the stream ends
        async with asyncio.timeout(WAIT):
            rest = [c async for c in serial]
        assert serial.closed_reason is not None and "closed" in serial.closed_reason
        assert all(isinstance(c, str) for c in rest)
    finally:
        await serial.aclose()
