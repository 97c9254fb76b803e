"""The README's key and command tables, generated from the command table
(``python -m catkeeper.commands --markdown``)."""

from __future__ import annotations

import sys

from catkeeper.commands import COMMANDS, Face, reaching


def markdown_keys() -> str:
    """The key table of the README."""
    rows = ["| key | action | works on |", "| --- | --- | --- |"]
    for command in reaching(Face.KEY):
        keys = " ".join(f"`{k}`" for k in command.key_shown.split())
        rows.append(f"| {keys} | {command.help} | {command.scope.value} |")
    return "\n".join(rows)


def markdown_commands() -> str:
    """The README's table of ``:`` commands and CLI verbs."""
    rows = [
        "| `:` command | CLI verb | changes VMs | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for command in COMMANDS:
        colon = _cell(f":{command.name} {command.usage}") if Face.COLON in command.faces else ""
        cli = (
            _cell(f"catkeeper {command.name} {command.cli_synopsis}")
            if Face.CLI in command.faces
            else ""
        )
        if not (colon or cli):
            continue
        also = f" (also {', '.join(command.aliases)})" if command.aliases else ""
        changes = "yes" if command.mutating else ""
        rows.append(f"| {colon} | {cli} | {changes} | {command.help}{also} |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    return "`" + text.strip().replace("|", "\\|") + "`"


def main(argv: list[str]) -> int:
    if argv in (["--markdown"], []):
        print("### Keys\n\n" + markdown_keys() + "\n\n### Commands\n\n" + markdown_commands())
        return 0
    print("usage: python -m catkeeper.commands [--markdown]", file=sys.stderr)
    return 2
