"""``catkeeper create|delete|clone|rename|snapshot``: VM operations from the command line.

``add_subcommands(subparsers)`` adds the commands to the main parser's subparsers;
``run(args, config)`` carries one out and returns the exit code. Progress goes to stderr,
results to stdout (as JSON with ``--json``). Nothing here imports textual or rich.

Exit codes: 0 done, 1 refused or failed (the message says why; nothing was changed unless
it says so), 2 usage, 3 the host is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from catkeeper.config import Config, current_user
from catkeeper.model import VM, to_jsonable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

COMMANDS = ("create", "delete", "clone", "rename", "snapshot")


class _Usage(Exception):
    """Bad command-line input, found before anything was changed."""


def add_subcommands(subparsers: Any) -> None:
    """Add the VM commands to ``parser.add_subparsers()``'s result."""

    def common(p: argparse.ArgumentParser, *, json_out: bool = True) -> None:
        if json_out:
            # SUPPRESS: no default here, or it would undo a global --json given before the verb.
            p.add_argument(
                "--json",
                action="store_true",
                default=argparse.SUPPRESS,
                help="print the result as JSON",
            )
        p.add_argument(
            "--wait-host",
            type=float,
            default=None,
            metavar="SECONDS",
            help="how long to wait for the host to connect (default: the connect timeout)",
        )

    # ---- create
    p = subparsers.add_parser(
        "create",
        help="create a VM",
        description="Create a VM from a disk image, a cloud image (cloud-init), a network "
        "install or an ISO. Images and ISOs are named as /path/on/host or POOL/VOLUME.",
    )
    p.set_defaults(vm_command="create")
    p.add_argument("ref", metavar="HOST/NAME", help="where to create it and its name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", metavar="IMAGE", help="boot an existing disk image")
    src.add_argument("--cloud-image", metavar="IMAGE", help="a cloud image, with cloud-init")
    src.add_argument("--netinstall", metavar="URL", help="install from an http(s) repository")
    src.add_argument("--iso", metavar="ISO", help="a blank disk and this installer ISO")
    p.add_argument(
        "--copy", action="store_true", help="--image: copy it in full instead of an overlay"
    )
    p.add_argument(
        "--ssh-key",
        action="append",
        default=[],
        metavar="KEY|FILE",
        help="--cloud-image: a public key, or a file of them (repeatable; default: "
        "~/.ssh/id_*.pub)",
    )
    p.add_argument("--user", help="--cloud-image: also create this user with the keys")
    p.add_argument(
        "--distro", help="--netinstall: suse, fedora, debian or ubuntu (default: detect)"
    )
    p.add_argument("--autoinstall", metavar="URL", help="--netinstall: AutoYaST/kickstart/preseed")
    p.add_argument("--kernel-args", default="", metavar="ARGS", help="--netinstall: more args")
    p.add_argument(
        "--wait",
        action="store_true",
        help="--netinstall: stay until the installer ends, then boot the VM from its disk",
    )
    p.add_argument("--vcpus", type=int, default=2)
    p.add_argument("--memory", default="2G", help="e.g. 2G, 512M (default 2G)")
    p.add_argument("--disk", default=None, help="disk size, e.g. 20G (default: image size or 20G)")
    p.add_argument("--pool", default="default", help="storage pool for new volumes")
    p.add_argument(
        "--network", default="network:default", help="network:NAME, bridge:NAME, user, none"
    )
    p.add_argument("--graphics", default="vnc", choices=("vnc", "none"))
    p.add_argument("--vnc-listen", default="127.0.0.1", metavar="ADDRESS")
    p.add_argument("--type", dest="domain_type", choices=("kvm", "qemu"), default=None)
    p.add_argument("--machine", default=None)
    p.add_argument("--no-start", action="store_true", help="define it but do not start it")
    p.add_argument("--paused", action="store_true", help="start it with its CPUs paused")
    common(p)

    # ---- delete
    p = subparsers.add_parser(
        "delete",
        help="delete a VM (and optionally its storage)",
        description="Undefine a VM with its snapshot metadata, managed save and NVRAM.",
    )
    p.set_defaults(vm_command="delete")
    p.add_argument("ref", metavar="HOST/VM")
    p.add_argument(
        "--storage",
        action="store_true",
        help="also delete its writable disk volumes that nothing else uses",
    )
    p.add_argument(
        "--volume", action="append", default=[], metavar="PATH", help="delete this volume too"
    )
    p.add_argument("--force-off", action="store_true", help="force a running VM off first")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.add_argument(
        "--confirm-name",
        metavar="NAME",
        help="the VM's name, required to delete a VM reserved by someone else",
    )
    common(p)

    # ---- clone
    p = subparsers.add_parser("clone", help="clone a shut-off VM")
    p.set_defaults(vm_command="clone")
    p.add_argument("ref", metavar="HOST/VM")
    p.add_argument("new_name", metavar="NEWNAME")
    p.add_argument(
        "--overlay", action="store_true", help="qcow2 overlays on the original's disks, no copy"
    )
    p.add_argument("--pool", default=None, help="pool for the new volumes (default: the same)")
    common(p)

    # ---- rename
    p = subparsers.add_parser("rename", help="rename a shut-off VM")
    p.set_defaults(vm_command="rename")
    p.add_argument("ref", metavar="HOST/VM")
    p.add_argument("new_name", metavar="NEWNAME")
    common(p)

    # ---- snapshot
    p = subparsers.add_parser("snapshot", help="list, create, revert or delete snapshots")
    p.set_defaults(vm_command="snapshot")
    snaps = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    s = snaps.add_parser("list", help="list a VM's snapshots")
    s.add_argument("ref", metavar="HOST/VM")
    common(s)
    s = snaps.add_parser("create", help="take a snapshot")
    s.add_argument("ref", metavar="HOST/VM")
    s.add_argument("name", nargs="?", default="", help="default: snap-DATE-TIME")
    s.add_argument("-d", "--description", default="")
    common(s)
    for action, text in (("revert", "revert to a snapshot"), ("delete", "delete a snapshot")):
        s = snaps.add_parser(action, help=text)
        s.add_argument("ref", metavar="HOST/VM")
        s.add_argument("name")
        s.add_argument("--yes", action="store_true", help="do not ask")
        common(s)


# ---------------------------------------------------------------------------------------


def _err(message: str) -> None:
    print(f"catkeeper: {message}", file=sys.stderr)


def _emit(args: argparse.Namespace, doc: Any, text: str, out: TextIO) -> None:
    if getattr(args, "json", False):
        out.write(json.dumps(_jsonable(doc), indent=2) + "\n")
    elif text:
        out.write(text + "\n")
    out.flush()


def _jsonable(obj: Any) -> Any:
    """Model objects (also inside dicts and lists) as plain JSON types."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return to_jsonable(obj)


def _ask(question: str) -> str | None:
    """A line from the terminal, or None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    try:
        return input(question)
    except EOFError:
        return None


def _confirm(args: argparse.Namespace, what: str, question: str) -> bool:
    if getattr(args, "yes", False):
        return True
    answer = _ask(f"{question} [y/N] ")
    if answer is None:
        raise _Usage(f"{what}: not confirmed (no terminal to ask on; pass --yes)")
    return answer.strip().lower() in ("y", "yes")


def run(
    args: argparse.Namespace,
    config: Config,
    *,
    out: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Carry out the VM command in ``args``; the exit code. ``clock`` is the fleet's "now"."""
    stream = out or sys.stdout
    try:
        return asyncio.run(_run(args, config, stream, clock))
    except _Usage as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_FAILED


async def _run(
    args: argparse.Namespace, config: Config, out: TextIO, clock: Callable[[], float]
) -> int:
    from catkeeper.backend.errors import BackendError, HostUnavailable
    from catkeeper.backend.eventloop import ensure_event_loop
    from catkeeper.backend.fleet import Fleet, UnknownHost

    ensure_event_loop()
    command = args.vm_command
    host, sep, _name = args.ref.partition("/")
    if not sep or not host or not _name:
        raise _Usage(f"{args.ref!r}: name it as HOST/{'NAME' if command == 'create' else 'VM'}")
    try:
        fleet = Fleet(config, readonly=getattr(args, "readonly", False), only=[host], clock=clock)
    except UnknownHost as exc:
        raise _Usage(str(exc)) from None
    await fleet.start()
    try:
        wait = args.wait_host if args.wait_host is not None else config.timing.connect_timeout
        await fleet.wait_settled(wait)
        session = fleet.session(host)
        if not session.connected:
            _err(f"{host} is {session.host.state.value}: {session.host.error or 'no answer'}")
            return EXIT_UNREACHABLE
        handler = _HANDLERS[command]
        return await handler(fleet, args, config, out)
    except HostUnavailable as exc:
        _err(str(exc))
        return EXIT_UNREACHABLE
    except BackendError as exc:
        _err(str(exc))
        return EXIT_FAILED
    finally:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.aclose(), 2)


def _find(fleet: Any, ref: str) -> VM:
    vm: VM = fleet.find(ref)
    return vm


# ---- create


def _ssh_keys(given: list[str]) -> tuple[str, ...]:
    sources = given or [str(p) for p in sorted(Path.home().glob(".ssh/id_*.pub"))]
    keys: list[str] = []
    for item in sources:
        if os.path.isfile(item):
            keys += [line.strip() for line in Path(item).read_text().splitlines() if line.strip()]
        else:
            keys.append(item)
    return tuple(keys)


def _spec_from(args: argparse.Namespace) -> Any:
    from catkeeper.backend.vm import create

    host, _sep, name = args.ref.partition("/")
    source: create.Source
    if args.image:
        source = create.ImageSource(args.image, copy=args.copy)
    elif args.cloud_image:
        keys = _ssh_keys(args.ssh_key)
        if not keys:
            raise _Usage("--cloud-image needs --ssh-key (no ~/.ssh/id_*.pub found)")
        source = create.CloudInitSource(args.cloud_image, ssh_keys=keys, user=args.user)
    elif args.netinstall:
        source = create.NetInstallSource(
            args.netinstall,
            distro=args.distro,
            autoinstall=args.autoinstall,
            extra_args=args.kernel_args,
        )
    else:
        source = create.IsoSource(args.iso)
    try:
        memory = create.parse_size(args.memory, "M") // create.MIB
        disk = create.parse_size(args.disk, "G") / create.GIB if args.disk else None
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    spec = create.CreateSpec(
        host=host,
        name=name,
        source=source,
        vcpus=args.vcpus,
        memory_mib=memory,
        disk_gib=disk,
        pool=args.pool,
        network=args.network,
        graphics=args.graphics,
        vnc_listen=args.vnc_listen,
        domain_type=args.domain_type,
        machine=args.machine,
        start=not args.no_start,
        paused=args.paused,
    )
    errors = create.validate(spec)
    if errors:
        raise _Usage("; ".join(f"{e.field}: {e.message}" for e in errors))
    return spec


def _progress_printer() -> Callable[[Any], None]:
    last = [0.0]

    def show(p: Any) -> None:
        if p.total:
            now = time.monotonic()
            if p.done != p.total and now - last[0] < 0.5:
                return  # a line per half second is plenty
            last[0] = now
            print(f"  {p.step}: {p.done * 100 // p.total}% of {p.total} bytes", file=sys.stderr)
        elif p.done is None:
            print(f"  {p.message}", file=sys.stderr)

    return show


async def _create(fleet: Any, args: argparse.Namespace, _config: Config, out: TextIO) -> int:
    from catkeeper.backend.vm import create, netinstall

    spec = _spec_from(args)
    created = await create.create_vm(fleet, spec, on_progress=_progress_printer())
    doc: dict[str, Any] = {
        "ref": created.ref,
        "uuid": created.uuid,
        "volumes": list(created.volumes),
        "install_pending": created.install_pending,
        "vm": created.vm,
    }
    text = f"created {created.ref} ({created.uuid})"
    if created.install_pending:
        if args.wait:
            finished = await netinstall.InstallWatcher(
                fleet, spec.host, created.uuid, on_progress=lambda m: _err(m)
            ).wait()
            doc["install_pending"] = False
            doc["install"] = dataclasses.asdict(finished)
            text += "; installed and started from its disk"
        else:
            text += (
                "; the installer runs. When it ends the VM stops: run this command again with "
                "--wait, or start it (its installer volumes stay until catkeeper switches over)"
            )
    _emit(args, doc, text, out)
    return EXIT_OK


# ---- delete


async def _delete(fleet: Any, args: argparse.Namespace, config: Config, out: TextIO) -> int:
    from catkeeper.backend.vm import vmops

    vm = _find(fleet, args.ref)
    disks = await vmops.disks(fleet, vm)
    volumes = [d.path for d in disks if args.storage and d.suggested and d.path]
    known = {d.path for d in disks if d.deletable}
    for path in args.volume:
        if path not in known:
            raise _Usage(f"--volume {path}: not a storage volume of {vm.ref}")
        volumes.append(path)
    res = vm.reservation
    me = current_user(config)
    reserved = res is not None and res.owner != me and not res.is_expired(fleet.clock())
    if res is not None and reserved:
        # Typing the name is the confirmation: --yes alone cannot delete someone's VM.
        if args.confirm_name != vm.name:
            typed = None
            if not args.confirm_name:
                typed = _ask(
                    f"{vm.ref} is reserved by {res.owner} ({res.note}). "
                    "Type its name to delete it: "
                )
            if typed is None or typed.strip() != vm.name:
                raise _Usage(
                    f"{vm.ref} is reserved by {res.owner}: "
                    f"pass --confirm-name {vm.name} to delete it"
                )
    else:
        listing = "".join(f"\n  and volume {p}" for p in volumes)
        if not _confirm(args, f"delete {vm.ref}", f"Delete {vm.ref}?{listing}\n"):
            _err("not deleted")
            return EXIT_FAILED
    result = await vmops.delete(fleet, vm, volumes=volumes, force_off=args.force_off)
    kept = [d.path for d in disks if d.path and d.path not in result.removed_volumes]
    text = f"deleted {vm.ref}" + "".join(f"\n  removed {p}" for p in result.removed_volumes)
    text += "".join(f"\n  kept {p}" for p in kept)
    _emit(args, {"ref": vm.ref, "removed_volumes": result.removed_volumes, "kept": kept}, text, out)
    return EXIT_OK


# ---- clone, rename


async def _clone(fleet: Any, args: argparse.Namespace, _config: Config, out: TextIO) -> int:
    from catkeeper.backend.vm import vmops

    vm = _find(fleet, args.ref)
    new = await vmops.clone(
        fleet,
        vm,
        args.new_name,
        mode="overlay" if args.overlay else "copy",
        pool=args.pool,
        on_progress=lambda m: print(f"  {m}", file=sys.stderr),
    )
    _emit(args, new, f"cloned {vm.ref} as {new.ref} ({new.uuid})", out)
    return EXIT_OK


async def _rename(fleet: Any, args: argparse.Namespace, _config: Config, out: TextIO) -> int:
    from catkeeper.backend.vm import vmops

    vm = _find(fleet, args.ref)
    new = await vmops.rename(fleet, vm, args.new_name)
    _emit(args, new, f"renamed {vm.ref} to {new.name}", out)
    return EXIT_OK


# ---- snapshots


async def _snapshot(fleet: Any, args: argparse.Namespace, _config: Config, out: TextIO) -> int:
    from catkeeper.backend.vm import snapshots

    vm = _find(fleet, args.ref)
    action = args.snapshot_command
    if action == "list":
        snaps = await snapshots.list_snapshots(fleet, vm)
        lines = [
            f"{'*' if s.current else ' '} {s.name:<24} {s.state:<8} "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(s.created or 0))}  {s.description}"
            for s in snaps
        ]
        _emit(args, snaps, "\n".join(lines) or f"{vm.ref} has no snapshots", out)
    elif action == "create":
        snap = await snapshots.create_snapshot(fleet, vm, args.name, args.description)
        _emit(args, snap, f"took snapshot {snap.name} of {vm.ref}", out)
    elif action == "revert":
        what = f"revert {vm.ref} to {args.name}"
        if not _confirm(args, what, f"Revert {vm.ref} to {args.name}? What it did since is lost."):
            return EXIT_FAILED
        await snapshots.revert_snapshot(fleet, vm, args.name)
        _emit(
            args,
            {"ref": vm.ref, "reverted_to": args.name},
            f"reverted {vm.ref} to {args.name}",
            out,
        )
    else:
        what = f"delete snapshot {args.name} of {vm.ref}"
        if not _confirm(args, what, f"Delete snapshot {args.name} of {vm.ref}?"):
            return EXIT_FAILED
        await snapshots.delete_snapshot(fleet, vm, args.name)
        _emit(args, {"ref": vm.ref, "deleted": args.name}, f"deleted snapshot {args.name}", out)
    return EXIT_OK


_Handler = Callable[[Any, argparse.Namespace, Config, TextIO], Awaitable[int]]
_HANDLERS: dict[str, _Handler] = {
    "create": _create,
    "delete": _delete,
    "clone": _clone,
    "rename": _rename,
    "snapshot": _snapshot,
}
