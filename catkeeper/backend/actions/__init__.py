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
    name: str  # stable identifier: CLI verb, binding/palette id
    label: str  # what a menu shows
    fn: Callable[[Fleet, VM], Awaitable[None]]
    destructive: bool  # the guest may lose unsaved state
    needs_confirm: bool  # interrupts a guest someone may be using: ask first
    applies: Callable[[VM], bool]  # makes sense in the VM's current state
    help: str = ""


def _in(*states: VmState) -> Callable[[VM], bool]:
    # A stale VM's host is unreachable: no action can reach it, so none is offered.
    return lambda vm: not vm.stale and vm.state in states


_RUNNING = (VmState.RUNNING, VmState.BLOCKED)
_ACTIVE = tuple(s for s in VmState if s.is_active)

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            name="start", label="Start", fn=start, destructive=False, needs_confirm=False,
            applies=_in(VmState.SHUTOFF, VmState.CRASHED), help="Boot the VM",
        ),
        Action(
            name="shutdown", label="Shut down", fn=shutdown, destructive=False,
            needs_confirm=True, applies=_in(*_RUNNING),
            help="Ask the guest to shut down (ACPI); it may ignore it",
        ),
        Action(
            name="stop", label="Stop", fn=_stop_action, destructive=True, needs_confirm=True,
            applies=_in(*_RUNNING),
            help="ACPI shutdown, then ctrl-alt-del, then force off if the guest ignores them",
        ),
        Action(
            name="reboot", label="Reboot", fn=reboot, destructive=False, needs_confirm=True,
            applies=_in(*_RUNNING), help="Ask the guest to reboot",
        ),
        Action(
            name="reset", label="Reset", fn=reset, destructive=True, needs_confirm=True,
            applies=_in(*_RUNNING), help="Hard reset, like the reset button",
        ),
        Action(
            name="destroy", label="Force off", fn=destroy, destructive=True, needs_confirm=True,
            applies=_in(*_ACTIVE), help="Power off at once, like pulling the plug",
        ),
        Action(
            name="suspend", label="Pause", fn=suspend, destructive=False, needs_confirm=False,
            applies=_in(*_RUNNING), help="Pause the VM's CPUs; it keeps its memory",
        ),
        Action(
            name="resume", label="Resume", fn=resume, destructive=False, needs_confirm=False,
            applies=_in(VmState.PAUSED), help="Let a paused VM run again",
        ),
    )
}  # fmt: skip


def available(vm: VM) -> list[Action]:
    """The actions that make sense for this VM now, in table order."""
    return [a for a in ACTIONS.values() if a.applies(vm)]
