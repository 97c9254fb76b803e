"""``catkeeper edit TARGET``: the VM's XML in ``$VISUAL``/``$EDITOR``, checked, diffed, applied.

The same flow as the TUI's ``e`` (``backend.vm.xmledit``): the persistent XML (with secrets,
so the file is private, mode 0600) goes to the editor — split like a shell would split it,
run as an argv, never through a shell; ``vi`` when neither is set. An unchanged file changes
nothing. Otherwise the unified diff is printed and, after a yes (``--yes``: without asking),
applied only if the definition is still the one that was edited. When the edit is refused
(not well-formed, a changed name or UUID, libvirt's schema) nothing changes; on a terminal
the user may edit the same text again, else the text is kept in a file whose path is
printed, so no typing is lost. Someone else's reserved VM needs ``--yes`` or
``--confirm-name NAME`` first (exit 5). Exit codes: ``catkeeper.cli.common.Exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    add_holder_arguments,
    add_target_arguments,
    ask,
    backend_errors,
    check_holders,
    emit,
    err,
    finish,
    hosts_named,
    json_flag,
    open_fleet,
    select,
    wait_host_flag,
)
from catkeeper.config import Config, current_user

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet
    from catkeeper.commands import Command
    from catkeeper.model import VM


def add_arguments(p: argparse.ArgumentParser, _command: Command) -> None:
    add_target_arguments(p, many=False)
    add_holder_arguments(p)
    json_flag(p)
    wait_host_flag(p)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    """Edit the VM ``args.target`` names; the exit code."""
    return finish(_edit(args, config, clock))


async def _run_editor(argv: list[str], path: Path) -> int:
    # The editor owns the terminal: stdin, stdout and stderr are ours, passed on.
    try:
        proc = await asyncio.create_subprocess_exec(*argv, str(path))
    except OSError as exc:
        raise CliError(Exit.FAILED, f"cannot run {argv[0]}: {exc}") from None
    return await proc.wait()


async def _edit(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper.backend.errors import BackendError
    from catkeeper.backend.vm import xmledit

    try:
        argv = xmledit.editor_argv(os.environ)
    except BackendError as exc:
        raise CliError(Exit.USAGE, str(exc)) from None
    async with open_fleet(
        args, config, only=hosts_named([args.target], args), clock=clock
    ) as fleet:
        [vm] = select(fleet, [args.target], None, current_user(config))
        check_holders(_command(), [vm], args, config, fleet.clock())
        with backend_errors():
            base = await xmledit.get_xml(fleet, vm)
        fd, name = tempfile.mkstemp(prefix=f"catkeeper-{vm.name}-", suffix=".xml")
        path = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(base)
        keep = False
        try:
            code, keep = await _loop(fleet, vm, args, argv, path, base)
        finally:
            if not keep:
                path.unlink(missing_ok=True)
    return int(code)


async def _loop(
    fleet: Fleet, vm: VM, args: argparse.Namespace, argv: list[str], path: Path, base: str
) -> tuple[Exit, bool]:
    """Edit until applied, unchanged or given up; (exit code, keep the file)."""
    from catkeeper.backend.errors import BackendError
    from catkeeper.backend.vm import xmledit

    while True:
        status = await _run_editor(argv, path)
        if status != 0:
            err(f"{argv[0]} exited with status {status}; nothing applied")
            return Exit.FAILED, False
        edited = path.read_text(encoding="utf-8")
        if edited == base:
            emit(args, {"ref": vm.ref, "changed": False}, f"{vm.ref}: no changes")
            return Exit.OK, False
        diff = xmledit.diff(base, edited, vm.ref)
        if not getattr(args, "json", False):
            print(diff, end="", flush=True)
        if not args.yes:
            answer = ask(f"Apply these changes to {vm.ref}? [y/N/e(dit again)] ")
            if answer is None:
                err(f"not applied (no terminal to ask on; pass --yes); your edit is kept in {path}")
                return Exit.USAGE, True
            choice = answer.strip().lower()
            if choice in ("e", "edit"):
                continue
            if choice not in ("y", "yes"):
                err(f"{vm.ref}: edit discarded")
                return Exit.FAILED, False
        try:
            applied = await xmledit.apply_xml(fleet, vm, edited, base=base)
        except xmledit.XmlEditError as exc:
            err(f"{vm.ref}: not applied, nothing changed: {exc}")
            again = ask("Edit again? [Y/n] ")
            if again is not None and again.strip().lower() in ("", "y", "yes"):
                continue
            err(f"your edit is kept in {path}")
            return Exit.FAILED, True
        except BackendError as exc:
            err(f"{exc}; your edit is kept in {path}")
            return Exit.FAILED, True
        when = " (it runs: at its next boot)" if applied.running else ""
        doc = {"ref": vm.ref, "changed": True, "running": applied.running, "diff": diff}
        emit(args, doc, f"{vm.ref}: new definition applied{when}")
        return Exit.OK, False


def _command() -> Command:
    from catkeeper import commands

    return commands.get("edit")
