"""The audit trail on test-driver hosts: what each change records, the ring's bound, the
local log, and that a failing audit write never fails the action it records."""

from __future__ import annotations

import dataclasses
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from catkeeper.backend import actions, audit, metadata_time, reservations
from catkeeper.backend.audit import ring
from catkeeper.backend.audit.store import read_ring
from catkeeper.backend.errors import ReadOnlyError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import metadata as rx
from catkeeper.backend.vm import snapshots, vmops, xmledit
from catkeeper.demo.fleetgen import write_fleet
from catkeeper.model import VM, VmState
from tests.fleet_helpers import fleet_config

HOST = "host01"
NOW = 1_900_000_000.0  # a fixed "now": entries carry the fleet's clock, not the wall's


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture
def node(tmp_path: Path) -> Path:
    return write_fleet(tmp_path / "fleet", 1, 8, seed=7)[0]


def _config(node: Path, **kwargs: Any) -> Any:
    return dataclasses.replace(fleet_config([(HOST, f"test://{node}")], **kwargs), owner="alice")


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
async def fleet(node: Path, clock: list[float]) -> AsyncIterator[Fleet]:
    f = Fleet(_config(node), clock=lambda: clock[0])
    await f.start()
    try:
        assert await f.wait_settled(10)
        yield f
    finally:
        await f.aclose()


def _vm(fleet: Fleet, state: VmState) -> VM:
    return next(v for v in sorted(fleet.vms(), key=lambda v: v.name) if v.state is state)


def _fresh(fleet: Fleet, vm: VM) -> VM:
    return fleet.session(vm.host).vms[vm.uuid]


async def _on_host(fleet: Fleet, vm: VM, fn: Callable[[Any], Any]) -> Any:
    return await fleet.session(vm.host).call_domain(vm.uuid, fn, what="test")


async def _ring(fleet: Fleet, vm: VM, flags: int = 0) -> list[audit.Entry]:
    """The ring as stored, oldest first, read with libvirt's own metadata call."""
    return list(await _on_host(fleet, vm, lambda d: read_ring(d, flags)))


# ---- the format ------------------------------------------------------------------------------


def test_ring_round_trip_and_bound() -> None:
    entries = [ring.entry(NOW + i, "bob", "start", f"#{i} <&> \n  two lines") for i in range(3)]
    assert entries[0].detail == "#0 <&> two lines" and entries[0].when == float(int(NOW))
    xml = ring.to_string(entries)
    elem = ET.fromstring(xml)
    assert elem.tag == "audit" and [e.get("action") for e in elem] == ["start"] * 3
    assert ring.from_string(xml) == entries
    assert ring.from_string("<reservation/>") is None and ring.from_string("<<") is None
    kept: list[audit.Entry] = []
    for i in range(60):
        kept = ring.appended(kept, ring.entry(NOW + i, "bob", "reboot", str(i)))
    assert len(kept) == ring.LIMIT == 50
    assert [e.detail for e in kept] == [str(i) for i in range(10, 60)]
    assert [e.detail for e in ring.newest_first(kept)][:2] == ["59", "58"]
    # Two entries in one second: the later written comes first.
    same = [ring.entry(NOW, "a", "start"), ring.entry(NOW, "a", "destroy")]
    assert [e.action for e in ring.newest_first(same)] == ["destroy", "start"]
    assert len(ring.entry(NOW, "a", "edit-xml", "x" * 1000).detail) == 300


def test_when_text_shows_the_date_when_not_today(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        today = ring.when_text(NOW - 60, NOW)
        assert today == time.strftime("%H:%M:%S", time.gmtime(NOW - 60))
        assert ring.when_text(NOW - 3 * 86400, NOW) == time.strftime(
            "%Y-%m-%d %H:%M", time.gmtime(NOW - 3 * 86400)
        )
    finally:
        monkeypatch.undo()
        time.tzset()


# ---- what changes record ---------------------------------------------------------------------


async def test_lifecycle_actions_record_on_the_host_and_locally(
    fleet: Fleet, clock: list[float], state_home: Path
) -> None:
    vm = _vm(fleet, VmState.SHUTOFF)
    await actions.start(fleet, vm)
    clock[0] += 61
    await actions.ACTIONS["suspend"].fn(fleet, _fresh(fleet, vm))  # the TUI's table
    clock[0] += 5
    await actions.destroy(fleet, _fresh(fleet, vm))
    stored = await _ring(fleet, vm)
    assert [(e.action, e.who, e.when) for e in stored] == [
        ("start", "alice", NOW),
        ("pause", "alice", NOW + 61),
        ("destroy", "alice", NOW + 66),
    ]
    # Shut off now: the persistent config holds the whole ring too.
    assert await _ring(fleet, vm, libvirt.VIR_DOMAIN_AFFECT_CONFIG) == stored
    assert [e.action for e in await audit.read(fleet, vm)] == ["destroy", "pause", "start"]
    lines = [json.loads(x) for x in audit.log_path().read_text().splitlines()]
    assert audit.log_path() == state_home / "catkeeper" / "audit.jsonl"
    assert [(d["host"], d["vm"], d["uuid"], d["action"]) for d in lines] == [
        (HOST, vm.name, vm.uuid, a) for a in ("start", "pause", "destroy")
    ]
    assert lines[0]["when"] == NOW and lines[0]["who"] == "alice"


async def test_a_failed_action_records_nothing(fleet: Fleet) -> None:
    vm = _vm(fleet, VmState.RUNNING)
    with pytest.raises(actions.ActionError):
        await actions.start(fleet, vm)  # already running
    assert await _ring(fleet, vm) == []
    assert audit.read_local() == []


async def test_the_ring_keeps_the_last_50_of_60_actions(fleet: Fleet, clock: list[float]) -> None:
    vm = _vm(fleet, VmState.RUNNING)
    for i in range(30):
        clock[0] = NOW + 2 * i
        await actions.suspend(fleet, _fresh(fleet, vm))
        clock[0] = NOW + 2 * i + 1
        await actions.resume(fleet, _fresh(fleet, vm))
    stored = await _ring(fleet, vm)
    assert len(stored) == 50
    assert stored[0].when == NOW + 10 and stored[-1].when == NOW + 59
    assert [e.action for e in stored[:2]] == ["pause", "resume"]
    assert len(audit.read_local()) == 60  # the local log keeps what the ring drops


async def test_graceful_stop_records_once_and_an_already_off_vm_not_at_all(fleet: Fleet) -> None:
    vm = _vm(fleet, VmState.RUNNING)
    stop = actions.GracefulStop(
        fleet, vm, acpi_wait=5, ctrl_alt_del_wait=5, on_progress=lambda _p: None
    )
    final = await stop.run()
    assert final.stage == "stopped"
    stored = await _ring(fleet, vm)
    assert [e.action for e in stored] == ["stop"]
    assert stored[0].detail.startswith("stopped: shut off")
    again = actions.GracefulStop(
        fleet, _fresh(fleet, vm), acpi_wait=5, ctrl_alt_del_wait=5, on_progress=lambda _p: None
    )
    assert (await again.run()).stage == "stopped"  # "was already shut off": nothing sent
    assert len(await _ring(fleet, vm)) == 1


async def test_reservation_writes_record_beside_the_reservation(fleet: Fleet) -> None:
    vm = _vm(fleet, VmState.SHUTOFF)
    until = NOW + 2 * 86400
    await reservations.reserve(fleet, vm, note="bisecting", until=until, me="bob")
    await reservations.release(fleet, _fresh(fleet, vm), me="bob")
    await reservations.reserve(fleet, _fresh(fleet, vm), note="mine now")
    stored = await _ring(fleet, vm)
    assert [(e.action, e.who) for e in stored] == [
        ("reserve", "bob"),
        ("release", "bob"),
        ("reserve", "alice"),
    ]
    assert stored[0].detail == f"for bob, until {metadata_time.format_time(until)}, 'bisecting'"
    assert stored[1].detail == "was held by bob"
    # The reservation element is untouched by the ring's writes, and the other way round.
    xml = await _on_host(
        fleet, vm, lambda d: d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, rx.NAMESPACE, 0)
    )
    record = rx.record_from_string(xml)
    assert record is not None and record.reservation is not None
    assert record.reservation.owner == "alice" and record.revision == 3
    assert _fresh(fleet, vm).reservation == record.reservation


async def test_vm_operations_record(fleet: Fleet, clock: list[float]) -> None:
    vm = _vm(fleet, VmState.SHUTOFF)
    await snapshots.create_snapshot(fleet, vm, "before")
    await snapshots.revert_snapshot(fleet, _fresh(fleet, vm), "before")
    await snapshots.delete_snapshot(fleet, _fresh(fleet, vm), "before")
    base = await xmledit.get_xml(fleet, _fresh(fleet, vm))
    edited = re.sub(r"(<vcpu[^>]*>)\d+(</vcpu>)", r"\g<1>3\g<2>", base)
    assert edited != base
    await xmledit.apply_xml(fleet, _fresh(fleet, vm), edited, base=base)
    renamed = await vmops.rename(fleet, _fresh(fleet, vm), "renamed01")
    stored = await _ring(fleet, renamed)
    assert [(e.action, e.detail) for e in stored] == [
        ("snapshot-create", "before"),
        ("snapshot-revert", "before"),
        ("snapshot-delete", "before"),
        ("edit-xml", stored[3].detail),
        ("rename", f"from {vm.name} to renamed01"),
    ]
    assert stored[3].detail.endswith("changed")
    assert audit.read_local()[-1]["vm"] == "renamed01"


async def test_clone_records_on_the_new_vm_only(fleet: Fleet) -> None:
    # No disks: the test driver has no pool volumes to copy, and the disks are not the point.
    xml = (
        "<domain type='test'><name>bare01</name><memory unit='KiB'>262144</memory>"
        "<vcpu>1</vcpu><os><type>hvm</type></os></domain>"
    )
    session = fleet.session(HOST)
    uuid = await session.call(lambda c: c.defineXML(xml).UUIDString(), what="test")
    vm = await session.refresh_domain(uuid)
    assert vm is not None
    await actions.start(fleet, vm)
    await actions.destroy(fleet, _fresh(fleet, vm))
    made = await vmops.clone(fleet, _fresh(fleet, vm), "copy01")
    assert [e.action for e in await _ring(fleet, made)] == ["clone"]
    assert (await _ring(fleet, made))[0].detail == f"cloned from {vm.ref} (copy)"
    # The source's own history did not travel into the copy.
    assert [e.action for e in await _ring(fleet, vm)] == ["start", "destroy"]


async def test_delete_goes_to_the_local_log_only(fleet: Fleet) -> None:
    vm = _vm(fleet, VmState.SHUTOFF)
    await vmops.delete(fleet, vm)
    assert [(d["action"], d["vm"]) for d in audit.read_local()] == [("delete", vm.name)]


# ---- failures never fail the action -------------------------------------------------------------


async def test_a_vm_gone_before_the_entry_is_written_is_a_warning(fleet: Fleet) -> None:
    vm = _vm(fleet, VmState.RUNNING)
    warnings: list[str] = []
    stop_watching = audit.watch(fleet, warnings.append)
    # Transient: force off makes it vanish before the entry can be appended to its ring.
    await _on_host(fleet, vm, lambda d: d.undefine())
    await actions.destroy(fleet, _fresh(fleet, vm))  # does not raise
    assert len(warnings) == 1
    assert "destroy" in warnings[0] and "no longer exists" in warnings[0]
    assert [d["action"] for d in audit.read_local()] == ["destroy"]
    stop_watching()
    await actions.start(fleet, _vm(fleet, VmState.SHUTOFF))
    assert len(warnings) == 1


async def test_read_only_host_writes_nothing_to_the_host(node: Path, clock: list[float]) -> None:
    ro = Fleet(_config(node), clock=lambda: clock[0])
    await ro.start()
    try:
        assert await ro.wait_settled(10)
        vm = _vm(ro, VmState.RUNNING)
        warnings: list[str] = []
        audit.watch(ro, warnings.append)
        ro.session(HOST).readonly = True  # e.g. :readonly on in the TUI mid-action
        message = await audit.record(ro, vm, "reboot")
        assert message is not None and "read-only" in message and warnings == [message]
        ro.session(HOST).readonly = False
        assert await _ring(ro, vm) == []
        assert [d["action"] for d in audit.read_local()] == ["reboot"]
        ro.session(HOST).readonly = True
        with pytest.raises(ReadOnlyError):
            await actions.reboot(ro, vm)  # refused before libvirt, so nothing to record
        assert len(audit.read_local()) == 1
    finally:
        await ro.aclose()


async def test_an_unwritable_local_log_is_a_warning_not_a_failure(
    fleet: Fleet, state_home: Path
) -> None:
    state_home.mkdir(parents=True)
    (state_home / "catkeeper").write_text("a file where the directory should be")
    vm = _vm(fleet, VmState.SHUTOFF)
    warnings: list[str] = []
    audit.watch(fleet, warnings.append)
    await actions.start(fleet, vm)
    assert len(warnings) == 1 and "local audit log" in warnings[0]
    assert [e.action for e in await _ring(fleet, vm)] == ["start"]  # the host still has it


def _domain_xml(entries: list[ring.Entry], vcpus: int = 1) -> str:
    """A domain XML with the ring written the way libvirt writes it back."""
    p = ring.PREFIX
    inner = "".join(
        f"<{p}:entry when='{metadata_time.format_time(e.when)}' who='{e.who}' action='{e.action}'/>"
        for e in entries
    )
    return (
        f"<domain type='kvm'>\n  <name>a</name>\n  <vcpu placement='static'>{vcpus}</vcpu>\n"
        f"  <metadata>\n    <{p}:audit xmlns:{p}='{ring.NAMESPACE}'>{inner}</{p}:audit>\n"
        "  </metadata>\n</domain>\n"
    )


def test_an_edit_keeps_the_entries_recorded_while_it_was_open() -> None:
    first = ring.entry(1000.0, "alice", "start")
    later = ring.entry(2000.0, "bob", "shutdown")
    base = _domain_xml([first])
    current = _domain_xml([first, later])
    edited = base.replace(">1</vcpu>", ">2</vcpu>")
    assert ring.without_ring(base) == ring.without_ring(current)  # only the ring differs
    assert ring.without_ring(edited) != ring.without_ring(current)
    kept = ring.keeping_ring(edited, base, current)
    assert ring.ring_of(kept) == ring.ring_of(current)
    assert ring.without_ring(kept) == ring.without_ring(edited)
    # The user edited the ring itself: theirs stands.
    theirs = edited.replace("alice", "mallory")
    assert ring.keeping_ring(theirs, base, current) == theirs
    # No ring yet on either side: nothing to keep.
    plain = (
        "<domain type='kvm'>\n  <name>a</name>\n  <vcpu placement='static'>1</vcpu>\n</domain>\n"
    )
    assert ring.keeping_ring(plain, plain, plain) == plain
    # The first entry came while the editor was open: libvirt added <metadata> for it.
    first_ring = _domain_xml([later])
    assert ring.without_ring(first_ring) == ring.without_ring(plain)
    grown = plain.replace(">1</vcpu>", ">2</vcpu>")
    kept = ring.keeping_ring(grown, plain, first_ring)
    assert ring.ring_of(kept) == ring.ring_of(first_ring)
    assert ring.without_ring(kept) == grown
