"""The daemon fixtures work: real libvirtd + TCG guest + VNC, real sshd, the latency relay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import asyncssh
import libvirt
import pytest

from tests.daemons import (
    DelayRelay,
    DomainFactory,
    LibvirtDaemon,
    SshServer,
    ensure_libvirtd,
    rfb_banner,
    vnc_port,
)

daemon = pytest.mark.daemon  # the relay-only tests need no root and no daemon


@daemon
def test_libvirtd_defines_and_starts_tcg_domain_with_vnc(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(mac="52:54:00:c4:7e:01")
    assert dom.name() in {d.name() for d in tcg_domain.conn.listAllDomains()}
    assert "52:54:00:c4:7e:01" in dom.XMLDesc()

    t0 = time.monotonic()
    dom.create()
    started = time.monotonic() - t0

    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert rfb_banner(vnc_port(dom)) == b"RFB 003.008\n"
    assert started < 10, f"TCG domain took {started:.1f} s to start (expected ~0.5 s)"


@daemon
def test_second_session_reuses_daemon_and_leaves_it_running(libvirtd: LibvirtDaemon) -> None:
    # What a concurrent pytest session sees: the daemon answers, so nothing is started, and
    # leaving must not stop it while another session (ours) still uses it.
    other = ensure_libvirtd()
    assert not other.started
    assert other.owned == libvirtd.owned
    other.stop()
    with libvirtd.open() as conn:
        assert conn.getLibVersion() > 0


@daemon
def test_restart_keeps_domains_running(
    libvirtd: LibvirtDaemon, restart_libvirtd: Callable[[], float], tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    uuid, before = dom.UUIDString(), libvirtd.libvirtd

    restart_libvirtd()

    assert libvirtd.libvirtd != before
    with libvirtd.open() as conn:
        again = conn.lookupByUUIDString(uuid)
        # libvirtd reconnects to guests that kept running while it was down.
        assert again.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def _connect(
    sshd: SshServer, known_hosts: Path, port: int | None = None
) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    return asyncssh.connect(
        "127.0.0.1",
        port=port or sshd.port,
        known_hosts=str(known_hosts),
        client_keys=[str(sshd.client_key)],
        username="root",
        config=[],  # ignore the runner's ~/.ssh/config
    )


@daemon
async def test_sshd_runs_command(sshd: SshServer) -> None:
    async with _connect(sshd, sshd.known_hosts) as conn:
        result = await conn.run("echo hi", check=True)
    assert result.stdout == "hi\n"
    assert (sshd.connections(), sshd.authentications(), sshd.sessions()) == (1, 1, 1)


@daemon
async def test_sshd_refuses_unknown_host_key(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with _connect(sshd, empty):
            pass
    assert sshd.authentications() == 0


@asynccontextmanager
async def _echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def _round_trip(port: int, timeout: float = 5.0) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        t0 = time.monotonic()
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), timeout) == b"ping"
        return time.monotonic() - t0
    finally:
        writer.close()


async def test_relay_delays_each_direction(delay_relay: Callable[..., DelayRelay]) -> None:
    async with _echo_server() as port:
        relay = delay_relay(port, delay=0.1)
        # Held 0.1 s on the way out and 0.1 s on the way back (a sleep never ends early).
        assert await _round_trip(relay.port) >= 0.2


async def test_relay_blackhole_hangs_then_resumes(delay_relay: Callable[..., DelayRelay]) -> None:
    async with _echo_server() as port:
        relay = delay_relay(port, blackhole=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        try:
            writer.write(b"ping")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readexactly(4), 0.3)
            # Held, not dropped: a host that recovers carries on where it stopped.
            relay.blackhole = False
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
        finally:
            writer.close()


@daemon
async def test_ssh_through_delayed_relay(
    sshd: SshServer, delay_relay: Callable[..., DelayRelay], tmp_path: Path
) -> None:
    relay = delay_relay(sshd.port, delay=0.02)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_key_line}\n")
    t0 = time.monotonic()
    async with _connect(sshd, known_hosts, port=relay.port) as conn:
        assert (await conn.run("echo hi", check=True)).stdout == "hi\n"
    # Key exchange, auth and the command need several round trips of >= 40 ms each.
    assert time.monotonic() - t0 >= 0.12
    assert relay.accepted == 1
