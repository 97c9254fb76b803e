"""The vocabulary of the command table: what an action works on, where it is reached, when it
asks first, and how it treats someone else's reservation. Pure: no textual, no libvirt."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.Enum):
    """What an action works on."""

    VM = "one VM"  # the cursor's VM (or the one marked); one at a time
    VMS = "marked VMs"  # every marked VM, else the cursor's; several at once
    HOST = "a host"  # the cursor's host, or the one named
    FLEET = "the fleet"  # no particular VM (create a VM, list reservations)
    UI = "the screen"  # navigation: filter, sort, help, quit


class Face(enum.Enum):
    """Where a user can reach an action."""

    KEY = "key"
    COLON = ":"
    PALETTE = "palette"
    CLI = "cli"


class Confirm(enum.Enum):
    """When an action asks before it runs."""

    NEVER = "never"
    MANY = "many"  # only when it acts on more than one VM
    ALWAYS = "always"


class Holder(enum.Enum):
    """What happens when someone else holds an active reservation of a target VM."""

    IGNORE = "ignore"  # reading is fine whoever holds it
    ASK = "ask"  # ask first, naming the holder (CLI: refuse unless --yes / --confirm-name)
    OWN_RULES = "own"  # reservation changes: taking over is the reservation form's business


ALL_FACES = frozenset(Face)
TUI_FACES = frozenset({Face.KEY, Face.COLON, Face.PALETTE})


@dataclass(frozen=True)
class Command:
    name: str  # the : command and the CLI verb
    label: str  # the palette's and the footer's text
    help: str  # one line: what it does
    group: str  # the help screen's and the README's section
    scope: Scope
    faces: frozenset[Face]
    keys: tuple[str, ...] = ()  # Textual key names; the first is the one shown
    key_display: str | None = None
    footer: bool = False  # shown in the footer bar
    aliases: tuple[str, ...] = ()  # more : commands / CLI verbs for it
    usage: str = ""  # the arguments after ``:name`` (the cursor's or marked VMs are implied)
    cli_usage: str = ""  # the arguments after ``catkeeper name`` (default: ``usage``)
    mutating: bool = False  # changes a VM or a host: hidden and refused in read-only mode
    confirm: Confirm = Confirm.NEVER
    holder: Holder = Holder.IGNORE
    call: str = ""  # the backend entry point, "module:attribute" (empty: UI only)
    cli: str = ""  # the module carrying out the CLI verb ("" when there is none)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def cli_synopsis(self) -> str:
        return self.cli_usage or self.usage

    @property
    def key_shown(self) -> str:
        """The key as help and the README print it."""
        if self.key_display:
            return self.key_display
        return " ".join(_key_name(k) for k in self.keys)

    @property
    def action(self) -> str:
        """The Textual action string its key binding runs."""
        return f"command('{self.name}')"

    def reaches(self, face: Face) -> bool:
        return face in self.faces

    def asks(self, count: int, held: bool) -> bool:
        """Whether acting on ``count`` VMs asks first (``held``: someone else holds one)."""
        if held and self.holder is Holder.ASK:
            return True
        if self.confirm is Confirm.ALWAYS:
            return True
        return self.confirm is Confirm.MANY and count > 1


def _key_name(key: str) -> str:
    names = {"slash": "/", "colon": ":", "question_mark": "?", "space": "space"}
    if key in names:
        return names[key]
    return key.replace("ctrl+", "^")
