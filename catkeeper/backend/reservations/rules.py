"""Reservation rules as pure functions of (current record, what the caller saw, the clock),
and the errors and results they produce: the conflict rules are tested without libvirt."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

from catkeeper.backend.errors import (
    BackendError,
    ReadOnlyError,
)
from catkeeper.backend.reservations.metadata import LockSlot, Record
from catkeeper.backend.reservations.when import format_age, summary
from catkeeper.model import Reservation

log = logging.getLogger(__name__)

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
