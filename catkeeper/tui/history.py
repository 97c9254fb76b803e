"""The audit trail in the TUI: ``:history`` (the detail screen, scrolled to its History
section), that section wired to the backend, and audit warnings as toasts.

A warning is what the backend reports when an entry could not be written (VM gone, host
read-only or slow): the change itself happened, so it is a toast, never an error dialog.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from catkeeper.backend import audit
from catkeeper.commands import Command
from catkeeper.model import VM
from catkeeper.tui.consoles import one_vm
from catkeeper.tui.host import Handler, Host
from catkeeper.widgets.audit_view import AuditHistory


def watch_warnings(host: Host) -> Callable[[], None]:
    return audit.watch(
        host.fleet, lambda message: host.notify(message, title="Audit trail", severity="warning")
    )


def section(host: Host, vm: VM, *, scroll: bool = False) -> AuditHistory:
    """The History section of ``vm``'s detail screen (``scroll``: brought into view)."""

    def readonly() -> bool:
        # :readonly flips the sessions too; a host configured read-only is read-only anyway.
        session = host.fleet.sessions.get(vm.host)
        return host.readonly or (session is not None and session.readonly)

    return AuditHistory(
        vm,
        lambda v: audit.read(host.fleet, v),
        clock=host.clock,
        readonly=readonly,
        recorded=lambda listener: audit.on_recorded(host.fleet, listener),
        scroll_into_view=scroll,
    )


def handler(host: Host, open_detail: Callable[..., None]) -> Handler:
    """``:history``: the cursor's (or the one marked) VM's detail screen, at its history."""

    def run(_command: Command, _args: Sequence[str]) -> None:
        vm = one_vm(host, "history")
        if vm is not None:
            open_detail(vm, to_history=True)

    return run
