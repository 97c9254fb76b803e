"""Reservations against a real libvirtd: the format others read, persistence, two live clients.

Every client here is independent: its own ``Fleet``, its own libvirt connection, its own
host threads, and no polling (``refresh_interval=0``), so what one sees of another's writes
came through libvirt's metadata-change events, and concurrent writes really overlap in the
daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
import pytest

from catkeeper.backend import reservations
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import (
    ReservationConflict,
    ReservationError,
    WriteDenied,
)
from catkeeper.backend.reservations import metadata as rx
from catkeeper.config import Config, HostConfig, Timing
from catkeeper.model import VM, HostState, Reservation
from tests.daemons import DomainFactory, LibvirtDaemon, tcg_domain_xml, unique_domain_name

pytestmark = pytest.mark.daemon

HOST = "qemu"
NS = rx.NAMESPACE
EVENTS_ONLY = Timing(connect_timeout=10, call_timeout=30, refresh_interval=0, backoff_initial=0.2)


def config(uri: str = "qemu:///system") -> Config:
    return Config(hosts=(HostConfig(name=HOST, uri=uri),), source="<test>", timing=EVENTS_ONLY)


@contextlib.asynccontextmanager
async def open_fleet(uri: str = "qemu:///system", *, up: bool = True) -> AsyncIterator[Fleet]:
    fleet = Fleet(config(uri))
    await fleet.start()
    try:
        assert await fleet.wait_settled(20)
        session = fleet.session(HOST)
        assert session.connected
        if up:
            assert session.host.state is HostState.UP, session.host.error
        yield fleet
    finally:
        await fleet.aclose()


async def until(check: Callable[[], object], timeout: float, what: str = "condition") -> float:
    """Seconds until ``check()`` held (checked every 5 ms); fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def vm_in(fleet: Fleet, uuid: str) -> VM:
    session = fleet.session(HOST)
    await until(lambda: uuid in session.vms, 5, "the domain in the inventory")
    return session.vms[uuid]


def virsh_metadata(name: str, *extra: str) -> Reservation | None:
    """What any other tool gets: ``virsh metadata NAME NAMESPACE``, parsed independently."""
    proc = subprocess.run(
        ["virsh", "-c", "qemu:///system", "metadata", name, NS, *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0 and "metadata not found" in proc.stderr:
        return None
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    return rx.from_string(out)


def lock_elements(dom: libvirt.virDomain) -> list[rx.LockSlot]:
    return rx.lock_slots(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) + rx.lock_slots(
        dom.XMLDesc(0)
    )


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """``chattr +i``: even root cannot replace the file, so libvirt fails to save it."""
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


# ---------------------------------------------------------------------------------------
# The stored format, and what survives


async def test_round_trip_readable_by_virsh_and_survives_a_guest_restart(
    tcg_domain: DomainFactory,
) -> None:
    dom = tcg_domain(start=True)
    until_ts = time.time() + 3 * 86400
    async with open_fleet() as fleet:
        vm = await vm_in(fleet, dom.UUIDString())
        change = await reservations.reserve(
            fleet, vm, note="bisecting kernel <5.15>", until=until_ts, contact="a@x", me="alice"
        )
        stored = change.after
        assert stored is not None and stored.revision == 1
        assert stored.owner == "alice" and stored.until == int(until_ts)
        # Our own inventory has it at once (re-read after the write).
        assert fleet.session(HOST).vms[vm.uuid].reservation == stored
        # Both copies, as another tool reads them.
        assert virsh_metadata(dom.name()) == stored
        assert virsh_metadata(dom.name(), "--config") == stored
        # The lock elements are gone again.
        assert lock_elements(dom) == []

        await asyncio.to_thread(dom.destroy)
        assert virsh_metadata(dom.name()) == stored  # now the config
        await asyncio.to_thread(dom.create)
        assert virsh_metadata(dom.name()) == stored  # the live state, copied from the config
        await until(
            lambda: fleet.session(HOST).vms[vm.uuid].reservation == stored, 5, "re-read after start"
        )


async def test_survives_a_daemon_restart(
    tcg_domain: DomainFactory, restart_libvirtd: Callable[[], float]
) -> None:
    running = tcg_domain(start=True)
    stopped = tcg_domain()
    async with open_fleet() as fleet:
        for dom in (running, stopped):
            vm = await vm_in(fleet, dom.UUIDString())
            await reservations.reserve(fleet, vm, note=f"keep {dom.name()}", me="alice")
    took = await asyncio.to_thread(restart_libvirtd)
    print(f"\nlibvirtd restarted in {took:.1f} s")
    for dom in (running, stopped):
        res = virsh_metadata(dom.name(), "--config")
        assert res is not None and res.note == f"keep {dom.name()}" and res.owner == "alice"
        assert virsh_metadata(dom.name()) == res
    async with open_fleet() as fleet:  # a fresh client reads them from the restarted daemon
        for dom in (running, stopped):
            vm = await vm_in(fleet, dom.UUIDString())
            assert vm.reservation is not None and vm.reservation.note == f"keep {dom.name()}"


async def test_transient_domain_has_only_a_live_copy(libvirtd: LibvirtDaemon) -> None:
    conn = libvirtd.open()
    dom = conn.createXML(tcg_domain_xml(unique_domain_name()), 0)
    try:
        async with open_fleet() as fleet:
            vm = await vm_in(fleet, dom.UUIDString())
            assert not vm.persistent
            change = await reservations.reserve(fleet, vm, note="scratch", me="alice")
            assert virsh_metadata(dom.name()) == change.after
            assert lock_elements(dom) == []
            released = await reservations.release(
                fleet, fleet.session(HOST).vms[vm.uuid], me="alice"
            )
            assert released.action == "released"
            assert virsh_metadata(dom.name()) is None
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        conn.close()


# ---------------------------------------------------------------------------------------
# Two clients


async def test_another_client_sees_a_reservation_within_a_second(
    tcg_domain: DomainFactory,
) -> None:
    dom = tcg_domain(start=True)
    uuid = dom.UUIDString()
    async with open_fleet() as alice, open_fleet() as bob:
        vm_a = await vm_in(alice, uuid)
        await vm_in(bob, uuid)
        latencies = []
        view = bob.session(HOST).vms
        for i in range(5):
            started = time.monotonic()
            change = await reservations.reserve(
                alice, alice.session(HOST).vms[uuid], note=f"take {i}", me="alice"
            )
            wrote = time.monotonic() - started
            want = change.after
            seen = await until(lambda: view[uuid].reservation == want, 10.0, "bob")  # noqa: B023
            latencies.append(wrote + seen)
        # bob's fleet does not poll (refresh_interval=0): the metadata event brought each one.
        print(
            f"\nbob saw alice's write {max(latencies) * 1000:.0f} ms (worst of 5) after she began"
        )
        assert vm_a.reservation is None  # the VM objects are snapshots; views moved on


async def test_stale_write_is_refused_naming_the_holder(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain()
    uuid = dom.UUIDString()
    async with open_fleet() as alice, open_fleet() as bob:
        bob_saw = await vm_in(bob, uuid)  # free, as bob's screen shows it
        await reservations.reserve(
            alice, await vm_in(alice, uuid), note="bisecting kernel", me="alice"
        )
        # Bob's screen is stale: he claims from a view older than alice's write.
        with pytest.raises(ReservationConflict) as info:
            await reservations.reserve(bob, bob_saw, note="mine now", me="bob", take_over=True)
        assert info.value.reason == "stale"
        assert info.value.holder is not None and info.value.holder.owner == "alice"
        assert "alice reserved this VM just now" in str(info.value)
        assert '"bisecting kernel"' in str(info.value)
        # Even with a fresh view, alice's live reservation needs an explicit take-over.
        fresh = await vm_in(bob, uuid)
        await until(lambda: bob.session(HOST).vms[uuid].reservation is not None, 1, "event")
        fresh = bob.session(HOST).vms[uuid]
        with pytest.raises(ReservationConflict) as info:
            await reservations.reserve(bob, fresh, note="mine now", me="bob")
        assert info.value.reason == "held"
        assert str(info.value).startswith(f"{HOST}/{dom.name()} is reserved by alice")
        stored = virsh_metadata(dom.name())
        assert stored is not None and stored.owner == "alice" and stored.revision == 1
        taken = await reservations.reserve(bob, fresh, note="mine now", me="bob", take_over=True)
        assert taken.action == "took-over" and taken.after is not None
        assert virsh_metadata(dom.name()) == taken.after


@dataclass
class Tally:
    wins: list[tuple[str, int, int, str]] = field(default_factory=list)  # who, seen, got, tag
    refusals: list[tuple[str, int, ReservationConflict]] = field(default_factory=list)


async def _writer(fleet: Fleet, uuid: str, name: str, attempts: int, tally: Tally) -> None:
    view = fleet.session(HOST).vms
    for i in range(attempts):
        vm = view[uuid]
        seen = vm.reservation
        assert seen is not None
        tag = f"{name}{i}"
        try:
            # Each write appends its tag to the note it saw: a lost update loses a tag.
            change = await reservations.reserve(
                fleet, vm, note=f"{seen.note} {tag}", owner=name, me=name, take_over=True
            )
        except ReservationConflict as exc:
            tally.refusals.append((name, seen.revision, exc))
        else:
            assert change.after is not None
            tally.wins.append((name, seen.revision, change.after.revision, tag))
        await asyncio.sleep(0)  # let the events in


async def test_interleaved_writes_from_two_clients_lose_nothing(
    tcg_domain: DomainFactory,
) -> None:
    dom = tcg_domain(start=True)
    uuid = dom.UUIDString()
    attempts = 100  # per client: 200 interleaved writes in all
    async with open_fleet() as alice, open_fleet() as bob:
        first = await reservations.reserve(alice, await vm_in(alice, uuid), note="log:", me="alice")
        assert first.after is not None
        start_rev = first.after.revision
        await until(lambda: bob.session(HOST).vms[uuid].reservation == first.after, 1, "bob")
        tally = Tally()
        started = time.monotonic()
        await asyncio.gather(
            _writer(alice, uuid, "alice", attempts, tally),
            _writer(bob, uuid, "bob", attempts, tally),
        )
        took = time.monotonic() - started
    final = virsh_metadata(dom.name())
    assert final is not None and virsh_metadata(dom.name(), "--config") == final
    wins = sorted(tally.wins, key=lambda w: w[2])
    by = {n: sum(1 for w in wins if w[0] == n) for n in ("alice", "bob")}
    print(
        f"\n{2 * attempts} attempts in {took:.1f} s: {len(wins)} written "
        f"(alice {by['alice']}, bob {by['bob']}), {len(tally.refusals)} refused as stale; "
        f"final revision {final.revision}"
    )
    assert len(wins) + len(tally.refusals) == 2 * attempts
    assert by["alice"] > 0 and by["bob"] > 0  # they did interleave
    # No lost update: every write got its own revision, one after the other, each built on
    # the one before it, and the note holds every written tag in that order.
    assert [w[2] for w in wins] == list(range(start_rev + 1, start_rev + 1 + len(wins)))
    assert all(got == seen + 1 for _n, seen, got, _t in wins)
    assert final.revision == start_rev + len(wins)
    assert final.note == "log: " + " ".join(w[3] for w in wins)
    # Every refusal was genuine: the writer's view was behind a revision someone wrote.
    written = {w[2] for w in wins}
    for _name, seen_rev, exc in tally.refusals:
        assert exc.reason == "stale", exc
        assert exc.holder is not None
        assert exc.holder.revision > seen_rev and exc.holder.revision in written
    assert lock_elements(dom) == []


# ---------------------------------------------------------------------------------------
# Nothing half-written


async def test_libvirt_refusing_a_read_only_client_leaves_nothing_behind(
    tcg_domain: DomainFactory,
) -> None:
    dom = tcg_domain(start=True)
    async with open_fleet() as writable:
        vm = await vm_in(writable, dom.UUIDString())
    # A client that believes it may write, on the daemon's read-only socket: the refusal
    # comes from libvirt itself, not from catkeeper's own read-only check. (Its inventory is
    # degraded: the secure XML is forbidden too; the VM comes from a writable client.)
    ro_socket = "qemu:///system?socket=/run/libvirt/libvirt-sock-ro"
    async with open_fleet(ro_socket, up=False) as fleet:
        assert not fleet.session(HOST).readonly
        with pytest.raises(WriteDenied) as info:
            await reservations.reserve(fleet, vm, note="nope", me="alice")
    assert "read only access prevents" in str(info.value)
    assert str(info.value).endswith("nothing was changed")
    assert virsh_metadata(dom.name()) is None
    assert virsh_metadata(dom.name(), "--config") is None
    assert lock_elements(dom) == []


async def test_a_failed_live_save_is_rolled_back(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(start=True)
    status_file = Path(f"/run/libvirt/qemu/{dom.name()}.xml")
    assert status_file.exists()
    async with open_fleet() as fleet:
        vm = await vm_in(fleet, dom.UUIDString())
        before = (await reservations.reserve(fleet, vm, note="before", me="alice")).after
        assert before is not None
        vm = fleet.session(HOST).vms[vm.uuid]
        with immutable(status_file):
            # Control: a bare write changes the live definition in memory, then fails saving
            # it, and leaves the copies differing. This is what catkeeper has to undo.
            probe = rx.record_to_string(rx.Record(99, Reservation(owner="probe", revision=99)))
            flags = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
            with pytest.raises(libvirt.libvirtError, match="Operation not permitted"):
                dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, probe, "catkeeper", NS, flags)
            probed = virsh_metadata(dom.name())
            assert probed is not None and probed.owner == "probe"
            assert virsh_metadata(dom.name(), "--config") == before
            # Undo the control by hand (saving fails again; memory is what counts here).
            with contextlib.suppress(libvirt.libvirtError):
                dom.setMetadata(
                    libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                    rx.to_string(before),
                    "catkeeper",
                    NS,
                    libvirt.VIR_DOMAIN_AFFECT_LIVE,
                )
            assert virsh_metadata(dom.name()) == before

            with pytest.raises(ReservationError) as info:
                await reservations.extend(fleet, vm, time.time() + 3600, me="alice")
            assert str(info.value).endswith("; nothing was changed"), str(info.value)
            assert virsh_metadata(dom.name()) == before
            assert virsh_metadata(dom.name(), "--config") == before
        assert lock_elements(dom) == []
        # And the next write goes through as usual, from the same revision.
        after = await reservations.extend(fleet, vm, time.time() + 3600, me="alice")
        assert after.after is not None and after.after.revision == before.revision + 1


async def test_a_failed_config_save_writes_nothing(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain()
    config_file = Path(f"/etc/libvirt/qemu/{dom.name()}.xml")
    async with open_fleet() as fleet:
        vm = await vm_in(fleet, dom.UUIDString())
        with immutable(config_file):
            with pytest.raises(ReservationError) as info:
                await reservations.reserve(fleet, vm, note="nope", me="alice")
            assert "nothing was changed" in str(info.value)
            assert virsh_metadata(dom.name(), "--config") is None
            assert lock_elements(dom) == []
