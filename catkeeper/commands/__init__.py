"""The command table: every user action once, and the faces generated from it.

Each :class:`Command` says what an action is called (name and aliases), how it is reached
(key, ``:`` command, palette, CLI verb), what it acts on (:class:`Scope`), whether it
changes anything (read-only mode hides it), when it asks first (:class:`Confirm`) and how it
treats a VM someone else has reserved (:class:`Holder`), and which backend call does the
work. The TUI's bindings, ``:`` parser, palette and help screen and the CLI's verbs are
built from :data:`COMMANDS`, so an action is added here and reaches every face; the tests
check that each entry is reachable from every face it declares, and that the README's key
and command tables (``python -m catkeeper.commands --markdown``) match.

Pure on purpose: no textual, no libvirt. Backend calls are named as ``"module:attribute"``
and imported only when used (:func:`resolve`), so building the CLI parser stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from catkeeper.commands.model import (
    ALL_FACES,
    TUI_FACES,
    Command,
    Confirm,
    Face,
    Holder,
    Scope,
)
from catkeeper.commands.table import COMMANDS

__all__ = [
    "ALL_FACES",
    "COMMANDS",
    "TUI_FACES",
    "Command",
    "Confirm",
    "Face",
    "Holder",
    "Scope",
    "find",
    "get",
    "groups",
    "reaching",
    "resolve",
]

_BY_NAME: dict[str, Command] = {n: c for c in COMMANDS for n in c.names}


def find(name: str) -> Command | None:
    """The command called ``name`` (or one of its aliases), case-insensitive."""
    return _BY_NAME.get(name.lower())


def get(name: str) -> Command:
    """Like :func:`find`, for names the code itself uses: a typo is a bug, not a user error."""
    command = find(name)
    if command is None:
        raise KeyError(f"no command {name!r} in catkeeper.commands")
    return command


def reaching(face: Face, *, readonly: bool = False) -> Iterator[Command]:
    """The commands reachable from ``face``, in table order (read-only: no changes)."""
    for command in COMMANDS:
        if face in command.faces and not (readonly and command.mutating):
            yield command


def groups(commands: Iterable[Command]) -> dict[str, list[Command]]:
    out: dict[str, list[Command]] = {}
    for command in commands:
        out.setdefault(command.group, []).append(command)
    return out


def resolve(reference: str) -> Any:
    """Import the backend object a ``call`` names (``"package.module:Attribute"``)."""
    module, _, attribute = reference.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj
