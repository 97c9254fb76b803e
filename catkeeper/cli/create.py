"""``catkeeper create HOST/NAME --image|--cloud-image|--netinstall|--iso …``: a new VM.

Progress goes to stderr, the result to stdout (as JSON with ``--json``). Images and ISOs are
named as ``/path/on/host`` or ``POOL/VOLUME``. Exit codes: ``catkeeper.cli.common.Exit``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    backend_errors,
    emit,
    err,
    finish,
    json_flag,
    open_fleet,
    wait_host_flag,
)
from catkeeper.config import Config

if TYPE_CHECKING:
    from catkeeper.commands import Command


def add_arguments(p: argparse.ArgumentParser, _command: Command) -> None:
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
    p.add_argument(
        "--pool",
        default=None,
        help="storage pool for new volumes (default: the image's pool, else 'default')",
    )
    p.add_argument(
        "--network", default="network:default", help="network:NAME, bridge:NAME, user, none"
    )
    p.add_argument("--graphics", default="vnc", choices=("vnc", "none"))
    p.add_argument("--vnc-listen", default="127.0.0.1", metavar="ADDRESS")
    p.add_argument("--type", dest="domain_type", choices=("kvm", "qemu"), default=None)
    p.add_argument("--machine", default=None)
    p.add_argument("--no-start", action="store_true", help="define it but do not start it")
    p.add_argument("--paused", action="store_true", help="start it with its CPUs paused")
    json_flag(p)
    wait_host_flag(p)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    """Create the VM ``args`` describe; the exit code. ``clock`` is the fleet's "now"."""
    return finish(_create(args, config, clock))


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
            raise CliError(Exit.USAGE, "--cloud-image needs --ssh-key (no ~/.ssh/id_*.pub found)")
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
        raise CliError(Exit.USAGE, str(exc)) from None
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
        raise CliError(Exit.USAGE, "; ".join(f"{e.field}: {e.message}" for e in errors))
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


async def _create(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper.backend.vm import create, netinstall

    host, sep, name = args.ref.partition("/")
    if not sep or not host or not name:
        raise CliError(Exit.USAGE, f"{args.ref!r}: name it as HOST/NAME")
    spec = _spec_from(args)
    async with open_fleet(args, config, only=[host], clock=clock) as fleet:
        session = fleet.session(host)
        if not session.connected:
            why = session.host.error or "no answer"
            raise CliError(Exit.UNREACHABLE, f"{host} is {session.host.state.value}: {why}")
        with backend_errors():
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
                        fleet, spec.host, created.uuid, on_progress=err
                    ).wait()
                    doc["install_pending"] = False
                    doc["install"] = dataclasses.asdict(finished)
                    text += "; installed and started from its disk"
                else:
                    text += (
                        "; the installer runs. When it ends the VM stops: run this command "
                        "again with --wait, or start it (its installer volumes stay until "
                        "catkeeper switches over)"
                    )
    emit(args, doc, text)
    return int(Exit.OK)
