"""``?``: every binding, read from the classes' BINDINGS so the list can never go stale."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from catkeeper.filtering import __doc__ as FILTER_DOC

Section = tuple[str, Sequence[BindingType]]

COMMANDS_HELP = (
    (":host NAME", "show only that host's VMs"),
    (":filter EXPR", "set the filter (same grammar as /)"),
    (":sort COLUMN", "sort by host, name, state, vcpus, memory, ips, owner, until, note"),
    (":vm NAME", "jump to a VM"),
    (":ACTION", "start, stop, shutdown, reboot, reset, destroy, suspend, resume"),
    (":reserve / :release", "the reservation form / end a reservation"),
    (":rename NEWNAME", "rename the VM under the cursor (shut off)"),
    (":clone NEWNAME [overlay]", "copy it (its disks copied, or qcow2 overlays)"),
    (":scan [host]", "find the VM's IPs (or every IP on its host)"),
    (":console / :serial", "graphical console / serial console output"),
    (":edit / :create / :delete", "edit the XML / new VM / delete the VM"),
    (":readonly", "refuse every change from now on"),
    (":quit", "leave"),
)


def grouped(bindings: Sequence[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) rows, one per action, with every key that triggers it."""
    rows: dict[tuple[str, str], list[str]] = {}
    for key, items in BindingsMap(bindings).key_to_bindings.items():
        for b in items:
            shown = b.key_display or _key_name(key)
            rows.setdefault((b.action, b.description or b.action), []).append(shown)
    return [(" ".join(dict.fromkeys(keys)), desc) for (_action, desc), keys in rows.items()]


def _key_name(key: str) -> str:
    names = {"slash": "/", "colon": ":", "question_mark": "?", "space": "space"}
    if key in names:
        return names[key]
    return key.replace("ctrl+", "^")


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90; max-width: 100%; height: 100%;
        border: thick $primary; background: $surface;
    }
    HelpScreen VerticalScroll { padding: 0 1; }
    HelpScreen .title { margin: 1 0 0 0; text-style: bold underline; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close help"),
    ]

    def __init__(self, sections: Sequence[Section], *, readonly: bool = False) -> None:
        super().__init__()
        self.sections = sections
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        frame = Vertical()
        frame.border_title = "Keys · esc closes"
        with frame, VerticalScroll():
            for title, bindings in self.sections:
                table = Table.grid(padding=(0, 2))
                table.add_column(style="bold", min_width=14)
                table.add_column()
                for keys, desc in grouped(bindings):
                    table.add_row(keys, desc)
                yield Static(title, classes="title")
                yield Static(table)
            commands = Table.grid(padding=(0, 2))
            commands.add_column(style="bold", min_width=14)
            commands.add_column()
            for cmd, desc in COMMANDS_HELP:
                commands.add_row(cmd, desc)
            yield Static(": commands", classes="title")
            yield Static(commands)
            yield Static("/ filter", classes="title")
            yield Static(Text(_grammar()))
            if self.readonly:
                yield Static(
                    Text(
                        "Read-only: everything that changes a VM (lifecycle, reservations, "
                        "edit, create, delete, rename, clone, snapshots) is refused.",
                        "bold red",
                    )
                )

    def action_close(self) -> None:
        self.dismiss(None)


def _grammar() -> str:
    """The grammar table from filtering's docstring: one source for the docs and the help."""
    doc = FILTER_DOC or ""
    _, _, table = doc.partition("::\n")
    return textwrap.dedent(table).strip()
