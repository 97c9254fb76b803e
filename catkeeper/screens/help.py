"""``?``: every command of the table (its keys and its ``:`` form, by group), then the keys
each screen adds of its own, read from the classes' BINDINGS, so the list can never go
stale. Read-only mode leaves out everything that would change a VM."""

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

from catkeeper.commands import COMMANDS, Command, Face, groups
from catkeeper.commands.model import _key_name
from catkeeper.filtering import __doc__ as FILTER_DOC

Section = tuple[str, Sequence[BindingType]]


def grouped(bindings: Sequence[BindingType]) -> list[tuple[str, str]]:
    """(keys, description) rows, one per action, with every key that triggers it."""
    rows: dict[tuple[str, str], list[str]] = {}
    for key, items in BindingsMap(bindings).key_to_bindings.items():
        for b in items:
            shown = b.key_display or _key_name(key)
            rows.setdefault((b.action, b.description or b.action), []).append(shown)
    return [(" ".join(dict.fromkeys(keys)), desc) for (_action, desc), keys in rows.items()]


def command_rows(commands: Sequence[Command]) -> list[tuple[str, str, str]]:
    """(key, : form, what it does) per command."""
    rows = []
    for c in commands:
        colon = ""
        if Face.COLON in c.faces:
            colon = " ".join(f":{n}" for n in c.names if n != "?")
            colon += f" {c.usage}" if c.usage else ""
        rows.append(
            (c.key_shown if Face.KEY in c.faces else "", colon, f"{c.label.rstrip('…')}: {c.help}")
        )
    return rows


def _grid(columns: int) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", min_width=8)
    for _ in range(columns - 1):
        table.add_column()
    return table


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 100; max-width: 100%; height: 100%;
        border: thick $primary; background: $surface;
    }
    HelpScreen VerticalScroll { padding: 0 1; }
    HelpScreen .title { margin: 1 0 0 0; text-style: bold underline; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close help"),
    ]

    def __init__(self, sections: Sequence[Section], *, readonly: bool = False) -> None:
        """``sections``: the keys screens and widgets add besides the command table's."""
        super().__init__()
        self.sections = sections
        self.readonly = readonly

    def compose(self) -> ComposeResult:
        frame = Vertical()
        frame.border_title = "Keys and commands · esc closes"
        shown = [
            c
            for c in COMMANDS
            if c.faces & {Face.KEY, Face.COLON} and not (self.readonly and c.mutating)
        ]
        with frame, VerticalScroll():
            for title, commands in groups(shown).items():
                table = _grid(3)
                for row in command_rows(commands):
                    table.add_row(*row)
                yield Static(title, classes="title")
                yield Static(table)
            for title, bindings in self.sections:
                table = _grid(2)
                for keys, desc in grouped(bindings):
                    table.add_row(keys, desc)
                yield Static(title, classes="title")
                yield Static(table)
            yield Static("/ filter", classes="title")
            yield Static(Text(_grammar()))
            if self.readonly:
                yield Static(
                    Text(
                        "Read-only: everything that changes a VM (lifecycle, reservations, "
                        "edit, create, delete, rename, clone, snapshots) is hidden and refused.",
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
