"""The backend against real libvirt test-driver hosts: inventory, concurrency, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from catkeeper.backend.events import FleetEvent, HostChanged, InventoryLoaded, VmChanged
from catkeeper.backend.fleet import Fleet, UnknownHost
from catkeeper.config import Timing
from catkeeper.demo.fleetgen import write_fleet
from catkeeper.model import VM, HostState, VmState
from tests.fleet_helpers import expected_from_node, fleet_config


@pytest.fixture
def three_hosts(tmp_path: Path) -> list[Path]:
    return write_fleet(tmp_path, hosts=3, vms_per_host=25, seed=7)


async def test_inventory_equals_the_node_files(three_hosts: list[Path]) -> None:
    config = fleet_config([(p.stem, f"test://{p}") for p in three_hosts])
    fleet = Fleet(config)
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        for path in three_hosts:
            expected = expected_from_node(path)
            session = fleet.session(path.stem)
            assert session.host.state is HostState.UP
            assert session.host.vm_count == len(expected) == 25
            got = {vm.name: vm for vm in session.vms.values()}
            assert set(got) == set(expected)
            for name, want in expected.items():
                vm = got[name]
                assert vm.uuid == want.uuid
                assert vm.state.value == want.state
                assert tuple(n.mac for n in vm.nics) == want.macs
                assert tuple(g.port for g in vm.graphics if g.type == "vnc" and g.port) == (
                    want.vnc_ports
                )
                assert not vm.stale
    finally:
        await fleet.aclose()


class _Blackhole:
    """A TCP listener that accepts and never says a word: a hung host."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def blackhole() -> Iterator[_Blackhole]:
    hole = _Blackhole()
    yield hole
    hole.close()


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dead_and_hung_hosts_do_not_hold_up_the_others(
    three_hosts: list[Path], blackhole: _Blackhole
) -> None:
    uris = [(p.stem, f"test://{p}") for p in three_hosts]
    uris += [
        ("refused", f"qemu+tcp://127.0.0.1:{_refused_port()}/system"),
        ("hung", f"qemu+tcp://127.0.0.1:{blackhole.port}/system"),
    ]
    timing = Timing(connect_timeout=1.5, call_timeout=2, refresh_interval=0, backoff_initial=30)
    fleet = Fleet(fleet_config(uris, timing=timing))
    seen: list[FleetEvent] = []
    fleet.subscribe(seen.append)
    await fleet.start()
    try:
        # The healthy hosts' rows arrive while the hung host is still trying to connect.
        await asyncio.wait_for(_until_loaded(seen, 3), 10 * timing.connect_timeout)
        assert fleet.session("hung").host.state is HostState.CONNECTING
        assert await fleet.wait_settled(10 * timing.connect_timeout)
        hosts = {h.name: h for h in fleet.hosts()}
        assert hosts["refused"].state is HostState.UNREACHABLE
        assert "Connection refused" in (hosts["refused"].error or "")
        assert hosts["hung"].state is HostState.UNREACHABLE
        assert "timed out after 1.5 s" in (hosts["hung"].error or "")
        assert all(hosts[p.stem].state is HostState.UP for p in three_hosts)
        assert len(fleet.vms()) == 75
        states = [
            e.host.state for e in seen if isinstance(e, HostChanged) and e.host.name == "hung"
        ]
        assert states[-1] is HostState.UNREACHABLE
    finally:
        await fleet.aclose()


async def _until_loaded(seen: list[FleetEvent], hosts: int) -> None:
    while sum(isinstance(e, InventoryLoaded) for e in seen) < hosts:
        await asyncio.sleep(0.01)


async def test_unreachable_host_is_retried_with_backoff(tmp_path: Path) -> None:
    port = _refused_port()
    timing = Timing(
        connect_timeout=1,
        call_timeout=2,
        refresh_interval=0,
        backoff_initial=0.1,
        backoff_max=0.4,
        backoff_jitter=0,
    )
    errors = await _failure_times("later", port, timing, seconds=1.6)
    gaps = [b - a for a, b in itertools.pairwise(errors)]
    # 0.1, 0.2, 0.4, 0.4, ...: doubling, then capped.
    assert len(errors) >= 4
    assert gaps[0] < gaps[1] < gaps[2] + 0.05
    assert max(gaps) < 0.4 + 0.3


async def test_reconnect_delays_are_cut_at_random_by_up_to_the_jitter() -> None:
    """Each delay is drawn between (1 - backoff_jitter) and all of the nominal one, so
    retries fall out of step with a host that flaps at their own period. The session's
    random source is seeded here: the draws are known, the gaps follow them."""
    timing = Timing(
        connect_timeout=1,
        call_timeout=2,
        refresh_interval=0,
        backoff_initial=0.4,
        backoff_max=0.4,
        backoff_jitter=0.5,
    )
    draws = random.Random(11)
    delays = [0.4 * (1 - 0.5 * draws.random()) for _ in range(6)]
    assert min(delays) < 0.3 < max(delays)  # the seed gives short and long ones
    errors = await _failure_times("later", _refused_port(), timing, seconds=2.6, seed=11)
    gaps = [b - a for a, b in itertools.pairwise(errors)]
    assert len(gaps) >= 4, errors
    for gap, delay in zip(gaps, delays, strict=False):
        assert delay - 0.02 < gap < delay + 0.15, (gaps, delays)
    assert min(gaps) < 0.3  # exact delays would keep every gap at 0.4 or more


async def _failure_times(
    name: str, port: int, timing: Timing, *, seconds: float, seed: int | None = None
) -> list[float]:
    """When host ``name`` at a refused ``port`` is reported unreachable, over ``seconds``."""
    fleet = Fleet(fleet_config([(name, f"qemu+tcp://127.0.0.1:{port}/system")], timing=timing))
    if seed is not None:
        fleet.session(name).chance = random.Random(seed)
    errors: list[float] = []
    fleet.subscribe(
        lambda e: (
            errors.append(time.monotonic())
            if isinstance(e, HostChanged) and e.host.state is HostState.UNREACHABLE
            else None
        )
    )
    await fleet.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        await fleet.aclose()
    return errors


async def test_events_within_one_connection_update_without_polling(tmp_path: Path) -> None:
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=6, seed=3)
    fleet = Fleet(fleet_config([("h", f"test://{path}")]))
    await fleet.start()
    try:
        await fleet.wait_settled(5)
        session = fleet.session("h")
        running = next(vm for vm in session.vms.values() if vm.state is VmState.RUNNING)
        # The test driver only reports events to the connection that made the change, so
        # the change goes through the session's own connection; refresh_interval is 0.
        await session.call_domain(running.uuid, lambda d: d.destroy())
        for _ in range(100):
            if session.vms[running.uuid].state is VmState.SHUTOFF:
                break
            await asyncio.sleep(0.02)
        assert session.vms[running.uuid].state is VmState.SHUTOFF
    finally:
        await fleet.aclose()


async def test_a_shut_off_domain_an_event_brought_in_stays_through_running_only_refreshes(
    tmp_path: Path,
) -> None:
    """A domain defined after the load comes in through its event, never listed by a bulk
    read; the warm refreshes that list only running domains must not take it for gone, and
    the full listing after them (every FULL_LISTING_EVERY-th) keeps it too."""
    from catkeeper.backend.host.reads import FULL_LISTING_EVERY

    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=6, seed=3)
    timing = Timing(connect_timeout=3, call_timeout=5, refresh_interval=0.05)
    fleet = Fleet(fleet_config([("h", f"test://{path}")], timing=timing))
    await fleet.start()
    try:
        await fleet.wait_settled(5)
        session = fleet.session("h")
        xml = (
            "<domain type='test'><name>defined-later</name><memory unit='MiB'>256</memory>"
            "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
        )
        # The test driver reports events to the connection that made the change only.
        uuid = await session.call(lambda c: c.defineXML(xml).UUIDString())
        for _ in range(100):
            if uuid in session.vms:
                break
            await asyncio.sleep(0.02)
        assert session.vms[uuid].state is VmState.SHUTOFF
        seen = session._warm_refreshes
        present = []
        while session._warm_refreshes < seen + FULL_LISTING_EVERY + 2:
            present.append(uuid in session.vms)
            await asyncio.sleep(0.01)
        assert all(present) and uuid in session.vms
        assert uuid in session._signatures  # listed by the full read since
    finally:
        await fleet.aclose()


async def test_readonly_connection_reads_but_refuses_changes(tmp_path: Path) -> None:
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=4, seed=5)
    fleet = Fleet(fleet_config([("h", f"test://{path}")]), readonly=True)
    await fleet.start()
    try:
        await fleet.wait_settled(5)
        session = fleet.session("h")
        assert session.host.readonly and len(session.vms) == 4
        vm = next(iter(session.vms.values()))
        # A read-only connection cannot read the secure XML: password presence is unknown.
        assert all(g.has_password is None for g in vm.graphics)
        import libvirt

        with pytest.raises(libvirt.libvirtError, match=r"read only|read-only"):
            await session.call_domain(vm.uuid, lambda d: d.setAutostart(1))
    finally:
        await fleet.aclose()


def test_unknown_host_is_named(tmp_path: Path) -> None:
    (path,) = write_fleet(tmp_path, hosts=1, vms_per_host=1)
    with pytest.raises(UnknownHost, match="no host named nope"):
        Fleet(fleet_config([("h", f"test://{path}")]), only=["nope"])


async def test_find_by_ref(tmp_path: Path) -> None:
    paths = write_fleet(tmp_path, hosts=2, vms_per_host=3, seed=1)
    fleet = Fleet(fleet_config([(p.stem, f"test://{p}") for p in paths]))
    await fleet.start()
    try:
        await fleet.wait_settled(5)
        vm = fleet.vms()[0]
        assert fleet.find(vm.ref) == vm
        assert fleet.find(f"{vm.host}/{vm.uuid}") == vm
        assert fleet.find(vm.uuid) == vm
    finally:
        await fleet.aclose()


async def test_new_addresses_redecorate_only_the_vms_with_those_macs(tmp_path: Path) -> None:
    """``redecorate_macs``: the VMs owning a changed MAC are decorated again, no other VM is
    even looked at, and a VM whose NIC no longer has that MAC is not touched."""
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=6, seed=11)
    fleet = Fleet(fleet_config([("h", f"test://{node}")]))
    events: list[FleetEvent] = []
    fleet.subscribe(events.append)
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        session = fleet.session("h")
        with_nic = [vm for vm in session.vms.values() if vm.nics]
        assert len(with_nic) >= 2
        target, other = with_nic[0], with_nic[1]
        mac = target.nics[0].mac
        looked_at: list[str] = []

        def decorate(vm: VM) -> VM:
            looked_at.append(vm.name)
            return dataclasses.replace(vm, title=f"seen {mac}") if vm.uuid == target.uuid else vm

        session.decorate = decorate
        events.clear()
        session.redecorate_macs({mac, "52:54:00:ff:ff:ff"})  # one unknown MAC: nothing
        assert looked_at == [target.name]
        (changed,) = [e.vm for e in events if isinstance(e, VmChanged)]
        assert changed.uuid == target.uuid and changed.title == f"seen {mac}"
        # The other VM's NIC changes MAC (say an XML edit) after being indexed under it:
        moved = dataclasses.replace(other, nics=(dataclasses.replace(other.nics[0], mac=mac),))
        session.vms[other.uuid] = session._decorated(moved)
        session.vms[target.uuid] = dataclasses.replace(target, nics=())
        looked_at.clear()
        session.redecorate_macs({mac})
        assert looked_at == [other.name]  # the target no longer has it; the other does now
        # MACs of VMs long gone do not pile up: past 4 per VM the index starts again.
        session._by_mac.update(
            {f"52:54:00:00:{i // 256:02x}:{i % 256:02x}": {"x"} for i in range(200)}
        )
        session.redecorate_macs(set())
        here = {nic.mac for vm in session.vms.values() for nic in vm.nics}
        assert set(session._by_mac) == here
    finally:
        await fleet.aclose()


async def test_every_vm_of_a_big_cold_load_is_found_by_its_mac(tmp_path: Path) -> None:
    """Over 64 VMs: the MAC index must hold them all after the load (a bound once checked
    while the load built its VMs wiped it again and again)."""
    (node,) = write_fleet(tmp_path, hosts=1, vms_per_host=150, seed=12)
    fleet = Fleet(fleet_config([("h", f"test://{node}")]))
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        session = fleet.session("h")
        first = next(vm for vm in session.vms.values() if vm.nics)
        seen: list[str] = []

        def decorate(vm: VM) -> VM:
            seen.append(vm.name)
            return vm

        session.decorate = decorate
        session.redecorate_macs({first.nics[0].mac})
        assert seen == [first.name]
        here = {nic.mac for vm in session.vms.values() for nic in vm.nics}
        assert len(here) > 64 and set(session._by_mac) == here
    finally:
        await fleet.aclose()


def test_reading_xml_parses_in_turns_with_other_readers(three_hosts: list[Path]) -> None:
    """The parsing of domain XML waits for a free turn (two hosts' threads at a time), so
    twenty hosts reloading at once do not crowd the event loop off the GIL."""
    import libvirt

    from catkeeper.backend.host.reads import PYTHON_WORK, read_xml
    from catkeeper.backend.inventory import StaticInfo

    conn = libvirt.open(f"test://{three_hosts[0]}")
    try:
        domains = conn.listAllDomains()
        done = threading.Event()
        result: dict[str, StaticInfo | BaseException] = {}

        def read() -> None:
            result.update(read_xml(domains, secure=False))
            done.set()

        # Polled with sleeps, not Event.wait(timeout): under faketime a timed wait on a
        # lock never times out (the suite runs these tests five years ahead).
        def finished_within(ticks: int) -> bool:
            for _ in range(ticks):
                if done.is_set():
                    return True
                time.sleep(0.01)
            return done.is_set()

        PYTHON_WORK.acquire()
        PYTHON_WORK.acquire()  # both turns taken, as by two other hosts' threads
        try:
            threading.Thread(target=read, daemon=True).start()
            assert not finished_within(30)  # the XML was fetched; the parsing waits
        finally:
            PYTHON_WORK.release()
            PYTHON_WORK.release()
        assert finished_within(1000)
        expected = expected_from_node(three_hosts[0])
        names = [info.name for info in result.values() if isinstance(info, StaticInfo)]
        assert sorted(names) == sorted(expected)
    finally:
        conn.close()


def test_background_rereads_parse_one_host_at_a_time(three_hosts: list[Path]) -> None:
    """A reconnect's re-read of the XML (nobody waits for it) parses in one process-wide
    turn; a read somebody waits for (a cold load) does not queue behind it."""
    import libvirt

    from catkeeper.backend.host.reads import RECHECK_WORK, read_xml

    conn = libvirt.open(f"test://{three_hosts[0]}")
    try:
        domains = conn.listAllDomains()
        done = {"background": threading.Event(), "wanted": threading.Event()}

        def read(kind: str) -> None:
            read_xml(domains, secure=False, background=kind == "background")
            done[kind].set()

        def finished_within(kind: str, ticks: int) -> bool:  # polled: see the test above
            for _ in range(ticks):
                if done[kind].is_set():
                    return True
                time.sleep(0.01)
            return done[kind].is_set()

        RECHECK_WORK.acquire()  # another host's re-read is parsing
        try:
            threading.Thread(target=read, args=("background",), daemon=True).start()
            threading.Thread(target=read, args=("wanted",), daemon=True).start()
            assert finished_within("wanted", 1000)
            assert not done["background"].is_set()
        finally:
            RECHECK_WORK.release()
        assert finished_within("background", 1000)
    finally:
        conn.close()


class _CountingConnection:
    """A real test-driver connection that counts the connection-level calls made on it."""

    def __init__(self, conn: object) -> None:
        self._conn = conn
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.calls.append(name)
        return getattr(self._conn, name)


def test_a_running_only_refresh_carries_the_shut_off_domains_until_one_may_have_changed(
    three_hosts: list[Path],
) -> None:
    """Most warm refreshes list the running domains only; a running domain that stopped, or
    a shut-off one whose autostart moved, makes the same read list every domain."""
    import libvirt

    from catkeeper.backend.host.reads import read_bulk

    conn = libvirt.open(f"test://{three_hosts[0]}")
    try:
        cold = read_bulk(conn)
        off = [d for d in conn.listAllDomains() if not d.isActive()]
        on = [d for d in conn.listAllDomains() if d.isActive()]
        assert off and len(on) > 1

        def refresh(previous: dict) -> tuple:  # type: ignore[type-arg]
            counting = _CountingConnection(conn)
            bulk = read_bulk(counting, previous, facts=cold.facts, running_only=True)
            return bulk, counting.calls.count("getAllDomainStats")

        quiet, calls = refresh(cold.signatures)
        assert calls == 1 and not quiet.full and quiet.changed == []
        assert quiet.signatures == cold.signatures  # the shut-off ones carried over

        started = off[0]
        started.create()
        seen, calls = refresh(quiet.signatures)
        assert calls == 1 and not seen.full  # a start shows in the running list itself
        assert seen.changed == [started.UUIDString()]
        assert seen.states == {started.UUIDString(): VmState.RUNNING}

        stopped = on[0]
        stopped.destroy()
        seen, calls = refresh(seen.signatures)
        assert calls == 2 and seen.full  # gone from the running list: stopped, or undefined?
        assert seen.changed == [stopped.UUIDString()]
        assert seen.states == {stopped.UUIDString(): VmState.SHUTOFF}
        assert seen.signatures.keys() == cold.signatures.keys()

        stopped.setAutostart(not stopped.autostart())  # shut off: no running list shows it
        flipped, calls = refresh(seen.signatures)
        assert calls == 2 and flipped.full and flipped.changed == [stopped.UUIDString()]
        assert (stopped.UUIDString() in flipped.autostart) == bool(stopped.autostart())

        # Undefined behind our back (its event missed): carried as it was until the next
        # full listing (one refresh in FULL_LISTING_EVERY), which drops it.
        quiet, calls = refresh(flipped.signatures)
        assert calls == 1 and not quiet.full
        undefined = next(d for d in conn.listAllDomains() if not d.isActive() and not d.autostart())
        uuid = undefined.UUIDString()
        undefined.undefine()
        gone, calls = refresh(quiet.signatures)
        assert calls == 1 and uuid in gone.signatures and gone.changed == []
        listed = read_bulk(conn, gone.signatures, facts=cold.facts)
        assert listed.full and uuid not in listed.signatures
    finally:
        conn.close()


def test_a_warm_refresh_asks_the_host_only_what_can_change(three_hosts: list[Path]) -> None:
    """Size, hypervisor and version are read once per connection; each refresh asks free
    memory (timed: the host's latency), the autostart and transient lists, the stats."""
    import libvirt

    from catkeeper.backend.host.reads import read_bulk, read_facts

    conn = libvirt.open(f"test://{three_hosts[0]}")
    try:
        first = _CountingConnection(conn)
        cold = read_bulk(first)
        assert {"getInfo", "getType", "getLibVersion"} <= set(first.calls)
        info = conn.getInfo()
        assert cold.facts == read_facts(conn)
        assert (cold.facts.cpus, cold.facts.memory_kib) == (info[2], info[1] * 1024)
        assert cold.facts.hypervisor == conn.getType() == "TEST"
        warm = _CountingConnection(conn)
        again = read_bulk(warm, cold.signatures, facts=cold.facts)
        assert sorted(warm.calls) == sorted(
            ["getFreeMemory", "listAllDomains", "listAllDomains", "getAllDomainStats"]
        )
        assert again.changed == [] and again.capacity == cold.capacity
        assert again.capacity.free_memory_kib == conn.getFreeMemory() // 1024
        assert again.latency_ms >= 0
        # Nothing changed: no per-domain data goes back to the event loop (it is freed there).
        assert again.states == {} and again.stats == {} and again.domains == {}
        assert again.signatures == cold.signatures and len(again.uuids) == len(cold.uuids) > 1
        dom = next(d for d in conn.listAllDomains() if d.isActive())
        dom.suspend()
        paused = read_bulk(conn, again.signatures, facts=cold.facts)
        assert paused.changed == [dom.UUIDString()]
        assert paused.states == {dom.UUIDString(): VmState.PAUSED}
        assert paused.stats.keys() == paused.domains.keys() == {dom.UUIDString()}
    finally:
        conn.close()
