"""VM lifecycle actions, shared by the TUI and the CLI.

``simple`` holds the one-call actions (start, shutdown, destroy, reboot, reset, suspend,
resume) and ``ActionError``; ``graceful`` the escalating ``GracefulStop``. ``ACTIONS`` says,
per action, in which VM states it makes sense (the command table in ``catkeeper.commands``
says everything else: keys, confirmation, holder rule). Every public name of the former
single module is re-exported here, so ``from catkeeper.backend.actions import X`` keeps
working.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from catkeeper.backend import audit
from catkeeper.backend.actions import graceful, simple
from catkeeper.backend.actions.graceful import (
    KEY_DELETE,
    KEY_LEFTALT,
    KEY_LEFTCTRL,
    _stop_action,
    graceful_stop,
)
from catkeeper.backend.actions.simple import ActionError, domain_xml
from catkeeper.backend.fleet import Fleet
from catkeeper.model import FINAL_STAGES, VM, Stage, StopProgress, VmState

__all__ = [
    "ACTIONS",
    "FINAL_STAGES",
    "KEY_DELETE",
    "KEY_LEFTALT",
    "KEY_LEFTCTRL",
    "Action",
    "ActionError",
    "GracefulStop",
    "Stage",
    "StopProgress",
    "available",
    "destroy",
    "domain_xml",
    "graceful_stop",
    "reboot",
    "reset",
    "resume",
    "shutdown",
    "start",
    "suspend",
]


# ---------------------------------------------------------------------------------------
# Every change is recorded in the VM's audit trail: wrapped here, once, because the TUI
# (``ACTIONS``) and the CLI (the command table's ``call``) both take the actions from here.

start = audit.audited("start", simple.start)
shutdown = audit.audited("shutdown", simple.shutdown)
destroy = audit.audited("destroy", simple.destroy)
reboot = audit.audited("reboot", simple.reboot)
reset = audit.audited("reset", simple.reset)
suspend = audit.audited("pause", simple.suspend)
resume = audit.audited("resume", simple.resume)


class GracefulStop(graceful.GracefulStop):
    """The escalating stop; recorded in the audit trail once it sent the guest anything."""

    _sent = False

    def _report(self, stage: Stage, deadline: float | None, message: str) -> StopProgress:
        self._sent = self._sent or stage in ("acpi", "ctrl-alt-del", "destroy")
        return super()._report(stage, deadline, message)

    async def run(self) -> StopProgress:
        final = await super().run()
        if self._sent:
            what = final.message.removeprefix(f"{self.vm.ref} ")
            await audit.record(self.fleet, self.vm, "stop", f"{final.stage}: {what}")
        return final


# ---------------------------------------------------------------------------------------
# The table the UI is built from


@dataclass(frozen=True)
class Action:
    """What only the backend knows of a power action: its function and the VM states it
    makes sense in. Names, labels, help and when to ask first live in the command table
    (:mod:`catkeeper.commands`)."""

    name: str  # the backend's name (the command table's ``pause`` is ``suspend`` here)
    fn: Callable[[Fleet, VM], Awaitable[None]]
    applies: Callable[[VM], bool]  # makes sense in the VM's current state


def _in(*states: VmState) -> Callable[[VM], bool]:
    # A stale VM's host is unreachable: no action can reach it, so none is offered.
    return lambda vm: not vm.stale and vm.state in states


_RUNNING = (VmState.RUNNING, VmState.BLOCKED)
_ACTIVE = tuple(s for s in VmState if s.is_active)

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("start", start, _in(VmState.SHUTOFF, VmState.CRASHED)),
        Action("shutdown", shutdown, _in(*_RUNNING)),
        Action("stop", audit.audited("stop", _stop_action), _in(*_RUNNING)),
        Action("reboot", reboot, _in(*_RUNNING)),
        Action("reset", reset, _in(*_RUNNING)),
        Action("destroy", destroy, _in(*_ACTIVE)),
        Action("suspend", suspend, _in(*_RUNNING)),
        Action("resume", resume, _in(VmState.PAUSED)),
    )
}


def available(vm: VM) -> list[Action]:
    """The actions that make sense for this VM now, in table order."""
    return [a for a in ACTIONS.values() if a.applies(vm)]
