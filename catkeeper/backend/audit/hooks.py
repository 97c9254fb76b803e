"""What each kind of change records, so that the call sites stay one line each.

Lifecycle actions are wrapped once where ``backend.actions`` exports them (the TUI's
``ACTIONS`` table and the CLI's command-table calls both use those names); reservation
writes record from their one transaction runner; the VM operations call :func:`record`
at their end. Every helper here runs after the change succeeded and never raises.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from catkeeper.backend.audit.store import record
from catkeeper.backend.metadata_time import format_time
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet
    from catkeeper.backend.reservations.metadata import Record

VmAction = Callable[["Fleet", VM], Awaitable[None]]

# The reservation element's own words for a write → the audit trail's action names.
_RESERVATION_ACTIONS = {
    "reserved": "reserve",
    "updated": "update-reservation",
    "took-over": "take-over",
    "released": "release",
}


def audited(action: str, fn: VmAction) -> VmAction:
    """``fn`` that, once it succeeded, records ``action`` in the VM's audit trail."""

    @functools.wraps(fn)
    async def run(fleet: Fleet, vm: VM) -> None:
        await fn(fleet, vm)
        await record(fleet, vm, action)

    return run


async def reservation_written(
    fleet: Fleet, vm: VM, before: Record | None, after: Record | None, *, who: str | None = None
) -> None:
    """Record a reservation write (``after``: what was written, ``who``: as whom)."""
    if after is None:
        return
    action = _RESERVATION_ACTIONS.get(after.action or "", after.action or "reservation")
    res = after.reservation
    if res is None:
        held = before.reservation if before is not None else None
        detail = f"was held by {held.owner}" if held is not None else ""
    else:
        parts = [f"for {res.owner}"]
        if res.until is not None:
            parts.append(f"until {format_time(res.until)}")
        if res.note:
            parts.append(repr(res.note))
        detail = ", ".join(parts)
    await record(fleet, vm, action, detail, who=who)


def xml_detail(before: str, after: str, running: bool) -> str:
    """How much of the definition an edit changed, e.g. ``"3 lines changed"``."""
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    changed = sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")))
    text = f"{changed} line{'s' if changed != 1 else ''} changed"
    return text + (" (takes effect at the next boot)" if running else "")
