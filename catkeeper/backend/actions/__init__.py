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

from catkeeper.backend.actions.graceful import (
    KEY_DELETE,
    KEY_LEFTALT,
    KEY_LEFTCTRL,
    GracefulStop,
    _stop_action,
    graceful_stop,
)
from catkeeper.backend.actions.simple import (
    ActionError,
    destroy,
    domain_xml,
    reboot,
    reset,
    resume,
    shutdown,
    start,
    suspend,
)
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
        Action("stop", _stop_action, _in(*_RUNNING)),
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
