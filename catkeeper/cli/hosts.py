"""``catkeeper hosts`` and ``catkeeper place``: what each host has and what its VMs take, and
where a VM of a given size still fits — the questions a team asks before creating a VM.

    catkeeper hosts [--json]
    catkeeper place --memory 16G [--vcpus 8] [--tag T]… [--json]

Both read only what the bulk refresh reads (no extra libvirt call); the numbers come from
:mod:`catkeeper.backend.capacity`. ``hosts`` lists an unreachable host as such and the
others in full, then exits 3 (as ``--json`` does); ``place`` exits 0 when some host fits and
1 when none does, each other host with its reason. Exit codes: ``catkeeper.cli.common.Exit``.
Nothing here imports textual or rich.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from catkeeper.cli.common import (
    CliError,
    Clock,
    Exit,
    emit,
    finish,
    json_flag,
    open_fleet,
    wait_host_flag,
)
from catkeeper.config import Config
from catkeeper.model import HostState

if TYPE_CHECKING:
    from catkeeper.backend.capacity import HostLoad, Placement
    from catkeeper.commands import Command


def add_arguments(p: argparse.ArgumentParser, command: Command) -> None:
    """The options of ``hosts`` or ``place``."""
    if command.name == "place":
        p.add_argument(
            "--memory",
            required=True,
            metavar="SIZE",
            help="the new VM's memory, as create takes it: 16G, 512M (a bare number is MiB)",
        )
        p.add_argument(
            "--vcpus", type=int, default=2, metavar="N", help="its vCPUs (default 2, as create)"
        )
        p.add_argument(
            "--tag",
            action="append",
            default=[],
            metavar="TAG",
            help="only hosts with this tag in the configuration (repeatable: all of them)",
        )
    json_flag(p)
    wait_host_flag(p)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    if args.command_name == "place":
        return finish(_place(args, config, clock))
    return finish(_hosts(args, config, clock))


async def _hosts(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper.backend.capacity import loads

    async with open_fleet(args, config, only=getattr(args, "host", None), clock=clock) as fleet:
        rows = loads(fleet.hosts(), fleet.vms())
    emit(args, rows, _hosts_table(rows))
    down = any(r.state not in (HostState.UP, HostState.DEGRADED) for r in rows)
    return Exit.UNREACHABLE if down else Exit.OK


async def _place(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper.backend.capacity import parse_memory, place

    try:
        memory = parse_memory(args.memory)
    except ValueError as exc:
        raise CliError(Exit.USAGE, f"--memory: {exc}") from None
    if args.vcpus < 1:
        raise CliError(Exit.USAGE, "--vcpus: a VM needs at least 1 vCPU")
    tags = list(dict.fromkeys(args.tag))
    async with open_fleet(args, config, only=getattr(args, "host", None), clock=clock) as fleet:
        placement = place(fleet.hosts(), fleet.vms(), memory, args.vcpus, tags=tags)
    emit(args, placement, _placement_text(placement))
    return Exit.OK if placement.fits else Exit.FAILED


# ---- text ----------------------------------------------------------------------------------


def _size(kib: int | None) -> str:
    from catkeeper.backend.capacity import format_kib

    return "-" if kib is None else format_kib(kib)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell; ``right``: the columns aligned right (numbers)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _hosts_table(loads: Sequence[HostLoad]) -> str:
    if not loads:
        return "no hosts"
    rows = [
        (
            "HOST",
            "STATE",
            "CPUS",
            "MEMORY",
            "VCPUS RUN/ALL",
            "MEMORY RUN/ALL",
            "FREE",
            "OVERCOMMIT CPU/MEM",
        )
    ]
    notes = []
    for load in loads:
        if load.memory_kib is None:  # never read: its VMs are not known either
            rows.append((load.host, load.state.value, "-", "-", "-", "-", "-", "-"))
        else:
            rows.append(
                (
                    load.host,
                    load.state.value,
                    _size(None) if load.cpus is None else str(load.cpus),
                    _size(load.memory_kib),
                    f"{load.vcpus_running}/{load.vcpus_defined}",
                    f"{_size(load.memory_running_kib)}/{_size(load.memory_defined_kib)}",
                    _size(load.free_memory_kib),
                    f"{_ratio(load.cpu_overcommit)}/{_ratio(load.memory_overcommit)}",
                )
            )
        if load.error:
            notes.append(f"{load.host}: {load.error}")
    return "\n".join(_table(rows, frozenset({2, 3, 4, 5, 6, 7})) + notes)


def _placement_text(placement: Placement) -> str:
    from catkeeper.backend.capacity import format_kib

    what = f"a VM of {format_kib(placement.memory_kib)} and {placement.vcpus} vCPUs"
    if placement.tags:
        what += f" (tags {', '.join(placement.tags)})"
    lines = []
    if placement.fits:
        count = len(placement.fits)
        lines.append(f"{what} fits on {count} host{'s' if count > 1 else ''}, best first:")
        rows = [("HOST", "MEMORY LEFT", "FREE AFTER", "CPU OVERCOMMIT")]
        rows += [
            (f.host, _size(f.memory_left_kib), _size(f.free_after_kib), _ratio(f.cpu_overcommit))
            for f in placement.fits
        ]
        lines += ["  " + line for line in _table(rows, frozenset({1, 2, 3}))]
    else:
        lines.append(f"{what} fits on no host")
    if placement.misfits:
        lines.append("does not fit:" if placement.fits else "why not:")
        lines += [f"  {m.host}: {m.reason}" for m in placement.misfits]
    return "\n".join(lines)
