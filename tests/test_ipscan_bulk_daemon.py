"""Bulk IP sources on real parts: a real DHCP lease, a real neighbour table over real ssh.

* ``lease``: a transient libvirt network on the real libvirtd (dnsmasq), a DHCP client in a
  namespace of ours with a defined VM's MAC takes a real lease (tests/dhcp_net.py), and
  catkeeper shows that address with source ``lease``, read with one
  ``virNetworkGetDHCPLeases`` per active network and no per-VM call. The calls are counted
  on the wire, in a relay in front of libvirtd's socket (tests/libvirt_wire.py), not taken
  from catkeeper's own report (which is checked against the wire).
* ``neigh``: an ssh host (sshd in a namespace, tests/netns.py) whose neighbour table knows
  the guests on its bridge; real VMs carry those guests' MACs; one remote command puts
  each address on the right VM, and no per-VM ``interfaceAddresses`` is made.
* The guest agent is never asked for a VM whose agent channel is not connected (a real
  qemu with the channel and no guest OS: ``state='disconnected'``).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend.fleet import Fleet
from catkeeper.backend.inventory import parse_domain_xml
from catkeeper.backend.ipscan.bulk import DOMAINS, summarize_calls
from catkeeper.backend.ipscan.results import LEASE, NEIGH
from catkeeper.backend.ipscan.scheduler import IpScanner
from catkeeper.config import Config, HostConfig, SshSettings, Timing
from catkeeper.model import VmState
from tests.cli_support import run_catkeeper, write_config
from tests.daemons import DomainFactory, LibvirtDaemon, unique_domain_name
from tests.dhcp_net import (
    LeaseNetwork,
    network_nic_domain_xml,
    reap_stale_networks,
    require_dhcp_tools,
)
from tests.libvirt_wire import (
    PROC_DOMAIN_INTERFACE_ADDRESSES,
    PROC_LIST_ALL_DOMAINS,
    PROC_LIST_ALL_NETWORKS,
    PROC_LOOKUP_BY_UUID,
    PROC_NETWORK_GET_DHCP_LEASES,
    RpcCounter,
)
from tests.netns import ANSWERS, SILENT, Topology, reap_stale, require_netns, run

pytestmark = pytest.mark.daemon

SRC_AGENT = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT


def random_mac() -> str:
    return "52:54:00:" + ":".join(secrets.token_hex(1) for _ in range(3))


@pytest.fixture
def rpc(libvirtd: LibvirtDaemon, tmp_path: Path) -> Iterator[RpcCounter]:
    with RpcCounter(tmp_path / "libvirt-sock") as counter:
        yield counter


@pytest.fixture
def lease_net(libvirtd: LibvirtDaemon) -> Iterator[LeaseNetwork]:
    require_dhcp_tools()
    require_netns()
    reap_stale()
    with contextlib.closing(libvirtd.open()) as conn:
        reap_stale_networks(conn)
        net = LeaseNetwork(conn)
        try:
            yield net.start()
        finally:
            net.destroy()


def active_networks(libvirtd: LibvirtDaemon) -> list[str]:
    with contextlib.closing(libvirtd.open()) as conn:
        return [n.name() for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE)]


def define_on(
    factory: DomainFactory, network: str, mac: str, *, start: bool, agent_channel: bool = False
) -> libvirt.virDomain:
    xml = network_nic_domain_xml(unique_domain_name(), network, mac, agent_channel=agent_channel)
    dom = factory.conn.defineXML(xml)
    factory.domains.append(dom)  # destroyed and undefined with the factory's own
    if start:
        dom.create()
    return dom


def test_rpc_counter_names_the_procedures(rpc: RpcCounter, tcg_domain: DomainFactory) -> None:
    """The procedure numbers the tests count are the calls they stand for."""
    dom = tcg_domain(start=True)
    conn = libvirt.open(rpc.uri)
    try:
        cases = [
            (PROC_LIST_ALL_NETWORKS, lambda: conn.listAllNetworks(0)),
            (PROC_LIST_ALL_DOMAINS, lambda: conn.listAllDomains(0)),
            (PROC_LOOKUP_BY_UUID, lambda: conn.lookupByUUIDString(dom.UUIDString())),
        ]
        for proc, call in cases:
            rpc.reset()
            call()
            assert dict(rpc.calls) == {proc: 1}
        handle = conn.lookupByUUIDString(dom.UUIDString())
        rpc.reset()
        with contextlib.suppress(libvirt.libvirtError):  # "wrong nlmsg len" on this kernel
            handle.interfaceAddresses(SRC_AGENT, 0)
        assert dict(rpc.calls) == {PROC_DOMAIN_INTERFACE_ADDRESSES: 1}
        assert rpc.interface_address_calls() == [(dom.name(), dom.UUIDString(), SRC_AGENT)]
        nets = conn.listAllNetworks(0)
        if nets:
            rpc.reset()
            nets[0].DHCPLeases()
            assert dict(rpc.calls) == {PROC_NETWORK_GET_DHCP_LEASES: 1}
    finally:
        conn.close()


async def test_a_real_lease_reaches_its_vm_in_one_call_per_network(
    libvirtd: LibvirtDaemon,
    lease_net: LeaseNetwork,
    rpc: RpcCounter,
    tcg_domain: DomainFactory,
    tmp_path: Path,
) -> None:
    leased_mac, quiet_mac, off_mac = random_mac(), random_mac(), random_mac()
    leased = define_on(tcg_domain, lease_net.name, leased_mac, start=True, agent_channel=True)
    quiet = define_on(tcg_domain, lease_net.name, quiet_mac, start=True)  # no DHCP client
    off = define_on(tcg_domain, lease_net.name, off_mac, start=False)
    client = lease_net.plug(leased_mac)
    # A lease for the shut-off VM's MAC too: leases outlive their guests, and a shut-off
    # VM must not show one.
    lease_net.plug(off_mac)
    networks = active_networks(libvirtd)
    assert lease_net.name in networks

    config = Config(
        hosts=(HostConfig(name="real", uri=rpc.uri),),
        source="<test>",
        timing=Timing(refresh_interval=0),
    )
    fleet = Fleet(config)
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    await fleet.start()
    try:
        assert await fleet.wait_settled(60)
        vm = fleet.find(f"real/{leased.UUIDString()}")
        # A real qemu with the agent channel and no guest OS: the channel is there, not
        # connected, so the agent is not asked.
        assert vm.state is VmState.RUNNING and not vm.agent_connected
        live = leased.XMLDesc(0)
        assert "org.qemu.guest_agent.0" in live and "state='disconnected'" in live
        assert parse_domain_xml(live.replace("'disconnected'", "'connected'")).agent_connected

        rpc.reset()
        scan = await scanner.scan_host("real", sweep=False)
        assert scan.error is None
        shown = fleet.find(f"real/{leased.UUIDString()}").ips
        assert [(s.ip, s.prefix, s.source, s.mac) for s in shown] == [
            (client.ip, 24, LEASE, leased_mac)
        ]
        assert fleet.find(f"real/{quiet.UUIDString()}").ips == ()
        assert fleet.find(f"real/{off.UUIDString()}").ips == ()

        # On the wire: one listing, one lease call per active network, nothing per VM (the
        # quiet VM's network answered for it, and this machine's neighbour table was read
        # instead of libvirt's per-VM arp), so no domain handles either.
        assert rpc.count(PROC_LIST_ALL_NETWORKS) == 1
        assert rpc.count(PROC_NETWORK_GET_DHCP_LEASES) == len(networks)
        assert rpc.count(PROC_DOMAIN_INTERFACE_ADDRESSES) == 0
        assert rpc.count(PROC_LIST_ALL_DOMAINS) == 0
        # catkeeper's own report says the same.
        by_source = summarize_calls(scan.calls)
        assert by_source[LEASE]["calls"] == 1 + len(networks) and by_source[LEASE]["per_vm"] == 0
        assert by_source[NEIGH]["calls"] == 1 and DOMAINS not in by_source
        mine = next(r for r in scan.results if r.scope == f"network:{lease_net.name}")
        assert mine.ok and set(mine.macs) == {leased_mac, quiet_mac, off_mac}
    finally:
        await scanner.aclose()
        await fleet.aclose()

    # The same path through the real binary: `catkeeper --json --ips`.
    cfg = write_config(tmp_path / "c.yaml", {"real": rpc.uri})
    rpc.reset()
    r = run_catkeeper("--config", str(cfg), "--json", "--ips", cwd=tmp_path)
    assert r.code == 0, r.err
    by_uuid = {v["uuid"]: v for v in r.json()["vms"]}
    assert [(s["ip"], s["source"]) for s in by_uuid[leased.UUIDString()]["ips"]] == [
        (client.ip, LEASE)
    ]
    assert by_uuid[off.UUIDString()]["ips"] == []
    assert rpc.count(PROC_NETWORK_GET_DHCP_LEASES) == len(networks)
    assert rpc.count(PROC_DOMAIN_INTERFACE_ADDRESSES) == 0


async def test_per_vm_calls_only_for_what_no_bulk_call_answered(
    libvirtd: LibvirtDaemon, tcg_domain: DomainFactory, tmp_path: Path
) -> None:
    """A host whose neighbour table cannot be read (a remote name without ssh settings):
    libvirt's per-VM arp is asked, side by side, once per running VM still without an
    address, on the domain handles of one listing; a background pass does not ask again
    for what the book knows."""
    doms = [tcg_domain(start=True) for _ in range(3)]
    # A host name in the URI (qemu+tcp://127.0.0.2:PORT): not this machine, as far as
    # catkeeper can tell; the relay still hands the calls to the local daemon's socket.
    rpc = RpcCounter(tmp_path / "unused", tcp_host="127.0.0.2", reply_delay=0.5).start()
    config = Config(
        hosts=(HostConfig(name="far", uri=rpc.uri),),
        source="<test>",
        timing=Timing(refresh_interval=0),
    )
    fleet = Fleet(config)
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    await fleet.start()
    try:
        assert await fleet.wait_settled(60)
        session = fleet.session("far")
        assert scanner.neigh_reader(session) is None
        running = [v for v in session.vms.values() if v.state.is_active and v.nics]
        mine = {d.UUIDString() for d in doms}
        assert mine <= {v.uuid for v in running}
        rpc.reset()
        scan = await scanner.scan_host("far", sweep=False)
        asked = rpc.interface_address_calls()
        # Every running VM with a NIC, once, by arp; no agent (no channel connected).
        assert sorted(u for _n, u, _s in asked) == sorted(v.uuid for v in running)
        assert {s for _n, _u, s in asked} == {libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP}
        assert rpc.count(PROC_LIST_ALL_DOMAINS) == 1  # the handles for all of them
        assert rpc.count(PROC_LOOKUP_BY_UUID) == 0  # so no lookup per VM
        per_vm = [c for c in scan.calls if c.per_vm]
        assert len(per_vm) == len(running)
        # One at a time on the wire, though asked side by side: a connection's calls take
        # turns (ConnGuard; libvirt's client crashes when a connection dies under two
        # threads). With every reply held 0.5 s, overlapping calls could not hide.
        assert rpc.max_in_flight[PROC_DOMAIN_INTERFACE_ADDRESSES] == 1
        # Nothing answered (type='user' NICs; arp fails on this kernel): the background
        # pass asks again, since the book still knows no address for them.
        rpc.reset()
        await scanner.scan_host("far", sweep=False, recheck=False)
        assert len(rpc.interface_address_calls()) == len(running)
    finally:
        await scanner.aclose()
        await fleet.aclose()
        rpc.stop()


# ---- neigh: an ssh host's neighbour table ------------------------------------------------


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[tuple[Topology, object]]:
    require_netns()
    reap_stale()
    topo = Topology(behaviours=(ANSWERS, ANSWERS, SILENT))
    try:
        topo.build()
        (tmp_path / "sshd").mkdir()
        sshd = topo.start_sshd(tmp_path / "sshd")
        yield topo, sshd
    finally:
        topo.destroy()


async def test_an_ssh_hosts_neighbour_table_reaches_the_right_vms(
    libvirtd: LibvirtDaemon,
    rpc: RpcCounter,
    tcg_domain: DomainFactory,
    ssh_host: tuple[Topology, object],
) -> None:
    topo, sshd = ssh_host
    from tests.netns import NetnsSshd

    assert isinstance(sshd, NetnsSshd)
    # The host talks to its guests (ping from the host namespace): its kernel learns their
    # MACs, as a libvirt host's does from guest traffic. The silent guest never answers.
    for g in topo.guests:
        with contextlib.suppress(RuntimeError):
            run(*topo.in_host("ping", "-c", "1", "-W", "1", "-q", g.ip))
    # Real VMs carrying the guests' MACs (type='user' NICs: no lease anywhere).
    by_guest = {g.name: tcg_domain(start=True, mac=g.mac) for g in topo.guests}
    config = Config(
        hosts=(
            HostConfig(
                name="lab",
                uri=rpc.uri,  # libvirt as given; the ssh settings serve remote commands
                ssh=SshSettings(
                    host=sshd.listen,
                    user="root",
                    key=str(sshd.client_key),
                    known_hosts=str(sshd.known_hosts),
                ),
            ),
        ),
        source="<test>",
        timing=Timing(refresh_interval=0),
    )
    fleet = Fleet(config)
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    await fleet.start()
    try:
        assert await fleet.wait_settled(60)
        sessions_before = sshd.log_path.read_text().count("Starting session")
        rpc.reset()
        scan = await scanner.scan_host("lab", sweep=False)
        assert scan.error is None, scan.error
        for g in topo.guests:
            got = [(s.ip, s.source) for s in fleet.find(f"lab/{by_guest[g.name].UUIDString()}").ips]
            assert got == ([] if g.behaviour == SILENT else [(g.ip, NEIGH)]), g
        # One remote command (one ssh session) for the whole table, over one connection.
        assert sshd.log_path.read_text().count("Starting session") == sessions_before + 1
        assert sshd.log_path.read_text().count("Accepted publickey") == 1
        # The table answered for arp: no per-VM interfaceAddresses at all.
        assert rpc.count(PROC_DOMAIN_INTERFACE_ADDRESSES) == 0
        neigh = [r for r in scan.results if r.source == NEIGH]
        assert len(neigh) == 1 and neigh[0].ok and neigh[0].scope == "*"
        assert "passive" in (neigh[0].note or "")
    finally:
        await scanner.aclose()
        await fleet.aclose()
