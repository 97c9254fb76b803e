"""libvirt's interfaceAddresses sources, per source and never fatal: test driver and real daemon."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from catkeeper.backend.events import DomainEvent, FleetEvent, VmChanged
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.ipscan.book import best_ip
from catkeeper.backend.ipscan.bulk import DOMAINS, summarize_calls
from catkeeper.backend.ipscan.libvirt_source import (
    applicable_sources,
    libvirt_sightings,
    parse_addresses,
)
from catkeeper.backend.ipscan.results import AGENT, ARP, LEASE, NEIGH, SourceResult
from catkeeper.backend.ipscan.scheduler import DONE, LIBVIRT, IpScanner, ScanProgress
from catkeeper.config import Config, HostConfig, Timing, load_config
from catkeeper.demo.fleetgen import node_xml
from catkeeper.model import VmState
from tests.cli_support import run_catkeeper, write_config
from tests.daemons import DomainFactory, LibvirtDaemon

# ---- test driver -------------------------------------------------------------------------


def driver_config(tmp_path: Path, hosts: int = 1, vms: int = 12) -> Config:
    out = []
    for i in range(hosts):
        path = tmp_path / f"h{i:02d}.xml"
        path.write_text(node_xml(f"h{i:02d}", vms, seed=5, paused=1, host_id=100 + i))
        out.append(HostConfig(name=f"h{i:02d}", uri=f"test://{path}"))
    return Config(hosts=tuple(out), source="<test>", timing=Timing(refresh_interval=0))


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    f = Fleet(driver_config(tmp_path))
    await f.start()
    assert await f.wait_settled(10)
    try:
        yield f
    finally:
        await f.aclose()


def test_parse_addresses_drops_loopback_and_macless_interfaces() -> None:
    raw = {
        "lo": {"hwaddr": "00:00:00:00:00:00", "addrs": [{"addr": "127.0.0.1", "prefix": 8}]},
        "tun0": {"hwaddr": None, "addrs": [{"addr": "10.8.0.2", "prefix": 24, "type": 0}]},
        "eth0": {
            "hwaddr": "52:54:00:AB:CD:EF",
            "addrs": [
                {"addr": "192.168.122.10", "prefix": 24, "type": 0},
                {"addr": "fe80::5054:ff:feab:cdef", "prefix": 64, "type": 1},
                {"addr": "::1", "prefix": 128, "type": 1},
            ],
        },
    }
    got = parse_addresses(raw, source=AGENT, seen_at=5.0)
    assert [(s.mac, s.ip, s.prefix) for s in got] == [
        ("52:54:00:ab:cd:ef", "192.168.122.10", 24),
        ("52:54:00:ab:cd:ef", "fe80::5054:ff:feab:cdef", 64),
    ]


async def test_sources_apply_by_state(fleet: Fleet) -> None:
    vms = fleet.vms()
    by_state = {vm.state: vm for vm in vms}
    running, paused = by_state[VmState.RUNNING], by_state[VmState.PAUSED]
    off = by_state[VmState.SHUTOFF]
    assert applicable_sources(running) == [AGENT, LEASE, ARP]  # fleetgen NICs: type=network
    assert applicable_sources(paused) == [LEASE, ARP]  # a paused guest's agent cannot answer
    assert applicable_sources(off) == []
    session = fleet.session(running.host)
    assert await libvirt_sightings(session, off) == []
    results = await libvirt_sightings(session, running)
    assert [r.source for r in results] == [AGENT, LEASE, ARP]
    for r in results:
        assert r.ok and r.scope == running.uuid and r.macs == tuple(n.mac for n in running.nics)
        assert {s.mac for s in r.sightings} <= set(r.macs)


async def test_scan_host_decorates_rows_and_emits_changes(fleet: Fleet) -> None:
    events: list[FleetEvent] = []
    fleet.subscribe(events.append)
    progress: list[ScanProgress] = []
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    scan = await scanner.scan_host("h00", sweep=False, progress=progress.append)
    assert scan.error is None
    active = [vm for vm in fleet.vms() if vm.state.is_active]
    assert active and all(vm.ips for vm in active)
    assert all(not vm.ips for vm in fleet.vms() if not vm.state.is_active)
    for vm in active:
        assert best_ip(vm) is not None and best_ip(vm).startswith("10.100.")  # type: ignore[union-attr]
        # The test driver has no bulk lease call and no connected agent channel: each active
        # VM's lease is asked per VM, and that first answer is enough (no arp call after it).
        assert {s.source for s in vm.ips} == {LEASE}
    by_source = summarize_calls(scan.calls)
    assert set(by_source) == {LEASE, DOMAINS}
    # One listing of networks, one (unsupported, so not an error) bulk call for `default`,
    # then one per active VM; one listAllDomains for the handles those per-VM calls use.
    assert (by_source[LEASE]["calls"], by_source[LEASE]["per_vm"]) == (2 + len(active), len(active))
    assert by_source[LEASE]["failed"] == 0 and by_source[DOMAINS]["calls"] == 1
    network = next(r for r in scan.results if r.scope == "network:default")
    assert network.ok and "no bulk lease call" in (network.note or "")
    changed = {e.vm.uuid for e in events if isinstance(e, VmChanged)}
    assert changed == {vm.uuid for vm in active}
    stages = [(p.stage, p.done, p.total) for p in progress]
    assert stages[-1][0] == DONE
    assert [s for s in stages if s[0] == LIBVIRT][-1][1:] == (len(active), len(active))
    # A later warm refresh rebuilds every VM: the decorate hook keeps the IPs on.
    await fleet.session("h00")._warm_refresh()
    assert all(vm.ips for vm in fleet.vms() if vm.state.is_active)


async def test_background_loop_fills_rows_without_being_asked(fleet: Fleet) -> None:
    scanner = IpScanner(fleet, libvirt_interval=0.2)
    scanner.start()
    try:
        # A pass takes well under a second; the bound only stops a loop that never fills them.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(vm.ips for vm in fleet.vms() if vm.state.is_active):
                break
            await asyncio.sleep(0.05)
        assert all(vm.ips for vm in fleet.vms() if vm.state.is_active)
    finally:
        await scanner.aclose()


async def test_scan_vm_for_the_i_key(fleet: Fleet) -> None:
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    vm = next(v for v in fleet.vms() if v.state is VmState.RUNNING)
    scan = await scanner.scan_vm(vm.ref)
    assert {r.source for r in scan.results} == {LEASE}  # found one: no sweep
    per_vm = [c for c in scan.calls if c.per_vm]
    assert [(c.source, c.scope) for c in per_vm] == [(LEASE, vm.uuid)]  # this VM's only
    assert scanner.vm(vm.ref).ips
    others = [v for v in fleet.vms() if v.uuid != vm.uuid]
    assert all(not v.ips for v in others)


async def test_agent_is_asked_only_where_its_channel_is_connected(fleet: Fleet) -> None:
    """The test driver drops the channel's live state, so one VM is given the flag the
    live XML of a real guest with a running agent carries (parsing it is tested on its
    own); the scan asks that VM's agent, and nobody else's."""
    session = fleet.session("h00")
    running = [v for v in session.vms.values() if v.state is VmState.RUNNING]
    with_agent = running[0]
    session.vms[with_agent.uuid] = dataclasses.replace(with_agent, agent_connected=True)
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.attach()
    scan = await scanner.scan_host("h00", sweep=False)
    agent_calls = [c for c in scan.calls if c.source == AGENT]
    assert [c.scope for c in agent_calls] == [with_agent.uuid]
    assert {s.source for s in fleet.find(with_agent.ref).ips} == {AGENT}
    # The agent's answer was enough: no per-VM lease call for that VM.
    assert not [
        c for c in scan.calls if c.per_vm and c.source == LEASE and c.scope == with_agent.uuid
    ]
    assert all(
        {s.source for s in v.ips} == {LEASE}
        for v in fleet.vms()
        if v is not None and v.uuid != with_agent.uuid and v.state.is_active
    )


async def test_agent_lifecycle_event_asks_that_agent(fleet: Fleet) -> None:
    """The event the host session passes on when an agent connects (posted as it would be)
    makes the scanner ask that VM's agent, without a scan."""
    session = fleet.session("h00")
    vm = next(v for v in session.vms.values() if v.state is VmState.RUNNING)
    scanner = IpScanner(fleet, libvirt_interval=0)
    scanner.start()
    try:
        connected = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
        event_id = libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE
        scanner.on_fleet_event(DomainEvent("h00", vm.uuid, event_id, (connected, 0)))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not fleet.find(vm.ref).ips:
            await asyncio.sleep(0.02)
        assert {s.source for s in fleet.find(vm.ref).ips} == {AGENT}
        others = [v for v in fleet.vms() if v.uuid != vm.uuid]
        assert all(not v.ips for v in others)
        # A disconnect asks nothing.
        disconnected = libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_DISCONNECTED
        other = next(v for v in others if v.state is VmState.RUNNING)
        scanner.on_fleet_event(DomainEvent("h00", other.uuid, event_id, (disconnected, 0)))
        assert scanner._event_tasks == set()
    finally:
        await scanner.aclose()


async def test_per_vm_calls_in_flight_come_from_the_config(tmp_path: Path) -> None:
    """``ipscan.per_vm_calls`` bounds the per-VM calls of a pass; 0 leaves a worker free."""
    path = tmp_path / "c.yaml"
    node = tmp_path / "h.xml"
    node.write_text(node_xml("h", 2, seed=1, host_id=7))
    for given, expected in (("3", 3), ("0", Timing().workers_per_host - 1)):
        path.write_text(
            f"hosts:\n  - name: h\n    uri: test://{node}\nipscan:\n  per_vm_calls: {given}\n"
        )
        fleet = Fleet(load_config(str(path), {}))
        assert IpScanner(fleet).concurrency_for(fleet.session("h")) == expected
        assert IpScanner(fleet, libvirt_concurrency=5).concurrency_for(fleet.session("h")) == 5


async def test_twenty_hosts_scan_concurrently(tmp_path: Path) -> None:
    fleet = Fleet(driver_config(tmp_path, hosts=20, vms=10))
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        scanner = IpScanner(fleet, libvirt_interval=0)
        scanner.attach()
        scans = await scanner.scan(sweep=False)
        assert len(scans) == 20 and all(s.error is None for s in scans)
        assert all(vm.ips for vm in fleet.vms() if vm.state.is_active)
        # Distinct MACs per host (fleetgen host_id): no conflicts.
        assert scanner.conflicts() == []
    finally:
        await fleet.aclose()


async def test_test_driver_hosts_without_subnets_are_never_swept(fleet: Fleet) -> None:
    """The demo fleet is test:/// hosts: a sweep must not send packets for fictional guests."""
    scanner = IpScanner(fleet, libvirt_interval=0)
    scan = await scanner.scan_host("h00", libvirt=False)
    (r,) = scan.results
    assert r.ok and r.sightings == () and "nothing to sweep" in (r.note or "")


async def test_unreachable_host_is_a_scan_error(tmp_path: Path) -> None:
    config = Config(
        hosts=(HostConfig(name="gone", uri=f"test://{tmp_path}/missing.xml"),),
        source="<test>",
        timing=Timing(refresh_interval=0, backoff_initial=30, backoff_max=30),
    )
    fleet = Fleet(config)
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        scan = await IpScanner(fleet).scan_host("gone", sweep=False)
        assert scan.results == () and "skipped" in (scan.error or "")
    finally:
        await fleet.aclose()


# ---- real libvirtd -----------------------------------------------------------------------


@pytest.mark.daemon
async def test_real_daemon_failures_are_recorded_per_source(
    libvirtd: LibvirtDaemon, tcg_domain: DomainFactory
) -> None:
    dom = tcg_domain(start=True)
    config = Config(
        hosts=(HostConfig(name="real", uri=libvirtd.uri),),
        source="<test>",
        timing=Timing(refresh_interval=0),
    )
    fleet = Fleet(config)
    await fleet.start()
    try:
        assert await fleet.wait_settled(30)
        vm = fleet.find(f"real/{dom.UUIDString()}")
        assert vm.state is VmState.RUNNING
        # Its NIC is type='user': no libvirt network, so no leases to read.
        assert applicable_sources(vm) == [AGENT, ARP]
        results = await libvirt_sightings(fleet.session("real"), vm, sources=(AGENT, LEASE, ARP))
        by_source = {r.source: r for r in results}
        assert set(by_source) == {AGENT, LEASE, ARP}
        # No agent channel in the domain: libvirt says so, and that is data.
        assert "agent" in (by_source[AGENT].error or "").lower()
        assert by_source[LEASE].ok and by_source[LEASE].sightings == ()
        # SRC_ARP fails on this kernel ("wrong nlmsg len"); elsewhere it may just find nothing.
        assert by_source[ARP].error is not None or by_source[ARP].sightings == ()

        # The scan: no agent channel, so no agent call; this machine's neighbour table is
        # read in one go, so libvirt's per-VM arp is not asked either.
        scanner = IpScanner(fleet, libvirt_interval=0)
        scanner.attach()
        scan = await scanner.scan_vm(vm, sweep=False)
        assert scan.error is None
        assert {r.source for r in scan.results} == {LEASE, NEIGH}
        assert not [c for c in scan.calls if c.per_vm]
        assert ("real", AGENT, vm.uuid) not in scanner.book.results
        assert fleet.find(f"real/{vm.uuid}").ips == ()
    finally:
        await fleet.aclose()


def test_scan_cli_text_and_exit_codes(tmp_path: Path) -> None:
    """``catkeeper --config C scan …`` through the installed script: text, JSON, exit codes."""
    node = tmp_path / "h.xml"
    node.write_text(node_xml("h", 6, seed=3, running_fraction=1.0, host_id=42))
    config = str(write_config(tmp_path / "c.yaml", {"h": f"test://{node}"}))
    r = run_catkeeper("--config", config, "scan", "--no-sweep", cwd=tmp_path)
    assert r.code == 0, r.err
    out = r.out.splitlines()
    assert out[0].startswith("h/") and " lease " in out[0] and out[0].endswith("s ago")
    assert "6 VMs with addresses (6 active, 6 in all)" in out
    # Per source, the calls made: a listing, the driver's (missing) bulk call, then per VM.
    lease_line = next(line for line in out if line.lstrip().startswith("lease "))
    assert " 8 calls " in lease_line and "6 of them per VM" in lease_line, lease_line
    assert "  no bulk lease call on this driver: leases asked per VM" in out
    assert sum(1 for line in out if line.startswith("h/")) == 6  # each VM's first line names it
    r = run_catkeeper("--config", config, "scan", "--no-sweep", "--json", cwd=tmp_path)
    assert r.code == 0, r.err
    doc = r.json()
    assert len(doc["vms"]) == 6 and all(v["ips"] and v["best_ip"] for v in doc["vms"])
    assert [h["host"] for h in doc["hosts"]] == ["h"]
    calls = doc["hosts"][0]["calls_by_source"]
    assert set(calls) == {"lease", "domains"}
    assert (calls["lease"]["calls"], calls["lease"]["per_vm"], calls["lease"]["failed"]) == (
        8,
        6,
        0,
    )
    assert len(calls["lease"]["seconds"]) == 8 and calls["domains"]["calls"] == 1
    r = run_catkeeper("--config", config, "scan", "--host", "nope", cwd=tmp_path)
    assert (r.code, r.out) == (2, "") and "nope" in r.err
    r = run_catkeeper("--config", config, "--host", "nope", "scan", cwd=tmp_path)
    assert (r.code, r.out) == (2, "") and "nope" in r.err  # the global --host counts too
    r = run_catkeeper("--config", config, "scan", "--subnet", "10.0.0.0/8", cwd=tmp_path)
    assert (r.code, r.out) == (2, "") and "sweeps stop at" in r.err


def test_the_demo_fleet_falls_back_per_vm_without_an_error(tmp_path: Path) -> None:
    """The test driver has no lease call: ``--json --ips`` on the demo fleet still gives
    every running VM its (fictional) lease, asked per VM, and says no error."""
    r = run_catkeeper("--demo", "--json", "--ips", cwd=tmp_path)
    assert r.code == 0, r.err
    doc = r.json()
    running = [v for v in doc["vms"] if v["state"] in ("running", "paused")]
    assert running and all(v["ips"] for v in running)
    assert {s["source"] for v in running for s in v["ips"]} == {LEASE}
    assert all(h["error"] is None for h in doc["hosts"])
    r = run_catkeeper("--demo", "scan", "--no-sweep", cwd=tmp_path)
    assert r.code == 0, r.err
    assert "failed" not in r.out
    assert "no bulk lease call on this driver: leases asked per VM" in r.out


async def test_local_hosts_read_this_machines_neighbour_table_once() -> None:
    """Two hosts on this machine: background passes one after the other take one read of
    the (real) neighbour table, each under its own name; a person's scan reads it again, and
    so does a pass after half the libvirt interval."""
    from catkeeper.backend.ipscan.bulk import read_local_neigh

    hosts = tuple(HostConfig(name=n, uri="qemu:///system") for n in ("a", "b"))
    fleet = Fleet(Config(hosts=hosts, source="<test>", timing=Timing(refresh_interval=0)))
    reads: list[str] = []

    async def counted(host: str, **kwargs: Any) -> list[SourceResult]:
        reads.append(host)
        return await read_local_neigh(host, **kwargs)

    mono = [1000.0]
    scanner = IpScanner(fleet, libvirt_interval=60, mono=lambda: mono[0])
    scanner.local_neigh = counted
    background = {h: scanner.neigh_reader(fleet.session(h)) for h in ("a", "b")}
    first = await background["a"]()  # type: ignore[misc]
    second = await background["b"]()  # type: ignore[misc]
    assert reads == ["a"]
    assert {r.host for r in first} == {"a"} and {r.host for r in second} == {"b"}
    assert [r.sightings for r in first] == [r.sightings for r in second]
    person = scanner.neigh_reader(fleet.session("b"), reuse=False)
    await person()  # type: ignore[misc]
    assert reads == ["a", "b"]
    mono[0] += 31
    await background["a"]()  # type: ignore[misc]
    assert reads == ["a", "b", "a"]
