"""The reservation operations (reserve, apply, extend, edit the note, release) on a fleet."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import libvirt

from catkeeper.backend import audit
from catkeeper.backend.errors import (
    BackendError,
    CallTimeout,
    HostUnavailable,
    NotFound,
    describe,
    error_code,
)
from catkeeper.backend.reservations.metadata import Record
from catkeeper.backend.reservations.rules import (
    Action,
    Change,
    InvalidReservation,
    ReservationBusy,
    ReservationError,
    ReservationRequest,
    WriteDenied,
    plan_release,
    plan_reserve,
    plan_update,
)
from catkeeper.backend.reservations.transaction import (
    DENIED,
    LOCK_WAIT_S,
    Outcome,
    Planner,
    _LockBusy,
    _TooSlow,
    _WriteFailed,
    transact,
)
from catkeeper.backend.reservations.when import format_when
from catkeeper.config import current_user
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# The operations


async def _run(fleet: Fleet, vm: VM, verb: str, who: str, plan: Planner) -> Outcome:
    session = fleet.writable(vm.host, f"{verb} {vm.ref}")
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
        await audit.reservation_written(fleet, vm, outcome.before, outcome.after, who=who)
    return outcome


def _mapped(exc: libvirt.libvirtError, message: str) -> BackendError:
    code = error_code(exc)
    if code in DENIED:
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
