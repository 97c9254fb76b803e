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

import enum
import importlib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


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


_LIFECYCLE = "catkeeper.backend.actions"
_ALL_BUT_CLI = TUI_FACES


def _power(
    name: str,
    key: str,
    label: str,
    help: str,
    *,
    confirm: Confirm,
    call: str | None = None,
    footer: bool = False,
    key_display: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Command:
    return Command(
        name=name,
        label=label,
        help=help,
        group="Power",
        scope=Scope.VMS,
        faces=ALL_FACES,
        keys=(key,),
        key_display=key_display,
        footer=footer,
        aliases=aliases,
        cli_usage="TARGET… | --filter EXPR",
        mutating=True,
        confirm=confirm,
        holder=Holder.ASK,
        call=f"{_LIFECYCLE}:{call or name}",
        cli="catkeeper.cli.lifecycle",
    )


COMMANDS: tuple[Command, ...] = (
    # ---- power ------------------------------------------------------------------------
    _power("start", "s", "Start", "Boot the VM", confirm=Confirm.MANY, footer=True),
    _power(
        "stop",
        "S",
        "Stop",
        "Graceful stop: ACPI, then ctrl-alt-del, then force off if the guest ignores them",
        confirm=Confirm.ALWAYS,
        footer=True,
        call="GracefulStop",
    ),
    _power(
        "shutdown",
        "d",
        "ACPI shutdown",
        "Ask the guest to shut down (ACPI); it may ignore it",
        confirm=Confirm.ALWAYS,
    ),
    _power(
        "destroy",
        "ctrl+k",
        "Force off",
        "Power off at once, like pulling the plug",
        confirm=Confirm.ALWAYS,
        footer=True,
        key_display="^k",
        aliases=("force-off",),
    ),
    _power("reboot", "b", "Reboot", "Ask the guest to reboot", confirm=Confirm.ALWAYS),
    _power("reset", "B", "Reset", "Hard reset, like the reset button", confirm=Confirm.ALWAYS),
    _power(
        "pause",
        "p",
        "Pause",
        "Pause the VM's CPUs; it keeps its memory",
        confirm=Confirm.MANY,
        call="suspend",
        aliases=("suspend",),
    ),
    _power("resume", "u", "Resume", "Let a paused VM run again", confirm=Confirm.MANY),
    Command(
        name="cancel-stop",
        label="Cancel graceful stop",
        help="Stop escalating a graceful stop; leave the VM as it is",
        group="Power",
        scope=Scope.VMS,
        faces=_ALL_BUT_CLI,  # a CLI stop runs in its own process: Ctrl-C cancels it
        keys=("C",),
        mutating=True,
    ),
    # ---- reservations -----------------------------------------------------------------
    Command(
        name="reserve",
        label="Reserve VM…",
        help="Reserve it, edit your reservation or take one over",
        group="Reservations",
        scope=Scope.VMS,
        faces=ALL_FACES,
        keys=("r",),
        footer=True,
        cli_usage="TARGET… [--until WHEN] [--note TEXT]",
        mutating=True,
        holder=Holder.OWN_RULES,
        call="catkeeper.backend.reservations:apply",
        cli="catkeeper.cli.reserve",
    ),
    Command(
        name="release",
        label="Release reservation",
        help="End the reservation (someone else's only when you say so)",
        group="Reservations",
        scope=Scope.VMS,
        faces=ALL_FACES,
        keys=("R",),
        cli_usage="TARGET…",
        mutating=True,
        confirm=Confirm.ALWAYS,
        holder=Holder.OWN_RULES,
        call="catkeeper.backend.reservations:release",
        cli="catkeeper.cli.reserve",
    ),
    Command(
        name="reservations",
        label="List reservations",
        help="Every reserved VM: holder, until when, note",
        group="Reservations",
        scope=Scope.FLEET,
        faces=frozenset({Face.CLI}),
        usage="[--mine] [--expired] [--filter EXPR]",
        cli="catkeeper.cli.reserve",
    ),
    # ---- consoles ---------------------------------------------------------------------
    Command(
        name="console",
        label="Open console",
        help="VNC/SPICE viewer (through an ssh tunnel when needed), or how to connect",
        group="Consoles",
        scope=Scope.VM,
        faces=ALL_FACES,
        keys=("v",),
        footer=True,
        aliases=("vnc",),
        cli_usage="TARGET",
        call="catkeeper.backend.console.viewer:Consoles",
        cli="catkeeper.cli.console",
    ),
    Command(
        name="serial",
        label="Serial console",
        help="The VM's serial console, streamed until you leave",
        group="Consoles",
        scope=Scope.VM,
        faces=ALL_FACES,
        keys=("c",),
        cli_usage="TARGET",
        call="catkeeper.backend.console.serial:open_serial",
        cli="catkeeper.cli.console",
    ),
    # ---- guest IPs --------------------------------------------------------------------
    Command(
        name="scan",
        label="Find IPs of VM",
        help="Ask libvirt (agent, lease, arp) now, sweep if nothing answers",
        group="Guest IPs",
        scope=Scope.VMS,
        faces=ALL_FACES,
        keys=("i",),
        usage="[HOST]",
        cli_usage="[HOST|TARGET…]",
        call="catkeeper.backend.ipscan.scheduler:IpScanner",
        cli="catkeeper.cli.scan",
    ),
    Command(
        name="scan-host",
        label="Find IPs on host",
        help="Every source for every VM of the host, sweeps included",
        group="Guest IPs",
        scope=Scope.HOST,
        faces=_ALL_BUT_CLI,  # the CLI's `scan HOST` does this
        keys=("I",),
        usage="[HOST]",
        call="catkeeper.backend.ipscan.scheduler:IpScanner",
    ),
    # ---- VM operations ----------------------------------------------------------------
    Command(
        name="edit",
        label="Edit XML",
        help="Edit the domain XML in $EDITOR, see the diff, apply",
        group="VMs",
        scope=Scope.VM,
        faces=ALL_FACES,
        keys=("e",),
        aliases=("edit-xml",),
        cli_usage="TARGET",
        mutating=True,
        holder=Holder.ASK,
        call="catkeeper.backend.vm.xmledit:apply_xml",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="create",
        label="New VM…",
        help="Create a VM from an image, a cloud image, a network install or an ISO",
        group="VMs",
        scope=Scope.FLEET,
        faces=ALL_FACES,
        keys=("n",),
        aliases=("new",),
        cli_usage="HOST/NAME [options]",
        mutating=True,
        call="catkeeper.backend.vm.create:create_vm",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="delete",
        label="Delete VM…",
        help="Undefine the VM and choose which of its volumes go too",
        group="VMs",
        scope=Scope.VMS,
        faces=ALL_FACES,
        keys=("ctrl+d",),
        key_display="^d",
        cli_usage="TARGET…",
        mutating=True,
        confirm=Confirm.ALWAYS,
        holder=Holder.ASK,
        call="catkeeper.backend.vm.vmops:delete",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="rename",
        label="Rename VM…",
        help="Give a shut-off VM a new name",
        group="VMs",
        scope=Scope.VM,
        faces=frozenset({Face.COLON, Face.PALETTE, Face.CLI}),
        usage="NEWNAME",
        cli_usage="TARGET NEWNAME",
        mutating=True,
        holder=Holder.ASK,
        call="catkeeper.backend.vm.vmops:rename",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="clone",
        label="Clone VM…",
        help="Copy a shut-off VM (its disks copied, or as qcow2 overlays)",
        group="VMs",
        scope=Scope.VM,
        faces=frozenset({Face.COLON, Face.PALETTE, Face.CLI}),
        usage="NEWNAME [copy|overlay]",
        cli_usage="TARGET NEWNAME [--overlay]",
        mutating=True,
        holder=Holder.ASK,
        call="catkeeper.backend.vm.vmops:clone",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="snapshot",
        label="Take a snapshot",
        help="Snapshot the marked VMs (the CLI also lists, reverts and deletes)",
        group="VMs",
        scope=Scope.VMS,
        faces=ALL_FACES - {Face.KEY},
        usage="[NAME]",
        cli_usage="list|create|revert|delete TARGET [NAME]",
        mutating=True,
        holder=Holder.ASK,
        call="catkeeper.backend.vm.snapshots:create_snapshot",
        cli="catkeeper.cli.vm",
    ),
    Command(
        name="snapshots",
        label="Snapshots…",
        help="The VM's snapshots: take, revert, delete",
        group="VMs",
        scope=Scope.VM,
        faces=TUI_FACES,
        keys=("ctrl+s",),
        key_display="^s",
        call="catkeeper.backend.vm.snapshots:list_snapshots",
    ),
    # ---- navigation -------------------------------------------------------------------
    Command(
        name="filter",
        label="Filter…",
        help="Show only VMs matching an expression (the / grammar below)",
        group="Navigation",
        scope=Scope.UI,
        faces=TUI_FACES,
        keys=("slash",),
        usage="EXPR",
    ),
    Command(
        name="command-line",
        label="Command…",
        help="Open the : command line",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.KEY, Face.PALETTE}),
        keys=("colon",),
    ),
    Command(
        name="host",
        label="Show one host",
        help="Only that host's VMs (no name: every host)",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.COLON, Face.PALETTE}),
        aliases=("hosts",),
        usage="[NAME]",
    ),
    Command(
        name="sort",
        label="Sort by…",
        help="Sort by host, name, state, vcpus, memory, ips, owner, until or note",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.COLON}),
        usage="COLUMN",
    ),
    Command(
        name="vm",
        label="Go to VM",
        help="Jump to a VM by name (HOST/VM, or a name unique in the fleet)",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.COLON, Face.PALETTE}),
        aliases=("goto",),
        usage="NAME",
    ),
    Command(
        name="readonly",
        label="Read-only mode",
        help="Refuse every change from now on (:readonly off undoes it)",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.COLON, Face.PALETTE}),
        aliases=("ro",),
        usage="[on|off]",
    ),
    Command(
        name="palette",
        label="Command palette",
        help="Every action by name, and a jump to any VM",
        group="Navigation",
        scope=Scope.UI,
        faces=frozenset({Face.KEY}),
        keys=("ctrl+p",),
        key_display="^p",
    ),
    Command(
        name="help",
        label="Show help",
        help="Every key and command",
        group="Navigation",
        scope=Scope.UI,
        faces=TUI_FACES,
        keys=("question_mark", "f1"),
        key_display="? f1",
        footer=True,
        aliases=("?",),
    ),
    Command(
        name="quit",
        label="Quit",
        help="Leave catkeeper (graceful stops in progress are cancelled)",
        group="Navigation",
        scope=Scope.UI,
        faces=TUI_FACES,
        keys=("q",),
        footer=True,
        aliases=("q", "exit"),
    ),
    Command(
        name="completion",
        label="Shell completion",
        help="Print a completion script for bash, zsh or fish",
        group="Shell",
        scope=Scope.UI,
        faces=frozenset({Face.CLI}),
        usage="bash|zsh|fish",
        cli="catkeeper.cli.completion",
    ),
)

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


# ---- the README's tables ------------------------------------------------------------------


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


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
