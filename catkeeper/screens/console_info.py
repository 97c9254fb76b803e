"""The "no display here" panel: how to reach a VM's console from the user's own machine.

Takes plain data (a :class:`~catkeeper.backend.console.plan.ConnectionInfo`); the tunnel it
describes belongs to whoever opened it, and stays open after this panel closes until they
close it (the jump command goes through it).
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from catkeeper.backend.console.plan import ConnectionInfo


def _describe(info: ConnectionInfo) -> Text:
    text = Text()
    if info.reason:
        text.append("No viewer started: ", "bold")
        text.append(f"{info.reason}.\n\n")
    text.append("Console  ", "dim")
    text.append(f"{info.protocol.upper()} of {info.vm}\n")
    text.append("Reaches  ", "dim")
    text.append(f"{info.target}\n")
    text.append("Here     ", "dim")
    text.append(info.endpoint, "bold")
    text.append(" (a viewer on this machine connects here)\n")
    if info.has_password:
        text.append("\nThe console has a password; catkeeper never shows it.", "italic")
    text.rstrip()
    return text


def _commands(info: ConnectionInfo) -> list[tuple[str, str]]:
    out = []
    if info.ssh_command:
        out.append(("On your own machine, straight to the host:", info.ssh_command))
    if info.jump_command:
        out.append(
            ("Or through this machine (while catkeeper keeps the tunnel):", info.jump_command)
        )
    if info.viewer_command:
        then = "then" if out else "Connect with"
        out.append((f"{then.capitalize()}:", info.viewer_command))
    return out


class ConsoleInfoScreen(ModalScreen[None]):
    """``c`` copies the first ssh command to the clipboard (OSC 52); ``esc`` closes."""

    DEFAULT_CSS = """
    ConsoleInfoScreen { align: center middle; }
    ConsoleInfoScreen > VerticalScroll {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    ConsoleInfoScreen #title { text-style: bold; margin: 0 0 1 0; }
    ConsoleInfoScreen .label { color: $text-muted; margin: 1 0 0 0; }
    ConsoleInfoScreen .command {
        background: $boost; padding: 0 1; width: 100%;
    }
    ConsoleInfoScreen #keys { color: $text-muted; margin: 1 0 0 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "close", "Close"),
        Binding("c", "copy", "Copy ssh command"),
    ]

    def __init__(self, info: ConnectionInfo) -> None:
        super().__init__()
        self.info = info

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(f"Console of {self.info.vm}", id="title")
            yield Static(_describe(self.info), id="summary")
            for i, (label, command) in enumerate(_commands(self.info)):
                yield Label(label, classes="label")
                yield Static(Text(command), classes="command", id=f"command-{i}")
            yield Label("esc close · c copy the first command", id="keys")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_copy(self) -> None:
        command = self.info.ssh_command or self.info.jump_command or self.info.viewer_command
        if command:
            self.app.copy_to_clipboard(command)
            self.notify("Copied to the clipboard (if your terminal allows it)", timeout=3)
