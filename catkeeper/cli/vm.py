"""``catkeeper delete|clone|rename|snapshot``: VM operations from the command line.

TARGET is ``HOST/VM`` or a VM name unique in the fleet (``delete`` takes several). Progress
goes to stderr, results to stdout (as JSON with ``--json``). Someone else's reserved VM is
refused (exit 5) unless ``--confirm-name NAME`` (or ``--yes``, except for ``delete``, where
only typing the name will do) — the command table's holder rule. Exit codes:
``catkeeper.cli.common.Exit``. Nothing here imports textual or rich.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    add_holder_arguments,
    add_target_arguments,
    backend_errors,
    check_holders,
    confirm,
    emit,
    err,
    finish,
    held_by_other,
    hosts_named,
    json_flag,
    open_fleet,
    select,
    wait_host_flag,
)
from catkeeper.config import Config, current_user
from catkeeper.model import VM

if TYPE_CHECKING:
    from catkeeper.backend.fleet import Fleet
    from catkeeper.commands import Command


def _common(p: argparse.ArgumentParser) -> None:
    json_flag(p)
    wait_host_flag(p)


def add_arguments(p: argparse.ArgumentParser, command: Command) -> None:
    """The options of ``command`` (delete, clone, rename or snapshot)."""
    if command.name == "delete":
        add_target_arguments(p, many=True)
        p.add_argument(
            "--storage",
            action="store_true",
            help="also delete its writable disk volumes that nothing else uses",
        )
        p.add_argument(
            "--volume", action="append", default=[], metavar="PATH", help="delete this volume too"
        )
        p.add_argument("--force-off", action="store_true", help="force a running VM off first")
        add_holder_arguments(p)
    elif command.name in ("clone", "rename"):
        add_target_arguments(p, many=False)
        p.add_argument("new_name", metavar="NEWNAME")
        if command.name == "clone":
            p.add_argument(
                "--overlay",
                action="store_true",
                help="qcow2 overlays on the original's disks, no copy",
            )
            p.add_argument(
                "--pool", default=None, help="pool for the new volumes (default: the same)"
            )
        add_holder_arguments(p)
    else:
        snaps = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
        s = snaps.add_parser("list", help="list a VM's snapshots")
        add_target_arguments(s, many=False)
        _common(s)
        s = snaps.add_parser("create", help="take a snapshot")
        add_target_arguments(s, many=False)
        s.add_argument("name", nargs="?", default="", help="default: snap-DATE-TIME")
        s.add_argument("-d", "--description", default="")
        add_holder_arguments(s)
        _common(s)
        for action, text in (("revert", "revert to a snapshot"), ("delete", "delete a snapshot")):
            s = snaps.add_parser(action, help=text)
            add_target_arguments(s, many=False)
            s.add_argument("name")
            add_holder_arguments(s)
            _common(s)
        return
    _common(p)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    """Carry out the VM command in ``args``; the exit code. ``clock`` is the fleet's "now"."""
    return finish(_run(args, config, clock))


async def _run(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper import commands

    command = commands.get(args.command_name)
    refs = list(args.targets) if command.name == "delete" else [args.target]
    filter_text = getattr(args, "filter", None) if command.name == "delete" else None
    if not refs and filter_text is None:
        raise CliError(Exit.USAGE, f"{command.name}: name a TARGET or --filter EXPR")
    async with open_fleet(args, config, only=hosts_named(refs, args), clock=clock) as fleet:
        vms = select(fleet, refs, filter_text, current_user(config))
        holder_rule = command.name != "snapshot" or args.snapshot_command != "list"
        if holder_rule:
            check_holders(
                command, vms, args, config, fleet.clock(), yes_suffices=command.name != "delete"
            )
        code = Exit.OK
        for vm in vms:  # one failing (say, running) does not keep the others
            try:
                with backend_errors():
                    code = max(code, await _HANDLERS[command.name](fleet, vm, args, config))
            except CliError as exc:
                if len(vms) == 1:
                    raise
                err(exc.message)
                code = max(code, exc.code)
    return int(code)


# ---- delete


async def _delete(fleet: Fleet, vm: VM, args: argparse.Namespace, config: Config) -> Exit:
    from catkeeper.backend.vm import vmops

    disks = await vmops.disks(fleet, vm)
    volumes = [d.path for d in disks if args.storage and d.suggested and d.path]
    known = {d.path for d in disks if d.deletable}
    for path in args.volume:
        if path not in known:
            raise CliError(Exit.USAGE, f"--volume {path}: not a storage volume of {vm.ref}")
        volumes.append(path)
    # Someone else's VM got here only with --confirm-name: typing the name was the asking.
    if held_by_other(vm, current_user(config), fleet.clock()) is None:
        listing = "".join(f"\n  and volume {p}" for p in volumes)
        if not confirm(args, f"delete {vm.ref}", f"Delete {vm.ref}?{listing}\n"):
            err("not deleted")
            return Exit.FAILED
    result = await vmops.delete(fleet, vm, volumes=volumes, force_off=args.force_off)
    kept = [d.path for d in disks if d.path and d.path not in result.removed_volumes]
    text = f"deleted {vm.ref}" + "".join(f"\n  removed {p}" for p in result.removed_volumes)
    text += "".join(f"\n  kept {p}" for p in kept)
    emit(args, {"ref": vm.ref, "removed_volumes": result.removed_volumes, "kept": kept}, text)
    return Exit.OK


# ---- clone, rename


async def _clone(fleet: Fleet, vm: VM, args: argparse.Namespace, _config: Config) -> Exit:
    from catkeeper.backend.vm import vmops

    new = await vmops.clone(
        fleet,
        vm,
        args.new_name,
        mode="overlay" if args.overlay else "copy",
        pool=args.pool,
        on_progress=lambda m: print(f"  {m}", file=sys.stderr),
    )
    emit(args, new, f"cloned {vm.ref} as {new.ref} ({new.uuid})")
    return Exit.OK


async def _rename(fleet: Fleet, vm: VM, args: argparse.Namespace, _config: Config) -> Exit:
    from catkeeper.backend.vm import vmops

    new = await vmops.rename(fleet, vm, args.new_name)
    emit(args, new, f"renamed {vm.ref} to {new.name}")
    return Exit.OK


# ---- snapshots


async def _snapshot(fleet: Fleet, vm: VM, args: argparse.Namespace, _config: Config) -> Exit:
    from catkeeper.backend.vm import snapshots

    action = args.snapshot_command
    if action == "list":
        snaps = await snapshots.list_snapshots(fleet, vm)
        lines = [
            f"{'*' if s.current else ' '} {s.name:<24} {s.state:<8} "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(s.created or 0))}  {s.description}"
            for s in snaps
        ]
        emit(args, snaps, "\n".join(lines) or f"{vm.ref} has no snapshots")
    elif action == "create":
        snap = await snapshots.create_snapshot(fleet, vm, args.name, args.description)
        emit(args, snap, f"took snapshot {snap.name} of {vm.ref}")
    elif action == "revert":
        what = f"revert {vm.ref} to {args.name}"
        if not confirm(args, what, f"Revert {vm.ref} to {args.name}? What it did since is lost."):
            return Exit.FAILED
        await snapshots.revert_snapshot(fleet, vm, args.name)
        emit(args, {"ref": vm.ref, "reverted_to": args.name}, f"reverted {vm.ref} to {args.name}")
    else:
        what = f"delete snapshot {args.name} of {vm.ref}"
        if not confirm(args, what, f"Delete snapshot {args.name} of {vm.ref}?"):
            return Exit.FAILED
        await snapshots.delete_snapshot(fleet, vm, args.name)
        emit(args, {"ref": vm.ref, "deleted": args.name}, f"deleted snapshot {args.name}")
    return Exit.OK


_Handler = Callable[["Fleet", VM, argparse.Namespace, Config], Awaitable[Exit]]
_HANDLERS: dict[str, _Handler] = {
    "delete": _delete,
    "clone": _clone,
    "rename": _rename,
    "snapshot": _snapshot,
}
