"""Local sweeps with real packets, inside network namespaces these tests build.

Topology (tests/netns.py): a "host" namespace with bridge br0 at 198.18.5.1/24 and four
guest namespaces on veths: two answer ARP and ping, one ignores ping, one is silent. The
sweep runs in a child process inside the host namespace (``ip netns exec``): a process
cannot switch namespaces per thread, and the child is exactly what ``python -m
catkeeper.backend.ipscan.local_sweep`` runs in production. Nothing leaves the namespaces.

Speed is measured by bench/ipscan_bench.py, not asserted here: a loaded CI machine must not
turn a slow second into a red test.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from catkeeper.backend.ipscan.local_sweep import (
    ChildSweep,
    SweepOptions,
    run_sweep_argv,
    sweep_argv,
)
from catkeeper.backend.ipscan.neigh import NeighEntry, parse_ip_json, parse_ip_text, parse_proc_arp
from catkeeper.backend.ipscan.results import NEIGH, SWEEP_ARP, SWEEP_ICMP, SourceResult
from tests.cli_support import catkeeper_argv, cli_env
from tests.netns import (
    ANSWERS,
    NO_ICMP,
    SILENT,
    Topology,
    list_netns,
    node_xml,
    reap_stale,
    require_netns,
    run,
)

pytestmark = pytest.mark.daemon


@pytest.fixture(scope="module", autouse=True)
def _reap() -> None:
    require_netns()
    reap_stale()  # namespaces of test runs that were killed before their finalizers ran


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = Topology()
    try:
        yield t.build()
    finally:
        t.destroy()


@pytest.fixture
def routed_topo() -> Iterator[Topology]:
    t = Topology(routed_subnet="198.18.6.0/24")
    try:
        yield t.build()
    finally:
        t.destroy()


def sweep_in(
    topo: Topology,
    options: SweepOptions,
    *,
    drop_raw: bool = False,
    subnets: list[str] | None = None,
) -> ChildSweep:
    argv = sweep_argv("nethost", subnets or [topo.subnet], options)
    if drop_raw:
        # capsh drops CAP_NET_RAW from the bounding set, then runs bash -c with our argv,
        # quoted by shlex.join (it contains nothing but our own options and CIDRs).
        argv = ["capsh", "--drop=cap_net_raw", "--", "-c", shlex.join(argv)]
    return asyncio.run(run_sweep_argv(topo.in_host(*argv), timeout=60))


def found(result: SourceResult) -> dict[str, str]:
    return {s.ip: s.mac for s in result.sightings}


def only(results: list[SourceResult], source: str) -> SourceResult:
    (r,) = [r for r in results if r.source == source]
    return r


def test_topology_behaves_as_designed_by_ping(topo: Topology) -> None:
    """Checked with iputils ping, independently of catkeeper: who answers ICMP."""
    for g in topo.guests:
        done = subprocess.run(
            topo.in_host("ping", "-c", "1", "-W", "1", "-q", g.ip), capture_output=True, timeout=10
        )
        assert (done.returncode == 0) == (g.behaviour == ANSWERS), g


def test_namespaces_are_removed_on_destroy() -> None:
    t = Topology(behaviours=(ANSWERS,)).build()
    names = [t.host_ns, t.guest_ns(0)]
    assert set(names) <= set(list_netns())
    t.destroy()
    assert not set(names) & set(list_netns())
    assert not Path(f"/run/netns/{t.host_ns}").exists()
    t.destroy()  # twice is fine


def test_privileged_arp_sweep_finds_exactly_the_answering_guests(topo: Topology) -> None:
    child = sweep_in(topo, SweepOptions(icmp=False))
    arp = only(child.results, SWEEP_ARP)
    assert arp.ok and arp.privileged is True
    assert found(arp) == topo.answering(ANSWERS, NO_ICMP)  # not the silent one, not us
    assert all(s.prefix == 24 and s.source == SWEEP_ARP for s in arp.sightings)


def test_icmp_sweep_finds_those_answering_ping(topo: Topology) -> None:
    child = sweep_in(topo, SweepOptions(arp=False))
    icmp = only(child.results, SWEEP_ICMP)
    assert icmp.ok and icmp.privileged is True
    assert found(icmp) == topo.answering(ANSWERS)


def test_arp_and_icmp_run_side_by_side(topo: Topology) -> None:
    child = sweep_in(topo, SweepOptions())
    assert {r.source for r in child.results} == {SWEEP_ARP, SWEEP_ICMP}
    assert child.scapy_import_s is not None  # imported in the child, on demand


def test_unprivileged_fallback_reads_the_neighbour_table(topo: Topology) -> None:
    topo.flush_neighbours()
    child = sweep_in(topo, SweepOptions(), drop_raw=True)
    (r,) = child.results
    assert r.source == NEIGH and r.privileged is False and r.ok
    assert r.note is not None and "unprivileged" in r.note
    assert found(r) == topo.answering(ANSWERS, NO_ICMP)
    assert child.scapy_import_s is None  # no raw sockets, so scapy is never imported


def test_parsers_agree_on_the_real_tables(topo: Topology) -> None:
    topo.flush_neighbours()
    sweep_in(topo, SweepOptions(), drop_raw=True)
    as_json = parse_ip_json(run(*topo.in_host("ip", "-j", "neigh", "show")))
    as_text = parse_ip_text(run(*topo.in_host("ip", "neigh", "show")))
    as_proc = parse_proc_arp(run(*topo.in_host("cat", "/proc/net/arp")))

    def usable(entries: list[NeighEntry]) -> dict[str, str | None]:
        return {e.ip: e.mac for e in entries if e.usable}

    expected = topo.answering(ANSWERS, NO_ICMP)
    assert usable(as_json) == usable(as_text) == usable(as_proc) == expected
    # The silent guest was poked too: the kernel knows it only as incomplete or failed.
    silent = next(g for g in topo.guests if g.behaviour == SILENT)
    assert {e.state for e in as_json if e.ip == silent.ip} <= {"INCOMPLETE", "FAILED"}


def test_subnets_default_to_the_interfaces_of_the_namespace(topo: Topology) -> None:
    argv = sweep_argv("nethost", None, SweepOptions(icmp=False))
    child = asyncio.run(run_sweep_argv(topo.in_host(*argv), timeout=60))
    arp = only(child.results, SWEEP_ARP)
    assert arp.scope == topo.subnet
    assert found(arp) == topo.answering(ANSWERS, NO_ICMP)


def test_bad_subnets_are_results_not_crashes(topo: Topology) -> None:
    child = sweep_in(
        topo, SweepOptions(icmp=False), subnets=[topo.subnet, "10.0.0.0/8", "fd00::/64"]
    )
    by_scope = {r.scope: r for r in child.results}
    assert by_scope[topo.subnet].ok
    assert "addresses" in (by_scope["10.0.0.0/8"].error or "")
    assert "IPv6" in (by_scope["fd00::/64"].error or "")


def test_routed_subnet_icmp_sees_alive_addresses_without_macs(routed_topo: Topology) -> None:
    t = routed_topo
    assert t.routed_subnet is not None and t.routed_guest is not None
    child = sweep_in(t, SweepOptions(), subnets=[t.routed_subnet])
    (icmp,) = child.results  # no ARP through a router
    assert icmp.source == SWEEP_ICMP and icmp.ok
    assert icmp.sightings == ()  # the replies carry the router's MAC: useless for matching
    router_far_side = "198.18.6.1"  # the router's own address there answers too
    assert icmp.alive == (router_far_side, t.routed_guest.ip)
    assert "routed via" in (icmp.note or "")
    # Unprivileged, a routed subnet cannot be swept at all, and the result says why.
    (neigh,) = sweep_in(t, SweepOptions(), drop_raw=True, subnets=[t.routed_subnet]).results
    assert neigh.source == NEIGH and not neigh.ok and "routed" in (neigh.error or "")


# ---- the whole path: catkeeper scan in the namespace, VM rows from a test-driver fleet ----


def scan_in(topo: Topology, tmp_path: Path, *extra: str, drop_raw: bool = False) -> dict[str, Any]:
    node = tmp_path / "nethost.xml"
    node.write_text(node_xml(topo.guests, extra_macs=["52:54:00:ff:ff:01"]))
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {"hosts": [{"name": "nethost", "uri": f"test://{node}", "subnets": [topo.subnet]}]}
        )
    )
    # The installed script, global options first, as a user types it in that namespace.
    argv = catkeeper_argv("--config", str(config), "scan", "--json", *extra)
    if drop_raw:
        argv = ["capsh", "--drop=cap_net_raw", "--", "-c", shlex.join(argv)]
    done = subprocess.run(
        topo.in_host(*argv),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=cli_env(tmp_path / "state"),
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_scan_cli_puts_swept_ips_on_the_right_vm_rows(topo: Topology, tmp_path: Path) -> None:
    doc = scan_in(topo, tmp_path)
    rows = {v["ref"].split("/")[1]: v for v in doc["vms"]}
    for g in topo.guests:
        ips = {(s["ip"], s["source"]) for s in rows[g.name]["ips"]}
        swept = {ip for ip, src in ips if src.startswith("sweep-")}
        assert swept == ({g.ip} if g.behaviour != SILENT else set()), g
        # The test driver's invented agent/lease/arp addresses (10.250/16) carry their source.
        assert {src for ip, src in ips if ip.startswith("10.250.")} <= {"agent", "lease", "arp"}
    # The same address from ARP and ICMP in one scan: shown once, as the ARP sighting.
    answering = next(g for g in topo.guests if g.behaviour == ANSWERS)
    sources = [s["source"] for s in rows[answering.name]["ips"] if s["ip"] == answering.ip]
    assert sources == [SWEEP_ARP]
    assert rows[answering.name]["best_ip"] in {answering.ip} | {
        s["ip"] for s in rows[answering.name]["ips"] if s["ip"].startswith("10.250.")
    }
    assert rows["off0"]["ips"] == []  # shut off, and its MAC answers nowhere
    (host,) = doc["hosts"]
    by_source = {r["source"] for r in host["results"] if r["scope"] == topo.subnet}
    assert by_source == {SWEEP_ARP, SWEEP_ICMP}
    assert doc["conflicts"] == []


def test_scan_cli_unprivileged_marks_the_fallback(topo: Topology, tmp_path: Path) -> None:
    topo.flush_neighbours()
    doc = scan_in(topo, tmp_path, "--no-libvirt", drop_raw=True)
    rows = {v["ref"].split("/")[1]: v for v in doc["vms"]}
    for g in topo.guests:
        got = [(s["ip"], s["source"]) for s in rows[g.name]["ips"]]
        assert got == ([] if g.behaviour == SILENT else [(g.ip, NEIGH)]), g
    (sweep,) = [r for r in doc["hosts"][0]["results"] if r["scope"] == topo.subnet]
    assert sweep["privileged"] is False and "unprivileged" in sweep["note"]


def test_half_built_topology_is_still_removed() -> None:
    """A build that fails midway (a /28 cannot hold 20 guests) leaves nothing behind."""
    t = Topology(behaviours=(ANSWERS,) * 20, subnet="198.18.7.0/28")
    with pytest.raises(IndexError, match="list index out of range"):
        t.build()  # guests start at the 11th of a /28's 14 addresses: the 5th has none
    built = list(t.built)
    assert built and set(built) <= set(list_netns())
    t.destroy()
    assert not set(built) & set(list_netns())


async def test_local_hosts_share_one_sweep(topo: Topology, tmp_path: Path) -> None:
    """Two hosts on this machine (say test:/// and qemu:///system) with the same subnets:
    one sweep, whose results both get. The sweeper is the real child in the namespace."""
    from catkeeper.backend.fleet import Fleet
    from catkeeper.backend.ipscan.scheduler import IpScanner
    from catkeeper.config import Config, HostConfig, Timing

    node = tmp_path / "n.xml"
    node.write_text(node_xml(topo.guests))
    hosts = tuple(
        HostConfig(name=n, uri=f"test://{node}", subnets=(topo.subnet,)) for n in ("a", "b")
    )
    fleet = Fleet(Config(hosts=hosts, source="<test>", timing=Timing(refresh_interval=0)))
    calls = 0

    async def in_namespace(
        host: str, subnets: Sequence[str] | None, options: SweepOptions
    ) -> list[SourceResult]:
        nonlocal calls
        calls += 1
        argv = sweep_argv(host, subnets, options)
        return (await run_sweep_argv(topo.in_host(*argv), timeout=60)).results

    mono = [1000.0]
    scanner = IpScanner(
        fleet,
        local_sweeper=in_namespace,
        libvirt_interval=0,
        sweep_interval=600,
        mono=lambda: mono[0],
    )
    scanner.attach()
    await fleet.start()
    try:
        await fleet.wait_settled(10)
        a, b = await scanner.scan(libvirt=False)
        assert calls == 1
        assert {r.host for r in a.results} == {"a"} and {r.host for r in b.results} == {"b"}
        # Background passes (no recheck) one after the other, within half the sweep
        # interval: they take the sweep that just ended. A person's scan sweeps again.
        for host in ("a", "b"):
            scan = await scanner.scan_host(host, libvirt=False, sweep=True, recheck=False)
            assert calls == 1 and {r.host for r in scan.results} == {host}
            assert any(s.ip for r in scan.results for s in r.sightings)
        await scanner.scan_host("b", libvirt=False, sweep=True)
        assert calls == 2
        mono[0] += 301  # more than half the sweep interval after that sweep: a fresh one
        await scanner.scan_host("a", libvirt=False, sweep=True, recheck=False)
        assert calls == 3
        answering = topo.answering(ANSWERS, NO_ICMP)
        for host in ("a", "b"):
            for g in topo.guests:
                ips = {s.ip for s in fleet.find(f"{host}/{g.name}").ips}
                assert ips == ({g.ip} if g.ip in answering else set())
    finally:
        await fleet.aclose()
