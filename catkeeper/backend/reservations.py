"""Reservations kept on the hosts: claim, extend, edit, release, take over.

A reservation is one element in the domain's ``<metadata>`` (format: ``reservation_xml``),
written to the persistent config and, while the domain runs, to its live state too, in one
``virDomainSetMetadata`` call. Every catkeeper that watches the host gets the
metadata-change event and re-reads the domain, so everyone's screen follows.

**Compare-and-set.** libvirt has no compare-and-set, and re-reading the element just before
writing is not enough: measured against a real libvirtd, two clients doing read-check-write
in a tight loop lost 161 of 362 "successful" writes. So a write runs as one transaction on
the host's thread, under a small lock kept in the domain's own metadata:

1. announce: write a lock element in a namespace of our own
   (``https://catkeeper.dev/xmlns/lock/1/<random token>``, ``by``/``client``/``at``);
2. look: read the domain XML (one snapshot of every lock element). If another writer's
   element is there, withdraw ours, wait a random moment and start again;
3. otherwise we hold the lock: re-read the reservation, refuse with ``ReservationConflict``
   unless its revision is the one the caller saw, write the new one (revision + 1);
4. withdraw our lock element.

Two writers can never both pass step 2: each wrote its element before reading, so whichever
read last sees the other's (the classic "raise your flag, then look" mutual exclusion; the
random wait breaks ties). Lock elements older than ``LOCK_LEASE_S`` (wall clock) belong to a
writer that died mid-write; they are ignored and swept. A writer gives up after
``LOCK_WAIT_S`` with ``ReservationBusy``. The lock lives in the persistent config (the live
state of a transient domain), so starting or stopping the domain does not drop it.

**Nothing half-written.** One setMetadata call changes the live state and then the config;
libvirt can fail after the first (e.g. when saving the config file fails, it has already
changed both in memory). After any failed write the element is re-read in every copy and a
copy that holds the new value is put back, then checked again; the error says whether that
worked. A read-only connection or a denied ACL fails at step 1, before anything is written.

The planners (``plan_reserve`` …) are pure functions of the current record, what the caller
saw and the clock, so the conflict rules are tested without libvirt. ``parse_until`` reads
the ``until`` people type: ``4h``, ``3d``, ``2026-12-01``, ``2026-12-01T18:00``, ``fri``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any, Literal

import libvirt

from catkeeper.backend import reservation_xml as rx
from catkeeper.backend.actions import ReadOnlyError
from catkeeper.backend.errors import BackendError, CallTimeout, HostUnavailable, NotFound, describe
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.backend.reservation_xml import LockSlot, Record
from catkeeper.config import current_user
from catkeeper.model import VM, Reservation

log = logging.getLogger(__name__)

NAMESPACE = rx.NAMESPACE
LOCK_LEASE_S = 120.0  # a lock element older than this was left by a writer that died
LOCK_WAIT_S = 5.0  # give up waiting for other writers after this long
_BACKOFF_FIRST_S = 0.004
_BACKOFF_MAX_S = 0.25

_ELEMENT = libvirt.VIR_DOMAIN_METADATA_ELEMENT
_LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
_CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG
_COPY_NAMES = {_LIVE: "live", _CONFIG: "config"}
# libvirt's ways of saying "you may not": read-only connections, ACLs, authentication.
_DENIED = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_DENIED,
        libvirt.VIR_ERR_ACCESS_DENIED,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)

Action = Literal["reserved", "updated", "took-over", "released", "unchanged"]
ConflictReason = Literal["stale", "held", "not-reserved", "busy"]


# ---------------------------------------------------------------------------------------
# Errors


class ReservationError(BackendError):
    """libvirt failed a reservation write for a reason other than permissions."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class InvalidReservation(BackendError, ValueError):
    """The request itself is wrong (empty owner, ``until`` in the past); nothing was sent."""


class WriteDenied(ReadOnlyError):
    """libvirt refused the write (read-only connection, ACL); nothing was written."""


class ReservationConflict(BackendError):
    """The reservation is not what the caller assumed; nothing was written.

    ``reason``: ``stale`` (someone changed it since the caller looked), ``held`` (someone
    else holds it), ``not-reserved`` (there is nothing to extend or edit), ``busy`` (another
    writer kept the lock). ``current`` is the record found on the host, ``holder`` its
    reservation, if any: the CLI prints them, the TUI shows them.
    """

    def __init__(
        self, message: str, *, ref: str, reason: ConflictReason, current: Record | None
    ) -> None:
        super().__init__(message)
        self.ref = ref
        self.reason: ConflictReason = reason
        self.current = current

    @property
    def holder(self) -> Reservation | None:
        return self.current.reservation if self.current is not None else None


class ReservationBusy(ReservationConflict):
    """Another catkeeper held this domain's write lock for longer than ``LOCK_WAIT_S``."""

    def __init__(self, message: str, *, ref: str, slot: LockSlot) -> None:
        super().__init__(message, ref=ref, reason="busy", current=None)
        self.slot = slot


class UntilError(ValueError):
    """An ``until`` that cannot be read, or that is not in the future."""


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ReservationRequest:
    """What the reservation form produces: the whole reservation as the user wants it."""

    owner: str
    note: str = ""
    until: float | None = None  # None: no end
    contact: str | None = None
    take_over: bool = False  # explicitly claim a reservation someone else holds


@dataclass(frozen=True)
class Change:
    """What a write did. ``after`` is the reservation as stored (None when released)."""

    host: str
    vm: str
    action: Action
    before: Reservation | None
    after: Reservation | None

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.vm}"


# ---------------------------------------------------------------------------------------
# Reading times people type


_UNITS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[a-z]+\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}")
_DATETIME = re.compile(
    r"(\d{4}-\d{1,2}-\d{1,2})[t ](\d{1,2}:\d{2}(?::\d{2})?)(z|[+-]\d{2}:?\d{2})?"
)
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_END_OF_DAY = dtime(23, 59)
FORMS = "90m, 4h, 3d, 2w, 2026-12-01, 2026-12-01T18:00, 18:00, fri, fri 18:00, tomorrow"


def _wall(now: float, tz: tzinfo | None) -> datetime:
    """``now`` as a naive wall-clock time in ``tz`` (None: the local zone)."""
    return datetime.fromtimestamp(now, tz).replace(tzinfo=None)


def _stamp(wall: datetime, tz: tzinfo | None) -> float:
    # Naive local times go through mktime, which knows the zone's DST rules for that date.
    return wall.replace(tzinfo=tz).timestamp() if tz is not None else wall.timestamp()


def _weekday(word: str) -> int | None:
    """0 for mon/monday (any prefix of three letters or more), … 6 for sun; else None."""
    if len(word) < 3:
        return None
    for i, full in enumerate(_WEEKDAYS):
        if full.startswith(word):
            return i
    return None


def _clock(text: str, original: str) -> dtime:
    m = _CLOCK.fullmatch(text)
    if m is None:
        raise UntilError(f"cannot read {original!r} as a time of day (e.g. 18:00)")
    hour, minute = int(m.group(1)), int(m.group(2))
    if hour > 23 or minute > 59:
        raise UntilError(f"{original!r} is not a time of day")
    return dtime(hour, minute)


def _duration(text: str, original: str) -> float:
    total = 0.0
    for number, unit in _DURATION_PART.findall(text):
        if unit not in _UNITS:
            hint = " (months: give a date instead)" if unit.startswith("mo") else ""
            raise UntilError(
                f"unknown unit {unit!r} in {original!r}: use m (minutes), h, d or w{hint}"
            )
        total += float(number) * _UNITS[unit]
    if total <= 0:
        raise UntilError(f"{original!r} is no time at all: give a duration such as 4h")
    return total


def parse_until(text: str, now: float, tz: tzinfo | None = None) -> float:
    """The end of a reservation as typed: a duration from ``now`` or a point in time.

    Durations: ``90m``, ``4h``, ``1.5h``, ``3d``, ``2w``, ``1d12h``, ``+4h``, ``in 3 days``.
    Points in time, in ``tz`` (None: the local zone) unless they name an offset:
    ``2026-12-01`` (the end of that day, 23:59), ``2026-12-01T18:00`` (or a space for the T;
    seconds, ``Z`` and ``+01:00`` allowed), ``18:00`` (the next 18:00), ``fri``/``friday``
    (the end of the next Friday, today included), ``fri 18:00``, ``today``, ``tomorrow``.
    Returns epoch seconds; raises ``UntilError`` with a message for a person when the text
    cannot be read or the time is not in the future.
    """
    original = text.strip()
    s = " ".join(original.lower().split())
    if not s:
        raise UntilError(f"empty: give a duration or a time ({FORMS})")
    wall_now = _wall(now, tz)
    result: float | None = None
    duration_text = s[1:].strip() if s.startswith("+") else s.removeprefix("in ").strip()
    if duration_text and duration_text[0].isdigit() and _DURATION.fullmatch(duration_text):
        return now + _duration(duration_text, original)
    if m := _DATETIME.fullmatch(s):
        iso = f"{m.group(1)}T{m.group(2)}{(m.group(3) or '').upper()}"
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            raise UntilError(f"{original!r} is not a date and time that exists") from None
        result = parsed.timestamp() if parsed.tzinfo is not None else _stamp(parsed, tz)
    elif _DATE.fullmatch(s):
        try:
            day = date.fromisoformat("-".join(f"{int(p):02d}" for p in s.split("-")))
        except ValueError:
            raise UntilError(f"{original!r} is not a date that exists") from None
        result = _stamp(datetime.combine(day, _END_OF_DAY), tz)
    elif _CLOCK.fullmatch(s):
        at = datetime.combine(wall_now.date(), _clock(s, original))
        if at <= wall_now:
            at += timedelta(days=1)
        result = _stamp(at, tz)
    elif s in ("today", "tonight", "eod"):
        result = _stamp(datetime.combine(wall_now.date(), _END_OF_DAY), tz)
    elif s == "tomorrow":
        result = _stamp(datetime.combine(wall_now.date() + timedelta(days=1), _END_OF_DAY), tz)
    else:
        word, _, rest = s.partition(" ")
        weekday = _weekday(word)
        if weekday is None:
            raise UntilError(f"cannot read {original!r}: use a duration or a time ({FORMS})")
        at_time = _clock(rest, original) if rest else _END_OF_DAY
        ahead = (weekday - wall_now.weekday()) % 7
        at = datetime.combine(wall_now.date() + timedelta(days=ahead), at_time)
        if at <= wall_now:
            at += timedelta(days=7)
        result = _stamp(at, tz)
    if result <= now:
        raise UntilError(f"{format_when(result, tz)} is in the past")
    return result


def format_when(ts: float, tz: tzinfo | None = None) -> str:
    """``2026-11-27 18:00 CET``: a point in time for a person, in ``tz`` (None: local)."""
    when = datetime.fromtimestamp(ts, tz) if tz is not None else datetime.fromtimestamp(ts)
    aware = when.astimezone() if tz is None else when
    return aware.strftime("%Y-%m-%d %H:%M %Z").strip()


def until_text(ts: float, tz: tzinfo | None = None) -> str:
    """An ``until`` as ``parse_until`` reads it back (to prefill a form): 2026-11-27T18:00."""
    when = datetime.fromtimestamp(ts, tz)
    return when.strftime("%Y-%m-%dT%H:%M" if when.second == 0 else "%Y-%m-%dT%H:%M:%S")


def format_age(seconds: float) -> str:
    """``2 min ago``: how long ago something happened."""
    if seconds < 45:
        return "just now"
    if seconds < 90 * 60:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} d ago"


def summary(res: Reservation, now: float, tz: tzinfo | None = None, *, owner: bool = True) -> str:
    """``alice until 2026-11-27 18:00 UTC: "bisecting kernel" (contact alice@x)``."""
    if res.until is None:
        when = "with no end"
    elif res.is_expired(now):
        when = f"expired {format_when(res.until, tz)}"
    else:
        when = f"until {format_when(res.until, tz)}"
    text = f"{res.owner} {when}" if owner else when
    if res.note:
        text += f': "{" ".join(res.note.split())}"'
    if res.contact:
        text += f" (contact {res.contact})"
    return text


# ---------------------------------------------------------------------------------------
# Who is asking


def _client() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------
# The rules, as pure functions of (current record, what the caller saw, the clock)


def _age(record: Record | None, res: Reservation | None, now: float) -> str:
    at = record.changed_at if record is not None else None
    if at is None and res is not None:
        at = res.since
    return f" {format_age(now - at)}" if at is not None else ""


def _saw(seen: Reservation | None) -> str:
    return f"you saw revision {seen.revision}" if seen is not None else "you saw it free"


def check_seen(ref: str, current: Record | None, seen: Reservation | None, now: float) -> None:
    """Refuse (``stale``) unless the reservation is still the one the caller saw.

    "Free" matches free whatever the revision (a released element or none at all); a
    reservation matches only the same revision.
    """
    held = current.reservation if current is not None else None
    if seen is None and held is None:
        return
    if seen is not None and held is not None and held.revision == seen.revision:
        return
    if held is None:
        if current is not None and current.action == "released":
            who = current.changed_by or "someone"
            message = f"{ref}: {who} released this reservation{_age(current, None, now)}"
        else:
            message = f"{ref}: the reservation was removed outside catkeeper"
        assert seen is not None
        message += f" (you saw {seen.owner}'s, revision {seen.revision})"
    else:
        who = (current.changed_by if current is not None else None) or held.owner
        verb = {"took-over": "took this VM over", "reserved": "reserved this VM"}.get(
            (current.action if current is not None else None) or "", "changed this reservation"
        )
        what = summary(held, now, owner=who != held.owner)
        message = (
            f"{ref}: {who} {verb}{_age(current, held, now)}: {what}"
            f" (revision {held.revision}, {_saw(seen)})"
        )
    raise ReservationConflict(message, ref=ref, reason="stale", current=current)


def _held_by_other(
    ref: str, current: Record, held: Reservation, now: float, hint: str
) -> ReservationConflict:
    return ReservationConflict(
        f"{ref} is reserved by {summary(held, now)}; {hint}",
        ref=ref,
        reason="held",
        current=current,
    )


def plan_reserve(
    ref: str,
    current: Record | None,
    seen: Reservation | None,
    request: ReservationRequest,
    *,
    me: str,
    now: float,
    revision: int,
) -> Record:
    """Claim, update, hand over or (with ``take_over``) take over a reservation.

    Changing an active reservation someone else holds needs ``take_over``; an expired one
    may be claimed without it. Either way the caller must have seen the current revision.
    """
    check_seen(ref, current, seen, now)
    held = current.reservation if current is not None else None
    active = held is not None and not held.is_expired(now)
    if held is not None and active and held.owner != me and not request.take_over:
        assert current is not None
        raise _held_by_other(ref, current, held, now, "take it over to claim it anyway")
    action: Action = "reserved"
    since = now
    if held is not None and active:
        if held.owner == request.owner:
            action, since = "updated", held.since if held.since is not None else now
        elif held.owner != me:
            action = "took-over"
    reservation = Reservation(
        owner=request.owner,
        note=request.note,
        since=since,
        until=request.until,
        contact=request.contact or None,
        revision=revision,
    )
    return Record(revision, reservation, changed_by=me, changed_at=now, action=action)


def _mine(
    ref: str, current: Record | None, seen: Reservation | None, me: str, now: float, verb: str
) -> tuple[Record, Reservation]:
    check_seen(ref, current, seen, now)
    held = current.reservation if current is not None else None
    if current is None or held is None:
        raise ReservationConflict(
            f"{ref} is not reserved: reserve it before you {verb} it",
            ref=ref,
            reason="not-reserved",
            current=current,
        )
    if held.owner != me:
        raise _held_by_other(ref, current, held, now, f"only {held.owner} can {verb} it")
    return current, held


def plan_update(
    ref: str,
    current: Record | None,
    seen: Reservation | None,
    *,
    me: str,
    now: float,
    revision: int,
    verb: str,
    **changes: Any,
) -> Record:
    """Change fields of the caller's own reservation (expired ones included)."""
    _record, held = _mine(ref, current, seen, me, now, verb)
    reservation = dataclasses.replace(held, revision=revision, **changes)
    return Record(revision, reservation, changed_by=me, changed_at=now, action="updated")


def plan_release(
    ref: str,
    current: Record | None,
    seen: Reservation | None,
    *,
    me: str,
    force: bool,
    now: float,
    revision: int,
) -> Record | None:
    """End a reservation: the holder's own, or anyone's with ``force``. None: already free."""
    check_seen(ref, current, seen, now)
    held = current.reservation if current is not None else None
    if held is None:
        return None
    if held.owner != me and not force:
        assert current is not None
        raise _held_by_other(
            ref, current, held, now, f"only {held.owner} can release it; force to release it anyway"
        )
    return Record(revision, None, changed_by=me, changed_at=now, action="released")


# ---------------------------------------------------------------------------------------
# The transaction, on the host's thread


@dataclass(frozen=True)
class _Lock:
    token: str
    flags: int


class _LockBusy(Exception):
    def __init__(self, slot: LockSlot) -> None:
        super().__init__(slot.token)
        self.slot = slot


class _WriteFailed(Exception):
    def __init__(self, cause: libvirt.libvirtError, outcome: str) -> None:
        super().__init__(outcome)
        self.cause = cause
        self.outcome = outcome


class _TooSlow(Exception):
    pass


def _read(dom: Any, flags: int) -> Record | None:
    try:
        xml = dom.metadata(_ELEMENT, NAMESPACE, flags)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
            return None
        raise
    return rx.record_from_string(xml)


def _drop_slot(dom: Any, token: str, flags: int) -> None:
    try:
        dom.setMetadata(_ELEMENT, None, None, rx.lock_uri(token), flags)
    except libvirt.libvirtError as exc:  # left behind, it goes stale after the lease
        log.info("could not remove lock element %s: %s", token, describe(exc))


def _acquire(dom: Any, who: str, deadline: float, wall: Callable[[], float]) -> _Lock:
    persistent = bool(dom.isPersistent())
    flags = _CONFIG if persistent else _LIVE
    xml_flags = libvirt.VIR_DOMAIN_XML_INACTIVE if persistent else 0
    client = _client()
    backoff = _BACKOFF_FIRST_S
    while True:
        token = secrets.token_hex(8)
        slot = LockSlot(token=token, by=who, client=client, at=wall())
        try:
            dom.setMetadata(
                _ELEMENT, rx.lock_to_string(slot), rx.LOCK_PREFIX, rx.lock_uri(token), flags
            )
        except libvirt.libvirtError as exc:
            # Read-only connections and denied ACLs write nothing at all. Other failures may
            # come after the definition changed in memory (saving the file failed): take the
            # element out again, or it would hold everyone off for the whole lease.
            if _error_code(exc) not in _DENIED:
                _drop_slot(dom, token, flags)
            raise
        try:
            slots = rx.lock_slots(dom.XMLDesc(xml_flags))
        except BaseException:
            _drop_slot(dom, token, flags)
            raise
        moment = wall()
        others = [s for s in slots if s.token != token]
        alive = [s for s in others if s.at is not None and moment - s.at < LOCK_LEASE_S]
        for dead in others:
            if dead not in alive:
                log.info("sweeping a stale lock element of %s (%s)", dead.by, dead.client)
                _drop_slot(dom, dead.token, flags)
        if not alive:
            return _Lock(token, flags)
        _drop_slot(dom, token, flags)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _LockBusy(alive[0])
        # Random, growing waits: two writers that saw each other rarely collide twice.
        time.sleep(min(left, random.uniform(backoff / 2, backoff)))
        backoff = min(backoff * 2, _BACKOFF_MAX_S)


def _roll_back(dom: Any, copies: dict[int, Record | None], written: Record) -> str:
    """Put back every copy that holds ``written``; say what state things are in now."""
    target = rx.normalised(written)
    for flags, before in copies.items():
        try:
            if _read(dom, flags) != target:
                continue
            if before is None:
                dom.setMetadata(_ELEMENT, None, None, NAMESPACE, flags)
            else:
                dom.setMetadata(_ELEMENT, rx.record_to_string(before), rx.PREFIX, NAMESPACE, flags)
        except libvirt.libvirtError as exc:
            # e.g. the config file still cannot be saved; the check below tells what holds.
            log.info("rolling back the %s copy: %s", _COPY_NAMES[flags], describe(exc))
    differing = []
    for flags, before in copies.items():
        try:
            if _read(dom, flags) != before:
                differing.append(_COPY_NAMES[flags])
        except libvirt.libvirtError:
            differing.append(_COPY_NAMES[flags])
    if not differing:
        return "nothing was changed"
    return f"the {' and '.join(differing)} copy may now differ from what it was; check it"


@dataclass(frozen=True)
class Outcome:
    before: Record | None
    after: Record | None
    written: bool


Planner = Callable[[Record | None, int, float], Record | None]
"""(current record, next revision, now) → the record to write, None for "nothing to do"."""


def transact(
    dom: Any,
    plan: Planner,
    *,
    who: str,
    budget: float,
    lock_wait: float | None = None,
    wall: Callable[[], float] = time.time,
) -> Outcome:
    """Lock, re-read, plan, write, unlock: one reservation change. Runs on a host thread."""
    started = time.monotonic()
    wait = LOCK_WAIT_S if lock_wait is None else lock_wait
    lock = _acquire(dom, who, started + min(wait, budget / 2), wall)
    try:
        active = bool(dom.isActive())
        persistent = bool(dom.isPersistent())
        current = _read(dom, 0)  # the live copy while running, else the config: as shown
        copies: dict[int, Record | None] = {}
        if active:
            copies[_LIVE] = current
        if persistent:
            copies[_CONFIG] = _read(dom, _CONFIG) if active else current
        # The copies agree unless someone edited one by hand; never let the counter go back.
        top = max((r.revision for r in copies.values() if r is not None), default=0)
        record = plan(current, top + 1, wall())
        if record is None:
            return Outcome(current, current, False)
        if time.monotonic() - started > budget:
            # The caller's timeout is near: better to write nothing than to land unseen.
            raise _TooSlow()
        flags = 0
        for copy in copies:
            flags |= copy
        try:
            dom.setMetadata(_ELEMENT, rx.record_to_string(record), rx.PREFIX, NAMESPACE, flags)
        except libvirt.libvirtError as exc:
            raise _WriteFailed(exc, _roll_back(dom, copies, record)) from exc
        return Outcome(current, rx.normalised(record), True)
    finally:
        _drop_slot(dom, lock.token, lock.flags)


# ---------------------------------------------------------------------------------------
# The operations


def _writable(fleet: Fleet, vm: VM, verb: str) -> HostSession:
    session = fleet.session(vm.host)
    if session.readonly:
        raise ReadOnlyError(f"{vm.host} is read-only: cannot {verb} {vm.ref}")
    return session


def _error_code(exc: libvirt.libvirtError) -> int | None:
    code = exc.get_error_code()
    return int(code) if code is not None else None


async def _run(fleet: Fleet, vm: VM, verb: str, who: str, plan: Planner) -> Outcome:
    session = _writable(fleet, vm, verb)
    what = f"{verb} {vm.ref}"
    budget = session.timing.call_timeout / 2
    lock_wait = min(LOCK_WAIT_S, budget / 2)  # read at call time, so tests can shorten it

    def run(dom: Any) -> Outcome:
        return transact(dom, plan, who=who, budget=budget, lock_wait=lock_wait, wall=fleet.clock)

    try:
        outcome = await session.call_domain(vm.uuid, run, what=what)
    except _LockBusy as exc:
        slot = exc.slot
        raise ReservationBusy(
            f"{what}: another catkeeper ({slot.by} on {slot.client}) kept writing this "
            f"reservation for {lock_wait:g} s; nothing was changed, try again",
            ref=vm.ref,
            slot=slot,
        ) from None
    except _TooSlow:
        raise CallTimeout(f"{what}: the host answered too slowly; nothing was changed") from None
    except _WriteFailed as exc:
        raise _mapped(exc.cause, f"{what}: {describe(exc.cause)}; {exc.outcome}") from exc.cause
    except libvirt.libvirtError as exc:
        # Failed before the reservation itself was written (lock, reads): nothing changed.
        raise _mapped(exc, f"{what}: {describe(exc)}; nothing was changed") from exc
    except HostUnavailable as exc:
        raise HostUnavailable(f"{what}: {exc}") from exc
    if outcome.written:
        try:
            await session.refresh_domain(vm.uuid)
        except Exception as exc:  # written already; the event will bring it
            log.info("re-reading %s after a reservation change: %s", vm.ref, describe(exc))
    return outcome


def _mapped(exc: libvirt.libvirtError, message: str) -> BackendError:
    code = _error_code(exc)
    if code in _DENIED:
        return WriteDenied(message)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(message)
    return ReservationError(message, code=code)


def _change(vm: VM, outcome: Outcome, action: Action) -> Change:
    before = outcome.before.reservation if outcome.before is not None else None
    after = outcome.after.reservation if outcome.after is not None else None
    return Change(vm.host, vm.name, action, before, after)


def _check_until(ref: str, until: float | None, now: float) -> None:
    if until is not None and until <= now:
        raise InvalidReservation(f"{ref}: until {format_when(until)} is in the past")


async def reserve(
    fleet: Fleet,
    vm: VM,
    *,
    note: str = "",
    until: float | None = None,
    contact: str | None = None,
    owner: str | None = None,
    take_over: bool = False,
    me: str | None = None,
) -> Change:
    """Claim ``vm`` (or update the caller's own reservation of it).

    ``vm.reservation`` is what the caller saw: if the host holds anything else now, this
    raises ``ReservationConflict`` (``stale``) and writes nothing. A VM someone else holds
    (not expired) needs ``take_over=True``. ``owner`` defaults to ``me``, which defaults to
    the configured owner or the login name.
    """
    who = me or current_user(fleet.config)
    request = ReservationRequest(
        owner=(owner or who).strip(),
        note=note.strip(),
        until=until,
        contact=(contact or "").strip() or None,
        take_over=take_over,
    )
    return await apply(fleet, vm, request, me=who)


async def apply(
    fleet: Fleet, vm: VM, request: ReservationRequest, *, me: str | None = None
) -> Change:
    """Store the reservation a form produced (see ``reserve``)."""
    who = me or current_user(fleet.config)
    if not request.owner.strip():
        raise InvalidReservation(f"{vm.ref}: a reservation needs an owner")
    _check_until(vm.ref, request.until, fleet.clock())
    seen = vm.reservation

    def plan(current: Record | None, revision: int, now: float) -> Record:
        return plan_reserve(vm.ref, current, seen, request, me=who, now=now, revision=revision)

    outcome = await _run(fleet, vm, "reserve", who, plan)
    written = outcome.after.action if outcome.after is not None else None
    action: Action = (
        "took-over"
        if written == "took-over"
        else ("updated" if written == "updated" else "reserved")
    )
    return _change(vm, outcome, action)


async def extend(fleet: Fleet, vm: VM, until: float | None, *, me: str | None = None) -> Change:
    """Move the end of the caller's own reservation (``None``: no end)."""
    who = me or current_user(fleet.config)
    _check_until(vm.ref, until, fleet.clock())
    seen = vm.reservation

    def plan(current: Record | None, revision: int, now: float) -> Record:
        return plan_update(
            vm.ref, current, seen, me=who, now=now, revision=revision, verb="extend", until=until
        )

    return _change(vm, await _run(fleet, vm, "extend the reservation of", who, plan), "updated")


async def edit_note(fleet: Fleet, vm: VM, note: str, *, me: str | None = None) -> Change:
    """Replace the note of the caller's own reservation."""
    who = me or current_user(fleet.config)
    seen = vm.reservation

    def plan(current: Record | None, revision: int, now: float) -> Record:
        return plan_update(
            vm.ref, current, seen, me=who, now=now, revision=revision, verb="edit", note=note
        )

    return _change(vm, await _run(fleet, vm, "edit the reservation of", who, plan), "updated")


async def release(fleet: Fleet, vm: VM, *, force: bool = False, me: str | None = None) -> Change:
    """End the caller's reservation of ``vm`` (anyone's with ``force``).

    Releasing a VM that is already free writes nothing and returns action ``unchanged``.
    The element stays, without an owner, so the revision keeps counting.
    """
    who = me or current_user(fleet.config)
    seen = vm.reservation

    def plan(current: Record | None, revision: int, now: float) -> Record | None:
        return plan_release(vm.ref, current, seen, me=who, force=force, now=now, revision=revision)

    outcome = await _run(fleet, vm, "release", who, plan)
    return _change(vm, outcome, "released" if outcome.written else "unchanged")
