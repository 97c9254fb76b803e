"""catkeeper's own ssh transport against a real sshd and the real libvirtd behind it.

The "remote" host is this machine seen through the ``sshd`` fixture on 127.0.0.1:PORT: its
libvirtd at /run/libvirt/libvirt-sock is reached only through asyncssh's forwarded unix
socket, VNC only through asyncssh local forwards. sshd's VERBOSE log counts connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.events import HostChanged
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.config import Config, HostConfig
from catkeeper.model import HostState
from tests.daemons import (
    DelayRelay,
    DomainFactory,
    SshServer,
    _descendants,
    rfb_banner,
    vnc_port,
)
from tests.environment import require_tools
from tests.ssh_helpers import TEST_DRIVER, TIMING, config, ssh_host, started, until

pytestmark = pytest.mark.daemon


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket LISTENing on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: TCP_LISTEN
                found.add(addr)
    return found


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
async def ssh_fleet(sshd: SshServer) -> AsyncIterator[Fleet]:
    fleet = await started(config(ssh_host(sshd)))
    yield fleet
    await fleet.aclose()


async def test_fleet_lists_a_domain_through_the_forwarded_libvirt_socket(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    started_at = time.monotonic()
    fleet = await started(config(ssh_host(sshd), HostConfig("local-test", TEST_DRIVER)))
    try:
        took = time.monotonic() - started_at
        session = fleet.session("viassh")
        assert session.host.state is HostState.UP, session.host.error
        assert fleet.session("local-test").host.state is HostState.UP
        vm = fleet.find(f"viassh/{dom.name()}")
        assert vm.state.value == "running"
        assert vm.graphics[0].type == "vnc" and vm.graphics[0].port == vnc_port(dom)
        # libvirt went through our forward: a qemu+unix URI on a private 0700 directory.
        forward = session._libvirt_forward
        assert forward is not None
        assert forward.uri == f"qemu+unix:///system?socket={forward.socket_path}"
        assert stat.S_IMODE(os.stat(forward.directory).st_mode) == 0o700
        assert sshd.connections() == 1 and sshd.authentications() == 1
        print(f"\nup over ssh in {took:.2f} s")
    finally:
        await fleet.aclose()
    # Closing the fleet removes the forward's socket and directory.
    assert not os.path.exists(forward.directory)


async def test_tunnel_carries_rfb_binds_loopback_only_and_closes(
    ssh_fleet: Fleet, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    ssh = ssh_fleet.session("viassh").ssh
    assert ssh is not None
    tunnel = await ssh.open_tunnel("127.0.0.1", vnc_port(dom))
    assert tunnel.local_host == "127.0.0.1" and tunnel.local_port > 0
    assert await asyncio.to_thread(rfb_banner, tunnel.local_port) == b"RFB 003.008\n"
    assert tunnel.connections == 1
    # Security: the listener exists on 127.0.0.1 only (0100007F in /proc/net/tcp).
    assert listening_addresses(tunnel.local_port) == {"0100007F"}
    tunnel.close()
    await until(lambda: not listening_addresses(tunnel.local_port), 2)
    assert await asyncio.to_thread(refused, tunnel.local_port)


async def test_one_ssh_connection_for_listing_tunnels_and_commands(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    doms = [tcg_domain(start=True), tcg_domain(start=True)]
    fleet = await started(config(ssh_host(sshd)))
    try:
        session = fleet.session("viassh")
        assert session.host.state is HostState.UP, session.host.error
        ssh = session.ssh
        assert ssh is not None
        tunnels = [await ssh.open_tunnel("127.0.0.1", vnc_port(d)) for d in doms]
        banners = await asyncio.gather(
            *(asyncio.to_thread(rfb_banner, t.local_port) for t in tunnels)
        )
        assert banners == [b"RFB 003.008\n"] * 2
        result = await ssh.run(["echo", "two words", "$HOME"])  # quoted word by word
        assert result.ok and result.stdout == "two words $HOME\n"
        await session.refresh_domain(doms[0].UUIDString())  # libvirt still answers too
        assert len(ssh.tunnels) == 2
        assert sshd.connections() == 1
        assert sshd.authentications() == 1
        assert sshd.sessions() == 1  # the command; forwards are channels, not sessions
        assert ssh.connections_opened == 1
    finally:
        await fleet.aclose()
    assert all(t.closed for t in tunnels)


async def test_readonly_session_uses_the_read_only_socket(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain()
    fleet = await started(config(ssh_host(sshd), readonly=True))
    try:
        session = fleet.session("viassh")
        assert session.host.state is HostState.UP, session.host.error
        assert dom.UUIDString() in session.vms
        with pytest.raises(libvirt.libvirtError, match=r"read only|read-only"):
            await session.call_domain(dom.UUIDString(), lambda d: d.setAutostart(1))
    finally:
        await fleet.aclose()


async def test_reconnects_after_the_connection_drops(
    sshd: SshServer,
    tmp_path: Path,
    tcg_domain: DomainFactory,
    delay_relay: Callable[..., DelayRelay],
) -> None:
    dom = tcg_domain()
    relay = delay_relay(sshd.port)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_key_line}\n")
    fleet = Fleet(config(ssh_host(sshd, port=relay.port, known_hosts=str(kh))))
    states: list[HostState] = []
    fleet.subscribe(lambda e: states.append(e.host.state) if isinstance(e, HostChanged) else None)
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        session: HostSession = fleet.session("viassh")
        assert session.host.state is HostState.UP, session.host.error
        states.clear()
        relay.close_connections()  # the network drops every connection
        # Reconnecting takes ~0.1 s here, so watch the events rather than poll the state.
        await until(lambda: HostState.UNREACHABLE in states, 15)
        await until(lambda: HostState.UP in states[states.index(HostState.UNREACHABLE) :], 15)
        assert dom.UUIDString() in session.vms and not session.vms[dom.UUIDString()].stale
        assert sshd.connections() == 2  # a fresh ssh connection, not a second one alongside
        assert session.ssh is not None and session.ssh.connections_opened == 2
    finally:
        await fleet.aclose()


def disconnect_clients_of(sshd: SshServer) -> int:
    """Have libvirtd drop every client that came in through this sshd (virt-admin), the
    way a remote daemon drops a connection; returns how many it dropped."""
    assert sshd.proc is not None
    ours = {sshd.proc.pid, *_descendants(sshd.proc.pid)}
    listing = subprocess.run(
        ["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True, text=True, check=True
    ).stdout
    dropped = 0
    for line in listing.splitlines()[2:]:
        client = line.split()[0] if line.split() else ""
        if not client.isdigit():
            continue
        info = subprocess.run(
            ["virt-admin", "client-info", "libvirtd", client], capture_output=True, text=True
        ).stdout
        pid = next(
            (
                ln.split(":")[1].strip()
                for ln in info.splitlines()
                if ln.startswith("unix_process_id")
            ),
            "",
        )
        if pid.isdigit() and int(pid) in ours:
            subprocess.run(
                ["virt-admin", "client-disconnect", "libvirtd", client],
                check=True,
                capture_output=True,
            )
            dropped += 1
    return dropped


async def test_libvirt_drop_reuses_the_ssh_connection_and_keeps_tunnels(
    sshd: SshServer, tcg_domain: DomainFactory
) -> None:
    require_tools("virt-admin")
    dom = tcg_domain(start=True)
    fleet = Fleet(config(ssh_host(sshd)))
    states: list[HostState] = []
    fleet.subscribe(lambda e: states.append(e.host.state) if isinstance(e, HostChanged) else None)
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        session = fleet.session("viassh")
        assert session.ssh is not None
        tunnel = await session.ssh.open_tunnel("127.0.0.1", vnc_port(dom))
        states.clear()
        assert await asyncio.to_thread(disconnect_clients_of, sshd) == 1
        # Other tests' domains come and go on this daemon, so UP events may come first.
        await until(lambda: HostState.UNREACHABLE in states, 30)
        await until(lambda: HostState.UP in states[states.index(HostState.UNREACHABLE) :], 30)
        # Same ssh connection, same authentication, and the VNC tunnel never noticed.
        assert sshd.connections() == 1 and sshd.authentications() == 1
        assert session.ssh.connections_opened == 1
        assert not tunnel.closed
        assert await asyncio.to_thread(rfb_banner, tunnel.local_port) == b"RFB 003.008\n"
    finally:
        await fleet.aclose()


def _threads_and_sockets() -> tuple[int, int]:
    """Threads (but asyncio's default executor's: a pool of at most cpu + 4 that asyncssh's
    address lookups share and that never shrinks, grown by whichever lookups overlapped)
    and sockets of this process."""
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    pool = sum(t.name.startswith("asyncio_") for t in threading.enumerate())
    return len(os.listdir("/proc/self/task")) - pool, sockets


async def test_cut_mid_session_goes_unreachable_and_back_leaving_nothing_behind(
    sshd: SshServer,
    tmp_path: Path,
    tcg_domain: DomainFactory,
    delay_relay: Callable[..., DelayRelay],
) -> None:
    """The link goes silent (every packet dropped, nothing reset), keepalives notice, the
    host is retried while silent, and comes back when the link heals: with the same threads
    and sockets as before the cut, not one more per retry."""
    dom = tcg_domain()
    relay = delay_relay(sshd.port)
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_key_line}\n")
    timing = dataclasses.replace(
        TIMING,
        connect_timeout=2,
        keepalive_interval=1,
        keepalive_count=2,
        backoff_initial=0.2,
        backoff_max=0.5,
    )
    cfg = Config(
        hosts=(ssh_host(sshd, port=relay.port, known_hosts=str(kh)),),
        source="<test>",
        timing=timing,
    )
    fleet = Fleet(cfg)
    states: list[HostState] = []
    fleet.subscribe(lambda e: states.append(e.host.state) if isinstance(e, HostChanged) else None)
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        session = fleet.session("viassh")
        assert session.host.state is HostState.UP, session.host.error
        await asyncio.sleep(1.5)  # let the cold load's spare worker threads end
        threads, sockets = _threads_and_sockets()

        relay.blackhole = True  # a silent link: accepted, never forwarded, never reset
        states.clear()
        await until(lambda: HostState.UNREACHABLE in states, 30)
        # Retried while the link is silent: several attempts fail one after another.
        await until(lambda: states.count(HostState.UNREACHABLE) >= 3, 60)
        assert dom.UUIDString() in session.vms and session.vms[dom.UUIDString()].stale

        relay.blackhole = False
        await until(lambda: session.host.state is HostState.UP, 60)
        assert not session.vms[dom.UUIDString()].stale
        assert session.ssh is not None and session.ssh.connections_opened == 2

        # Connections held while silent drain once the link heals; then nothing is left
        # over from the attempts made meanwhile.
        def back_to_before() -> bool:
            now_threads, now_sockets = _threads_and_sockets()
            return now_threads <= threads and now_sockets <= sockets

        try:
            await until(back_to_before, 30)
        except AssertionError:
            names = sorted(t.name for t in threading.enumerate())
            raise AssertionError(
                f"threads, sockets: {threads}, {sockets} before; {_threads_and_sockets()} now "
                f"(threads: {names})"
            ) from None
    finally:
        await fleet.aclose()
