"""The power entries of the command table: start, stop, shutdown, force off, reboot, reset,
pause and resume share one shape (every face, the marked VMs, ask about someone else's VM),
so one helper builds them and :mod:`catkeeper.commands.table` keeps the rest."""

from __future__ import annotations

from catkeeper.commands.model import ALL_FACES, Command, Confirm, Holder, Scope

_LIFECYCLE = "catkeeper.backend.actions"


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


POWER_COMMANDS: tuple[Command, ...] = (
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
)
