"""Consoles for real: qemu's VNC server, catkeeper's ssh tunnels, a real TigerVNC viewer on
a real Xvfb, the serial console of a guest that writes to COM1, and ``catkeeper vnc``.

The ssh host is this machine through the ``sshd`` fixture; the viewer runs on an Xvfb the
test starts on a free display (``-displayfd``) and ends by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.console.plan import Route
from catkeeper.backend.console.serial import SerialConsole, SerialError
from catkeeper.backend.console.viewer import Console, ConsoleError, Consoles
from catkeeper.backend.fleet import Fleet
from catkeeper.config import Config, HostConfig, SshSettings, Timing
from catkeeper.model import HostState
from tests.cli_support import cli_env, end, start_catkeeper
from tests.daemons import DomainFactory, SshServer, rfb_banner, tcg_domain_xml, unique_domain_name
from tests.environment import require_tools

pytestmark = pytest.mark.daemon

TIMING = Timing(connect_timeout=8, call_timeout=10, refresh_interval=0, backoff_initial=0.2)
TIGER = ("xtigervncviewer", "{host}::{port}")
VNC_PASSWORD = "Kp9vQz2m"  # libvirt allows 8 characters, as VNC uses
# The bound of every wait below. What it waits for takes a second or two on an idle machine;
# the bound is there only to end a hang, so a loaded 2-core machine still passes.
WAIT = 60.0


# ---------------------------------------------------------------------------------------
# Fixtures: Xvfb, an ssh fleet, special domains


@pytest.fixture
def xvfb() -> Iterator[str]:
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


@pytest.fixture
async def fleet(sshd: SshServer) -> AsyncIterator[Fleet]:
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
        cmdline = Path(f"/proc/{viewer.pid}/cmdline").read_bytes()
        assert VNC_PASSWORD[:8].encode() not in cmdline
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


# ---------------------------------------------------------------------------------------
# ``catkeeper vnc``: the installed script, as a user runs it (tests/cli_support.py)


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
        # catkeeper vnc: viewer pid N → 127.0.0.1:PORT (target)
        assert line.startswith("catkeeper vnc: viewer pid "), line
        pid = int(line.split()[4])
        port = int(line.split()[6].rsplit(":", 1)[1])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[:2] == [b"xtigervncviewer", f"127.0.0.1::{port}".encode()]
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
