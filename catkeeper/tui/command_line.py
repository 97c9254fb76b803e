"""The ``:`` command line, generated from the command table: the first word is any name or
alias of an entry reachable by ``:``; the rest are its arguments (shell quoting allowed).
``:help`` lists them, and an unknown word gets the list of what there is."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

from catkeeper.commands import Face, find, reaching

Run = Callable[[str, Sequence[str]], None]
Notify = Callable[[str], None]


def parse(text: str) -> tuple[str, list[str]] | str:
    """``(command name, arguments)``, or what is wrong with ``text`` ("" for nothing)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        return f":{text}: {exc}"
    if not words:
        return ""
    verb, args = words[0], words[1:]
    command = find(verb)
    if command is None or Face.COLON not in command.faces:
        known = ", ".join(f":{c.name}" for c in reaching(Face.COLON))
        return f"unknown command :{verb} (try {known})"
    return command.name, args


def run_line(text: str, run: Run, problem: Notify) -> None:
    parsed = parse(text)
    if isinstance(parsed, str):
        if parsed:
            problem(parsed)
        return
    run(*parsed)
