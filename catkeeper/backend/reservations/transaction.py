"""The reservation write as one transaction on the host's thread, under the lock kept in the
domain's own metadata (the scheme is described in the package docstring)."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from catkeeper.backend.errors import describe, error_code
from catkeeper.backend.reservations import metadata as rx
from catkeeper.backend.reservations.metadata import LockSlot, Record

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
DENIED = frozenset(
    {
        libvirt.VIR_ERR_OPERATION_DENIED,
        libvirt.VIR_ERR_ACCESS_DENIED,
        libvirt.VIR_ERR_AUTH_FAILED,
    }
)


# ---------------------------------------------------------------------------------------
# Who is asking


def _client() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
            if error_code(exc) not in DENIED:
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
