"""One dispatcher for every face: a key binding (``command('start')``), a ``:`` line and a
palette hit all end in :meth:`Dispatcher.run`, which applies the table's rules the same way
(read-only refusal, "needs a VM on screen", missing arguments) and hands the entry to the
controller registered for it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from textual.widgets import Input, TextArea

from catkeeper.commands import TUI_FACES, Command, Scope, find
from catkeeper.tui.host import Handler, Host

# Scopes that act on VMs: only where VMs are shown, never on the rows behind a dialog.
ON_VMS = frozenset({Scope.VM, Scope.VMS, Scope.HOST})
# Keys that work on every screen.
EVERYWHERE = frozenset({"help", "quit", "palette"})
# Keys that open a line to type in: bound with priority (tui/keys.py), so the app takes them
# before it hands on the keys that came in the same read ("/state": "s" boots a VM if the
# table gets it); where a text field has the focus they are text and go to it.
TYPED_AFTER = frozenset({"filter", "command-line"})


class Controller(Protocol):
    def handlers(self) -> dict[str, Handler]:
        """The command-table entries it carries out, by name."""


def needs_args(command: Command) -> bool:
    """Its ``:`` form takes words that cannot be left out (``:rename NEWNAME``)."""
    return bool(command.usage) and not command.usage.startswith("[")


class Dispatcher:
    def __init__(
        self,
        host: Host,
        controllers: Sequence[Controller],
        *,
        vms_shown: Callable[[], bool],
        prompt: Callable[[str], None],
    ) -> None:
        self.host = host
        self.handlers: dict[str, Handler] = {}
        for controller in controllers:
            for name, handler in controller.handlers().items():
                if name in self.handlers:
                    raise LookupError(f"two TUI handlers for {name!r}")
                self.handlers[name] = handler
        self._vms_shown = vms_shown
        self._prompt = prompt
        missing = [c.name for c in _tui_commands() if c.name not in self.handlers]
        if missing:  # a table entry the TUI declares but cannot run: a bug, caught at start
            raise LookupError(f"no TUI handler for {', '.join(missing)}")

    def allowed(self, name: str) -> bool:
        """Whether a key for ``name`` works now (else hidden and inert)."""
        command = find(name)
        if command is None or (command.mutating and self.host.readonly):
            return False
        if command.name in TYPED_AFTER and isinstance(self.host.focused, (Input, TextArea)):
            return False
        # Over a dialog or the serial console only the keys that leave or explain work:
        # "/" there must not pull the fleet screen out from under an open question.
        return command.name in EVERYWHERE or self._vms_shown()

    def run(self, name: str, args: Sequence[str] = ()) -> None:
        host = self.host
        command = find(name)
        if command is None or command.name not in self.handlers:
            host.notify(f"no command {name!r}", severity="error")
            return
        if command.mutating and host.readonly:
            host.notify(
                f"read-only mode: {command.label.rstrip('…').lower()} refused",
                title="Refused",
                severity="error",
            )
            return
        if command.scope in ON_VMS and not self._vms_shown():
            host.notify(f"{command.label.rstrip('…')}: no VM here to act on", severity="warning")
            return
        if needs_args(command) and not args and command.name != "filter":
            host.notify(f"usage: :{command.name} {command.usage}", severity="warning")
            self._prompt(f"{command.name} ")
            return
        self.handlers[command.name](command, list(args))


def _tui_commands() -> list[Command]:
    from catkeeper.commands import COMMANDS

    return [c for c in COMMANDS if c.faces & TUI_FACES]
