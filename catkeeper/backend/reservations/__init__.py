"""Reservations kept on the hosts: claim, extend, edit, release, take over.

A reservation is one element in the domain's ``<metadata>`` (format: ``metadata``),
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

Modules: ``metadata`` (the XML), ``when`` (times people type), ``rules`` (the pure planners,
errors and results), ``transaction`` (the locked write on the host's thread), ``writes``
(the operations on a fleet). This package re-exports what callers use. None of them
imports the fleet or the host at run time (types only), so ``inventory`` can import
``metadata`` without a circle.
"""

from __future__ import annotations

from catkeeper.backend.reservations.rules import (
    Change,
    InvalidReservation,
    ReservationBusy,
    ReservationConflict,
    ReservationError,
    ReservationRequest,
    WriteDenied,
    check_seen,
    plan_release,
    plan_reserve,
    plan_update,
)
from catkeeper.backend.reservations.transaction import LOCK_LEASE_S, LOCK_WAIT_S, NAMESPACE
from catkeeper.backend.reservations.when import (
    FORMS,
    UntilError,
    format_age,
    format_when,
    parse_until,
    summary,
    until_text,
)
from catkeeper.backend.reservations.writes import apply, edit_note, extend, release, reserve

__all__ = [
    "FORMS",
    "LOCK_LEASE_S",
    "LOCK_WAIT_S",
    "NAMESPACE",
    "Change",
    "InvalidReservation",
    "ReservationBusy",
    "ReservationConflict",
    "ReservationError",
    "ReservationRequest",
    "UntilError",
    "WriteDenied",
    "apply",
    "check_seen",
    "edit_note",
    "extend",
    "format_age",
    "format_when",
    "parse_until",
    "plan_release",
    "plan_reserve",
    "plan_update",
    "release",
    "reserve",
    "summary",
    "until_text",
]
