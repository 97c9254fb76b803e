"""Remote sweeps over a real asyncssh connection to a real sshd inside a network namespace.

The "host" namespace of tests/netns.py gets an uplink veth to the root namespace (a /30 of
198.19.0.0/16 that only our veth pair uses) and an sshd on its end. catkeeper connects from
the root namespace, runs the sweep command there, and reads the host's neighbour table: the
guests on the host's bridge, as on a real libvirt host. No packet goes anywhere else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.ipscan.remote import parse_output, remote_sweep, sweep_command
from catkeeper.backend.ipscan.results import NEIGH
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.backend.ssh import SshTransport
from catkeeper.config import Config, HostConfig, SshSettings, Timing
from tests.daemons import DelayRelay
from tests.netns import (
    ANSWERS,
    NO_ICMP,
    SILENT,
    NetnsSshd,
    Topology,
    node_xml,
    reap_stale,
    require_netns,
)

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module", autouse=True)
def _reap() -> None:
    require_netns()
    reap_stale()


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[Topology, NetnsSshd]]:
    topo = Topology()
    try:
        topo.build()
        sshd = topo.start_sshd(tmp_path)
        yield topo, sshd
    finally:
        topo.destroy()


async def connect(
    sshd: NetnsSshd, port: int | None = None, host: str | None = None
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        host or sshd.listen,
        port=port or sshd.port,
        username="root",
        client_keys=[str(sshd.client_key)],
        known_hosts=str(sshd.known_hosts) if host is None else None,
        connect_timeout=10,
    )


@pytest.fixture
async def conn(
    remote: tuple[Topology, NetnsSshd],
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    c = await connect(remote[1])
    try:
        yield c
    finally:
        c.close()
        await c.wait_closed()


async def test_remote_sweep_finds_the_guests_on_the_hosts_segment(
    remote: tuple[Topology, NetnsSshd], conn: asyncssh.SSHClientConnection
) -> None:
    topo, _ = remote
    (r,) = await remote_sweep(conn, "remote1", [topo.subnet])
    assert r.ok, r.error
    assert (r.host, r.source, r.scope, r.privileged) == ("remote1", NEIGH, topo.subnet, False)
    assert {s.ip: s.mac for s in r.sightings} == topo.answering(ANSWERS, NO_ICMP)
    assert "udp-bash" in (r.note or "") and "ip-json" in (r.note or "")


async def test_remote_passive_read_without_subnets(
    remote: tuple[Topology, NetnsSshd], conn: asyncssh.SSHClientConnection
) -> None:
    topo, _ = remote
    await remote_sweep(conn, "remote1", [topo.subnet])  # fills the host's table
    (r,) = await remote_sweep(conn, "remote1", [])
    assert r.ok and r.scope == "*" and "passive" in (r.note or "")
    seen = {s.ip for s in r.sightings}
    assert set(topo.answering(ANSWERS, NO_ICMP)) <= seen
    silent = next(g for g in topo.guests if g.behaviour == SILENT)
    assert silent.ip not in seen


@pytest.mark.parametrize(
    ("tools", "method", "table"),
    [
        (("sh", "ip", "sleep", "cat", "ping"), "ping", "ip-json"),
        (("sh", "ip", "sleep", "cat", "python3", "ping"), "udp-python3", "ip-json"),
        (("sh", "sleep", "cat", "bash"), "udp-bash", "proc-arp"),
    ],
)
async def test_remote_script_falls_back_to_what_the_host_has(
    remote: tuple[Topology, NetnsSshd],
    conn: asyncssh.SSHClientConnection,
    tmp_path: Path,
    tools: tuple[str, ...],
    method: str,
    table: str,
) -> None:
    """The same script on the same connection, on a PATH holding only ``tools``."""
    topo, _ = remote
    topo.flush_neighbours()
    bin_dir = tmp_path / f"bin-{method}"
    bin_dir.mkdir()
    for tool in tools:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")  # the system's own
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    net = ipaddress.ip_network(topo.subnet)
    addresses = [str(a) for a in net.hosts()]
    command = f"env PATH={bin_dir} " + sweep_command(addresses)
    done = await conn.run(command, check=False, timeout=20)
    got_method, entries, got_table = parse_output(str(done.stdout))
    assert (got_method, got_table) == (method, table), done.stderr
    # (The table also holds the uplink's root side: the ssh client. Only the subnet counts.)
    on_segment = {e.ip: e.mac for e in entries if e.usable and ipaddress.ip_address(e.ip) in net}
    assert on_segment == topo.answering(ANSWERS, NO_ICMP)


async def test_bad_subnets_never_reach_the_shell(
    remote: tuple[Topology, NetnsSshd], conn: asyncssh.SSHClientConnection
) -> None:
    _, sshd = remote
    before = sshd.log_path.read_text().count("Starting session")
    results = await remote_sweep(conn, "remote1", ["198.18.5.0/24; touch /tmp/pwned", "10.0.0.0/8"])
    assert all(not r.ok for r in results)
    assert "not a CIDR" in (results[0].error or "")
    assert sshd.log_path.read_text().count("Starting session") == before  # nothing was run


def remote_config(topo: Topology, tmp_path: Path, names: list[str]) -> Config:
    """Test-driver hosts whose VMs are the topology's guests. No ssh settings in the config
    (a session would carry libvirt itself over them); the tests hand the scanner an ssh
    connection through ``ssh_for`` instead, as ``session.ssh`` does in production. Every
    ``ssh_for`` here returns a connection or raises, so the scanner never falls back to a
    local sweep from the root namespace."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    node = tmp_path / "remote.xml"
    node.write_text(node_xml(topo.guests))
    hosts = tuple(
        HostConfig(name=name, uri=f"test://{node}", subnets=(topo.subnet,)) for name in names
    )
    return Config(hosts=hosts, source="<test>", timing=Timing(refresh_interval=0))


def transport(sshd: NetnsSshd, known_hosts: Path | None = None) -> SshTransport:
    """catkeeper's own shared-connection transport (backend/ssh.py) to the namespace's sshd."""
    settings = SshSettings(
        host=sshd.listen,
        user="root",
        key=str(sshd.client_key),
        known_hosts=str(known_hosts or sshd.known_hosts),
    )
    return SshTransport("remote1", settings, connect_timeout=5, config_paths=[])


async def test_scanner_puts_remote_sightings_on_vm_rows(
    remote: tuple[Topology, NetnsSshd], tmp_path: Path
) -> None:
    topo, sshd = remote
    fleet = Fleet(remote_config(topo, tmp_path, ["remote1"]))
    ssh = transport(sshd)

    async def ssh_for(_session: HostSession) -> asyncssh.SSHClientConnection:
        return await ssh.connect()

    scanner = IpScanner(fleet, ssh_for=ssh_for, libvirt_interval=0)
    scanner.attach()
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        scan = await scanner.scan_host("remote1", libvirt=False)
        assert scan.error is None
        for g in topo.guests:
            vm = fleet.find(f"remote1/{g.name}")
            got = [(s.ip, s.source) for s in vm.ips]
            assert got == ([] if g.behaviour == SILENT else [(g.ip, NEIGH)]), g
        # The same shared connection serves the next scan: one authentication in all.
        await scanner.scan_host("remote1", libvirt=False)
        assert ssh.connections_opened == 1
        assert sshd.log_path.read_text().count("Accepted publickey") == 1
    finally:
        await scanner.aclose()
        await ssh.aclose()
        await fleet.aclose()


async def test_failed_ssh_connection_is_a_result_not_a_local_sweep(
    remote: tuple[Topology, NetnsSshd], tmp_path: Path
) -> None:
    topo, sshd = remote
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    ssh = transport(sshd, known_hosts=empty)  # the host key is unknown: refused

    async def ssh_for(_session: HostSession) -> asyncssh.SSHClientConnection:
        return await ssh.connect()

    fleet = Fleet(remote_config(topo, tmp_path, ["remote1"]))
    scanner = IpScanner(fleet, ssh_for=ssh_for, libvirt_interval=0)
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        scan = await scanner.scan_host("remote1", libvirt=False)
        (r,) = scan.results
        assert not r.ok and "no ssh connection" in (r.error or "")
        assert r.sightings == () and r.privileged is None  # nothing was swept from here
    finally:
        await ssh.aclose()
        await fleet.aclose()


async def test_a_hung_host_delays_no_other_host(
    remote: tuple[Topology, NetnsSshd], conn: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    """One host's ssh hangs (a relay that accepts and forwards nothing): the other host's
    sweep finishes in its own time and the hung one ends at the timeout, as an error."""
    topo, sshd = remote
    fleet = Fleet(remote_config(topo, tmp_path, ["fast", "hung"]))
    relay = DelayRelay(sshd.port, target_host=sshd.listen, blackhole=True).start()

    async def ssh_for(session: HostSession) -> asyncssh.SSHClientConnection:
        if session.name == "fast":
            return conn
        return await connect(sshd, port=relay.port, host="127.0.0.1")

    scanner = IpScanner(fleet, ssh_for=ssh_for, host_timeout=4.0, libvirt_interval=0)
    scanner.attach()
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        t0 = time.perf_counter()
        fast, hung = await scanner.scan(["fast", "hung"], libvirt=False)
        total = time.perf_counter() - t0
        # The fast host finished in its own time, before the hung one's timeout ended it.
        assert fast.error is None and fast.elapsed_s < hung.elapsed_s
        assert fast.results and all(r.ok for r in fast.results)
        assert hung.error is not None and "timed out" in hung.error
        assert total < fast.elapsed_s + hung.elapsed_s  # side by side, not one after another
    finally:
        relay.stop()
        await scanner.aclose()
        await fleet.aclose()


async def test_background_sweeps_and_scan_vm_on_demand(
    remote: tuple[Topology, NetnsSshd], conn: asyncssh.SSHClientConnection, tmp_path: Path
) -> None:
    topo, _ = remote
    fleet = Fleet(remote_config(topo, tmp_path, ["remote1"]))
    sweeps = 0

    async def ssh_for(_session: HostSession) -> asyncssh.SSHClientConnection:
        nonlocal sweeps
        sweeps += 1
        return conn

    answering = next(g for g in topo.guests if g.behaviour == ANSWERS)
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        # On demand, for one VM (the TUI's `i`): its libvirt sources (the test driver: its
        # lease, asked per VM; no agent channel), then the host's sweep.
        scanner = IpScanner(fleet, ssh_for=ssh_for, libvirt_interval=0)
        scanner.attach()
        scan = await scanner.scan_vm(f"remote1/{answering.name}", sweep=True)
        assert {r.source for r in scan.results} == {"lease", NEIGH}
        got = {(s.ip, s.source) for s in fleet.find(f"remote1/{answering.name}").ips}
        assert (answering.ip, NEIGH) in got
        assert sweeps == 1
        await scanner.aclose()

        # In the background, every sweep_interval seconds, without anyone asking.
        fleet2 = Fleet(remote_config(topo, tmp_path / "again", ["remote2"]))
        await fleet2.start()
        await fleet2.wait_settled(10)
        background = IpScanner(fleet2, ssh_for=ssh_for, libvirt_interval=0, sweep_interval=0.5)
        background.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sweeps < 3:
                await asyncio.sleep(0.1)
            assert sweeps >= 3
            vm = fleet2.find(f"remote2/{answering.name}")
            assert [(s.ip, s.source) for s in vm.ips] == [(answering.ip, NEIGH)]
        finally:
            await background.aclose()
            await fleet2.aclose()
    finally:
        await fleet.aclose()
