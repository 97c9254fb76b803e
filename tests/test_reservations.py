"""Reservations without a daemon: reading ``until``, the element format, the conflict rules,
and the operations against libvirt test-driver hosts (real libvirt, one private copy of the
host per connection)."""

from __future__ import annotations

import dataclasses
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import libvirt
import pytest

from catkeeper.backend import metadata_time, reservations
from catkeeper.backend.errors import NotFound, ReadOnlyError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import (
    InvalidReservation,
    ReservationBusy,
    ReservationConflict,
    ReservationRequest,
    UntilError,
    check_seen,
    parse_until,
    plan_release,
    plan_reserve,
    plan_update,
)
from catkeeper.backend.reservations import metadata as rx
from catkeeper.backend.reservations.metadata import LockSlot, Record
from catkeeper.demo.fleetgen import node_xml
from catkeeper.model import VM, Reservation
from tests.fleet_helpers import fleet_config

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def ts(text: str, tz: ZoneInfo = UTC_ZONE) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


# Wednesday 2026-11-25, 10:00 UTC
NOW = ts("2026-11-25T10:00")
HOUR = 3600.0
DAY = 86400.0


# ---------------------------------------------------------------------------------------
# parse_until


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4h", NOW + 4 * HOUR),
        ("90m", NOW + 90 * 60),
        ("3d", NOW + 3 * DAY),
        ("2w", NOW + 14 * DAY),
        ("1.5h", NOW + 1.5 * HOUR),
        ("1d12h", NOW + 36 * HOUR),
        ("1d 12h", NOW + 36 * HOUR),
        ("+4h", NOW + 4 * HOUR),
        ("in 3 days", NOW + 3 * DAY),
        (" 4 H ", NOW + 4 * HOUR),
        ("2 weeks", NOW + 14 * DAY),
        ("2026-12-01", ts("2026-12-01T23:59")),  # a date: the end of that day
        ("2026-12-1", ts("2026-12-01T23:59")),
        ("2026-12-01T18:00", ts("2026-12-01T18:00")),
        ("2026-12-01 18:00", ts("2026-12-01T18:00")),
        ("2026-12-01t18:00:30", ts("2026-12-01T18:00:30")),
        ("2026-12-01T18:00Z", ts("2026-12-01T18:00")),
        ("2026-12-01T18:00+01:00", ts("2026-12-01T17:00")),
        ("18:00", ts("2026-11-25T18:00")),  # later today
        ("09:30", ts("2026-11-26T09:30")),  # already past today: tomorrow
        ("today", ts("2026-11-25T23:59")),
        ("tomorrow", ts("2026-11-26T23:59")),
        ("fri", ts("2026-11-27T23:59")),
        ("Friday", ts("2026-11-27T23:59")),
        ("fri 18:00", ts("2026-11-27T18:00")),
        ("wed", ts("2026-11-25T23:59")),  # today is Wednesday: the end of today
        ("wed 09:00", ts("2026-12-02T09:00")),  # today's 09:00 is gone: next week
        ("tue", ts("2026-12-01T23:59")),
    ],
)
def test_parse_until_in_utc(text: str, expected: float) -> None:
    assert parse_until(text, NOW, UTC_ZONE) == expected


def test_parse_until_uses_the_zone_and_its_daylight_saving_rules() -> None:
    # 2026-03-27 is a Friday in winter time (UTC+1); Berlin moves to UTC+2 on the 29th.
    now = ts("2026-03-27T12:00", BERLIN)
    assert parse_until("2026-03-30", now, BERLIN) == ts("2026-03-30T23:59", BERLIN)
    assert parse_until("2026-03-30", now, BERLIN) == ts("2026-03-30T21:59")  # UTC+2
    assert parse_until("fri", now, BERLIN) == ts("2026-03-27T22:59")  # UTC+1
    assert parse_until("3d", now, BERLIN) == now + 3 * DAY  # durations are plain seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty: give a duration or a time"),
        ("   ", "empty"),
        ("3x", "unknown unit 'x' in '3x': use m (minutes), h, d or w"),
        ("3 months", "months: give a date instead"),
        ("30s", "unknown unit 's'"),
        ("0h", "'0h' is no time at all"),
        ("soon", "cannot read 'soon': use a duration or a time (90m, 4h, 3d"),
        ("2026-02-30", "'2026-02-30' is not a date that exists"),
        ("2026-02-30T10:00", "is not a date and time that exists"),
        ("25:00", "'25:00' is not a time of day"),
        ("fri 7pm", "cannot read 'fri 7pm' as a time of day"),
        ("2026-11-24", "2026-11-24 23:59 UTC is in the past"),
        ("2026-11-25T09:59", "2026-11-25 09:59 UTC is in the past"),
        ("fr", "cannot read 'fr'"),  # two letters are too few for a weekday
    ],
)
def test_parse_until_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(UntilError) as info:
        parse_until(text, NOW, UTC_ZONE)
    assert message in str(info.value)


def test_until_text_reads_back_as_the_same_time() -> None:
    for value in (ts("2026-12-01T18:00"), ts("2026-12-01T18:00:37"), NOW + 4 * HOUR):
        text = reservations.until_text(value, UTC_ZONE)
        assert parse_until(text, NOW, UTC_ZONE) == value
    assert reservations.until_text(ts("2026-12-01T18:00"), UTC_ZONE) == "2026-12-01T18:00"
    assert reservations.until_text(ts("2026-12-01T18:00"), BERLIN) == "2026-12-01T19:00"


def test_format_when_and_age() -> None:
    assert reservations.format_when(ts("2026-12-01T18:00"), UTC_ZONE) == "2026-12-01 18:00 UTC"
    assert reservations.format_when(ts("2026-12-01T18:00"), BERLIN) == "2026-12-01 19:00 CET"
    ages = [(5, "just now"), (120, "2 min ago"), (3 * HOUR, "3 h ago"), (3 * DAY, "3 d ago")]
    for seconds, text in ages:
        assert reservations.format_age(seconds) == text


# ---------------------------------------------------------------------------------------
# The element


def test_record_round_trip_and_the_unqualified_element_libvirt_wants() -> None:
    record = Record(
        revision=7,
        reservation=Reservation(
            owner="alice",
            note='bisecting <kernel> & "friends"',
            since=ts("2026-11-23T09:00"),
            until=ts("2026-11-27T18:00"),
            contact="alice@example.com",
            revision=7,
        ),
        changed_by="alice",
        changed_at=ts("2026-11-24T08:00"),
        action="updated",
    )
    text = rx.record_to_string(record)
    # libvirt adds the namespace itself and refuses an element that declares one.
    assert "xmlns" not in text and ":" not in ET.fromstring(text).tag
    assert rx.record_from_string(text) == record
    # The same element as it appears, qualified, inside a domain XML.
    qualified = (
        f"<domain><metadata><catkeeper:reservation xmlns:catkeeper='{rx.NAMESPACE}' "
        "revision='7'><catkeeper:owner>alice</catkeeper:owner>"
        "<catkeeper:note>n</catkeeper:note></catkeeper:reservation></metadata></domain>"
    )
    metadata = ET.fromstring(qualified).find("metadata")
    assert metadata is not None
    assert rx.from_metadata(metadata) == Reservation(owner="alice", note="n", revision=7)


def test_released_element_keeps_its_revision_and_reads_as_free() -> None:
    tomb = Record(9, None, changed_by="bob", changed_at=NOW, action="released")
    back = rx.record_from_string(rx.record_to_string(tomb))
    assert back == tomb and back.reservation is None
    assert rx.from_string(rx.record_to_string(tomb)) is None


def test_odd_elements_read_safely() -> None:
    assert rx.record_from_string("not xml") is None
    assert rx.record_from_string("<other/>") is None
    odd = rx.record_from_string("<reservation revision='x'><owner> </owner></reservation>")
    assert odd == Record(0, None)


def test_lock_slots_are_found_in_a_domain_xml() -> None:
    slot = LockSlot(token="ab12", by="alice", client="jump:42", at=NOW)
    xml = (
        f"<domain><metadata><catkeeper-lock:lock xmlns:catkeeper-lock='{rx.lock_uri('ab12')}' "
        f"by='alice' client='jump:42' at='{metadata_time.format_time(NOW)}'/>"
        "<other:lock xmlns:other='urn:elsewhere'/></metadata></domain>"
    )
    assert rx.lock_slots(xml) == [slot]
    assert "xmlns" not in rx.lock_to_string(slot)


# ---------------------------------------------------------------------------------------
# The rules


def _res(owner: str, rev: int, *, until: float | None = None, note: str = "n") -> Reservation:
    return Reservation(owner=owner, note=note, since=NOW - DAY, until=until, revision=rev)


def _rec(
    res: Reservation | None, rev: int, by: str | None = None, action: str = "reserved"
) -> Record:
    return Record(rev, res, changed_by=by, changed_at=NOW - 120, action=action)


ALICE = _res("alice", 3, until=NOW + DAY, note="bisecting kernel")
ALICE_REC = _rec(ALICE, 3, "alice")
EXPIRED_BOB = _res("bob", 5, until=NOW - HOUR, note="load test")
EXPIRED_REC = _rec(EXPIRED_BOB, 5, "bob")
REF = "lab1/db01"


def test_seen_must_match_the_current_revision() -> None:
    check_seen(REF, None, None, NOW)  # free and free
    check_seen(REF, _rec(None, 4, "bob", "released"), None, NOW)  # released is free too
    check_seen(REF, ALICE_REC, ALICE, NOW)
    with pytest.raises(ReservationConflict) as info:
        check_seen(REF, ALICE_REC, None, NOW)
    assert info.value.reason == "stale" and info.value.holder == ALICE
    assert str(info.value) == (
        "lab1/db01: alice reserved this VM 2 min ago: until 2026-11-26 10:00 UTC: "
        '"bisecting kernel" (revision 3, you saw it free)'
    )
    changed = _rec(dataclasses.replace(ALICE, revision=4), 4, "alice", "updated")
    with pytest.raises(ReservationConflict) as info:
        check_seen(REF, changed, ALICE, NOW)
    assert "alice changed this reservation 2 min ago" in str(info.value)
    assert "(revision 4, you saw revision 3)" in str(info.value)
    with pytest.raises(ReservationConflict) as info:
        check_seen(REF, _rec(None, 4, "bob", "released"), ALICE, NOW)
    assert str(info.value) == (
        "lab1/db01: bob released this reservation 2 min ago (you saw alice's, revision 3)"
    )
    with pytest.raises(ReservationConflict) as info:
        check_seen(REF, None, ALICE, NOW)
    assert "removed outside catkeeper" in str(info.value)


def test_reserve_rules() -> None:
    def plan(
        current: Record | None,
        seen: Reservation | None,
        me: str,
        *,
        owner: str | None = None,
        take_over: bool = False,
    ) -> Record:
        request = ReservationRequest(owner=owner or me, note="mine", take_over=take_over)
        revision = (current.revision if current else 0) + 1
        return plan_reserve(REF, current, seen, request, me=me, now=NOW, revision=revision)

    fresh = plan(None, None, "carol")
    assert fresh.action == "reserved" and fresh.revision == 1
    assert fresh.reservation == Reservation("carol", "mine", since=NOW, revision=1)
    assert fresh.changed_by == "carol" and fresh.changed_at == NOW
    # Updating one's own keeps since.
    mine = plan(ALICE_REC, ALICE, "alice")
    assert mine.action == "updated" and mine.reservation is not None
    assert mine.reservation.since == ALICE.since and mine.revision == 4
    # Someone else's active reservation: refused, unless taken over explicitly.
    with pytest.raises(ReservationConflict) as info:
        plan(ALICE_REC, ALICE, "carol")
    assert info.value.reason == "held"
    assert str(info.value) == (
        "lab1/db01 is reserved by alice until 2026-11-26 10:00 UTC: "
        '"bisecting kernel"; take it over to claim it anyway'
    )
    # Not even by naming alice as the owner: changing her reservation is taking it over.
    with pytest.raises(ReservationConflict):
        plan(ALICE_REC, ALICE, "carol", owner="alice")
    taken = plan(ALICE_REC, ALICE, "carol", take_over=True)
    assert taken.action == "took-over" and taken.reservation is not None
    assert taken.reservation.owner == "carol" and taken.reservation.since == NOW
    # Taking over still needs a fresh view.
    with pytest.raises(ReservationConflict) as info:
        plan(ALICE_REC, None, "carol", take_over=True)
    assert info.value.reason == "stale"
    # Expired: claimable without taking over, but only from a fresh view.
    claimed = plan(EXPIRED_REC, EXPIRED_BOB, "carol")
    assert claimed.action == "reserved" and claimed.revision == 6
    with pytest.raises(ReservationConflict):
        plan(EXPIRED_REC, None, "carol")
    # Handing one's own reservation to someone else.
    handed = plan(ALICE_REC, ALICE, "alice", owner="dave")
    assert handed.reservation is not None and handed.reservation.owner == "dave"
    assert handed.action == "reserved"


def test_update_rules() -> None:
    def update(current: Record | None, seen: Reservation | None, me: str) -> Record:
        return plan_update(
            REF, current, seen, me=me, now=NOW, revision=9, verb="extend", until=NOW + 2 * DAY
        )

    done = update(ALICE_REC, ALICE, "alice")
    assert done.reservation == dataclasses.replace(ALICE, until=NOW + 2 * DAY, revision=9)
    assert done.action == "updated"
    # One's own expired reservation can be revived.
    assert update(EXPIRED_REC, EXPIRED_BOB, "bob").reservation is not None
    with pytest.raises(ReservationConflict) as info:
        update(ALICE_REC, ALICE, "carol")
    assert info.value.reason == "held" and str(info.value).endswith("only alice can extend it")
    with pytest.raises(ReservationConflict) as info:
        update(None, None, "carol")
    assert info.value.reason == "not-reserved"
    assert str(info.value) == "lab1/db01 is not reserved: reserve it before you extend it"


def test_release_rules() -> None:
    def release(
        current: Record | None, seen: Reservation | None, me: str, force: bool = False
    ) -> Record | None:
        return plan_release(REF, current, seen, me=me, force=force, now=NOW, revision=10)

    tomb = release(ALICE_REC, ALICE, "alice")
    assert tomb == Record(10, None, changed_by="alice", changed_at=NOW, action="released")
    assert release(None, None, "alice") is None  # nothing to do
    assert release(_rec(None, 4, "bob", "released"), None, "alice") is None
    with pytest.raises(ReservationConflict) as info:
        release(EXPIRED_REC, EXPIRED_BOB, "carol")  # expired, but still bob's to release
    assert "only bob can release it; force to release it anyway" in str(info.value)
    assert "expired 2026-11-25 09:00 UTC" in str(info.value)
    assert release(EXPIRED_REC, EXPIRED_BOB, "carol", force=True) is not None
    with pytest.raises(ReservationConflict):
        release(ALICE_REC, None, "alice")  # stale


# ---------------------------------------------------------------------------------------
# The operations, on test-driver hosts

RUNNING_HELD = "alice-held"
EXPIRED = "bob-expired"


def _decorate(name: str, domain: ET.Element) -> None:
    """Pre-set reservations the way fleetgen wants them: literal prefixes, own xmlns."""
    held = {
        RUNNING_HELD: ("alice", "bisecting kernel", "2027-02-01T00:00:00Z"),
        EXPIRED: ("bob", "load test", "2026-01-01T00:00:00Z"),
    }.get(name)
    if held is None:
        return
    metadata = ET.SubElement(domain, "metadata")
    elem = ET.SubElement(
        metadata,
        "catkeeper:reservation",
        {"xmlns:catkeeper": rx.NAMESPACE, "revision": "2"},
    )
    for tag, text in zip(("owner", "note", "until"), held, strict=True):
        ET.SubElement(elem, f"catkeeper:{tag}").text = text


@pytest.fixture
def node(tmp_path: Path) -> Path:
    text = node_xml("lab1", 4, seed=3, running_fraction=0.5, services=[])
    # Give two of the generated domains fixed names, so the decorator can find them.
    root = ET.fromstring(text)
    doms = root.findall("domain")
    for dom, name in zip(doms, (RUNNING_HELD, EXPIRED), strict=False):
        name_elem = dom.find("name")
        assert name_elem is not None
        name_elem.text = name
        _decorate(name, dom)
    path = tmp_path / "lab1.xml"
    path.write_text(ET.tostring(root, encoding="unicode"))
    return path


@pytest.fixture
async def fleet(node: Path) -> AsyncIterator[Fleet]:
    f = Fleet(fleet_config([("lab1", f"test://{node}")]), clock=lambda: NOW)
    await f.start()
    try:
        assert await f.wait_settled(10)
        yield f
    finally:
        await f.aclose()


def _vm(fleet: Fleet, name: str) -> VM:
    return fleet.find(f"lab1/{name}")


def _free(fleet: Fleet) -> VM:
    return next(vm for vm in fleet.vms() if vm.reservation is None)


async def _stored(fleet: Fleet, vm: VM) -> Record | None:
    """The element as libvirt holds it, read through the fleet's own connection."""

    def read(dom: libvirt.virDomain) -> str | None:
        try:
            return str(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, rx.NAMESPACE, 0))
        except libvirt.libvirtError:
            return None

    text = await fleet.session("lab1").call_domain(vm.uuid, read)
    return rx.record_from_string(text) if text is not None else None


async def _locks(fleet: Fleet, vm: VM) -> list[LockSlot]:
    xml = await fleet.session("lab1").call_domain(
        vm.uuid, lambda d: d.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    )
    return rx.lock_slots(xml)


async def test_reserve_extend_edit_release_round_trip(fleet: Fleet) -> None:
    vm = _free(fleet)
    until = NOW + 3 * DAY + 0.7
    change = await reservations.reserve(
        fleet, vm, note="  my box ", until=until, contact="c@x", me="carol"
    )
    assert change.action == "reserved" and change.before is None
    after = change.after
    assert after is not None
    assert (after.owner, after.note, after.until, after.contact, after.revision) == (
        "carol", "my box", int(until), "c@x", 1,
    )  # fmt: skip
    stored = await _stored(fleet, vm)
    assert stored is not None and stored.reservation == after and stored.changed_by == "carol"
    assert _vm(fleet, vm.name).reservation == after  # the inventory followed at once
    assert await _locks(fleet, vm) == []

    vm = _vm(fleet, vm.name)
    extended = await reservations.extend(fleet, vm, NOW + 5 * DAY, me="carol")
    assert extended.after == dataclasses.replace(after, until=NOW + 5 * DAY, revision=2)
    vm = _vm(fleet, vm.name)
    edited = await reservations.edit_note(fleet, vm, "still mine", me="carol")
    assert edited.after is not None and edited.after.note == "still mine"
    assert edited.after.since == after.since and edited.after.revision == 3

    vm = _vm(fleet, vm.name)
    released = await reservations.release(fleet, vm, me="carol")
    assert released.action == "released" and released.after is None
    assert released.before == edited.after
    tomb = await _stored(fleet, vm)
    assert tomb == Record(4, None, "carol", tomb.changed_at if tomb else None, "released")
    assert _vm(fleet, vm.name).reservation is None
    # Released twice: nothing to do, nothing written.
    again = await reservations.release(fleet, _vm(fleet, vm.name), me="carol")
    assert again.action == "unchanged" and (await _stored(fleet, vm)) == tomb
    # The counter goes on from the released element.
    claimed = await reservations.reserve(fleet, _vm(fleet, vm.name), note="again", me="dave")
    assert claimed.after is not None and claimed.after.revision == 5


async def test_a_stale_view_is_refused_and_names_who_changed_it(fleet: Fleet) -> None:
    vm = _free(fleet)
    stale = vm  # the screen still shows it free
    await reservations.reserve(fleet, vm, note="first", me="alice")
    with pytest.raises(ReservationConflict) as info:
        await reservations.reserve(fleet, stale, note="second", me="bob", take_over=True)
    assert info.value.reason == "stale"
    assert str(info.value).startswith(f"lab1/{vm.name}: alice reserved this VM just now:")
    stored = await _stored(fleet, vm)
    assert stored is not None and stored.reservation is not None
    assert stored.reservation.note == "first"  # untouched


async def test_held_expired_and_forced(fleet: Fleet) -> None:
    held = _vm(fleet, RUNNING_HELD)
    assert held.reservation is not None and held.reservation.revision == 2
    with pytest.raises(ReservationConflict) as info:
        await reservations.reserve(fleet, held, note="mine", me="carol")
    assert info.value.holder == held.reservation
    with pytest.raises(ReservationConflict):
        await reservations.release(fleet, held, me="carol")
    with pytest.raises(ReservationConflict):
        await reservations.extend(fleet, held, None, me="carol")
    taken = await reservations.reserve(fleet, held, note="mine", me="carol", take_over=True)
    assert taken.action == "took-over" and taken.before == held.reservation
    assert taken.after is not None and taken.after.revision == 3

    expired = _vm(fleet, EXPIRED)
    claimed = await reservations.reserve(fleet, expired, note="it was free", me="carol")
    assert claimed.action == "reserved" and claimed.before == expired.reservation

    forced = await reservations.release(fleet, _vm(fleet, RUNNING_HELD), me="dave", force=True)
    assert forced.action == "released"
    stored = await _stored(fleet, held)
    assert stored is not None and stored.changed_by == "dave" and stored.action == "released"


async def test_invalid_requests_send_nothing(fleet: Fleet) -> None:
    vm = _free(fleet)
    with pytest.raises(InvalidReservation):
        await reservations.reserve(fleet, vm, note="x", owner="  ", me="  ")
    with pytest.raises(InvalidReservation) as info:
        await reservations.reserve(fleet, vm, note="x", until=1000.0, me="carol")
    assert "is in the past" in str(info.value)
    assert await _stored(fleet, vm) is None


async def test_read_only_fleet_refuses_before_libvirt(node: Path) -> None:
    f = Fleet(fleet_config([("lab1", f"test://{node}")], readonly=True), clock=lambda: NOW)
    await f.start()
    try:
        assert await f.wait_settled(10)
        vm = _free(f)
        with pytest.raises(ReadOnlyError) as info:
            await reservations.reserve(f, vm, note="x", me="carol")
        assert str(info.value) == f"lab1 is read-only: cannot reserve lab1/{vm.name}"
        assert await _stored(f, vm) is None
    finally:
        await f.aclose()


async def test_a_vanished_domain_is_not_found(fleet: Fleet) -> None:
    vm = _free(fleet)
    await fleet.session("lab1").call_domain(
        vm.uuid, lambda d: (d.destroy() if d.isActive() else None, d.undefine())
    )
    with pytest.raises(NotFound) as info:
        await reservations.reserve(fleet, vm, note="x", me="carol")
    assert str(info.value).startswith(f"reserve lab1/{vm.name}: Domain not found")


async def test_another_writers_lock_holds_us_off_until_it_goes_stale(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("catkeeper.backend.reservations.writes.LOCK_WAIT_S", 0.3)
    vm = _free(fleet)
    session = fleet.session("lab1")

    def plant(at: float) -> Callable[[libvirt.virDomain], None]:
        """Another writer's lock element, as its ``_acquire`` would have left it."""
        slot = LockSlot(token="f00d", by="erin", client="otherbox:99", at=at)

        def put(dom: libvirt.virDomain) -> None:
            dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                rx.lock_to_string(slot),
                rx.LOCK_PREFIX,
                rx.lock_uri(slot.token),
                libvirt.VIR_DOMAIN_AFFECT_CONFIG,
            )

        return put

    await session.call_domain(vm.uuid, plant(NOW))
    started = time.monotonic()
    with pytest.raises(ReservationBusy) as info:
        await reservations.reserve(fleet, vm, note="x", me="carol")
    waited = time.monotonic() - started
    # It waited for the lock (not a refusal at once), for the lock wait, not the call timeout.
    assert 0.2 < waited < 10 * 0.3
    assert "another catkeeper (erin on otherbox:99) kept writing this reservation for 0.3 s" in (
        str(info.value)
    )
    assert await _stored(fleet, vm) is None
    assert [s.token for s in await _locks(fleet, vm)] == ["f00d"]  # ours withdrawn, theirs kept

    # A writer that died long ago: its element is ignored and swept.
    await session.call_domain(vm.uuid, plant(NOW - reservations.LOCK_LEASE_S - 1))
    change = await reservations.reserve(fleet, vm, note="x", me="carol")
    assert change.after is not None
    assert await _locks(fleet, vm) == []
