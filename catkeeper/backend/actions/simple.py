"""The one-call lifecycle actions (start, shut down, force off, reboot, reset, pause,
resume) and the error they raise.

Every action runs on the VM's host threads through ``HostSession.call_domain``, so it is
bounded by the call timeout and a hung host only ever blocks itself. Failures surface as
``BackendError`` subclasses whose ``str()`` reads ``"start lab1/db01: <libvirt's message>"``,
fit to show a person as is. After an action the domain is re-read, so the inventory shows
the new state even on drivers whose events do not reach us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from catkeeper.backend.errors import (
    BackendError,
    HostUnavailable,
    describe,
    error_code,
)
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.host import HostSession
from catkeeper.model import VM

log = logging.getLogger(__name__)
T = TypeVar("T")


class ActionError(BackendError):
    """libvirt refused or failed an action. ``code`` is libvirt's error code, when known."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


async def _on_domain(session: HostSession, vm: VM, verb: str, fn: Callable[[Any], T]) -> T:
    """``fn(domain)`` on the host's threads; errors become messages naming action and VM."""
    what = f"{verb} {vm.ref}"
    try:
        return await session.call_domain(vm.uuid, fn, what=what)
    except libvirt.libvirtError as exc:
        raise ActionError(f"{what}: {describe(exc)}", code=error_code(exc)) from exc
    except HostUnavailable as exc:
        # Keep the class (callers route on it) but say what was being attempted.
        raise HostUnavailable(f"{what}: {exc}") from exc
    # CallTimeout already reads "lab1: start lab1/db01 timed out after 30 s".


async def _refresh(session: HostSession, vm: VM) -> None:
    """Re-read the domain after a change; the change itself already happened, so a failure
    here is logged, not raised (the next event or warm refresh will catch up)."""
    try:
        await session.refresh_domain(vm.uuid)
    except Exception as exc:
        log.info("re-reading %s after an action: %s", vm.ref, describe(exc))


async def _simple(fleet: Fleet, vm: VM, verb: str, fn: Callable[[Any], object]) -> None:
    session = fleet.writable(vm.host, f"{verb} {vm.ref}")
    try:
        await _on_domain(session, vm, verb, fn)
    except ActionError:
        # libvirt answered, so the host is fine: a refusal like "already running" means our
        # view was stale, and re-reading fixes it. (After a timeout or a lost host we do not
        # re-read: that would only make the user wait through a second timeout.)
        await _refresh(session, vm)
        raise
    await _refresh(session, vm)


async def start(fleet: Fleet, vm: VM) -> None:
    """Boot a shut-off (or crashed) domain."""
    await _simple(fleet, vm, "start", lambda d: d.create())


async def shutdown(fleet: Fleet, vm: VM) -> None:
    """Ask the guest to shut down (ACPI power button). Returns once the request is sent."""
    await _simple(fleet, vm, "shut down", lambda d: d.shutdown())


async def destroy(fleet: Fleet, vm: VM) -> None:
    """Force the domain off at once, like pulling the plug."""
    await _simple(fleet, vm, "force off", lambda d: d.destroy())


async def reboot(fleet: Fleet, vm: VM) -> None:
    """Ask the guest to reboot (ACPI, the guest cooperates)."""
    await _simple(fleet, vm, "reboot", lambda d: d.reboot(0))


async def reset(fleet: Fleet, vm: VM) -> None:
    """Hard reset, like the reset button: the guest gets no say."""
    await _simple(fleet, vm, "reset", lambda d: d.reset(0))


async def suspend(fleet: Fleet, vm: VM) -> None:
    """Pause the domain's CPUs (it keeps its memory)."""
    await _simple(fleet, vm, "pause", lambda d: d.suspend())


async def resume(fleet: Fleet, vm: VM) -> None:
    """Let a paused domain run again."""
    await _simple(fleet, vm, "resume", lambda d: d.resume())


async def domain_xml(fleet: Fleet, vm: VM) -> str:
    """The live domain XML as the detail screen shows it: never the secure form, so no
    VNC or disk passwords reach a screen (and a read-only connection is enough)."""
    session = fleet.session(vm.host)
    try:
        return await session.call_domain(
            vm.uuid, lambda dom: str(dom.XMLDesc(0)), what=f"reading the XML of {vm.ref}"
        )
    except libvirt.libvirtError as exc:
        raise BackendError(f"domain XML of {vm.ref}: {describe(exc)}") from exc
