"""``catkeeper history TARGET [--json]``: who changed a VM, when and how.

    $ catkeeper history lab1/db01
    lab1/db01: 3 changes recorded on the host, newest first
    WHEN              WHO    ACTION   DETAIL
    09:12:03          alice  start
    2026-11-30 18:00  bob    reserve  for bob, until 2026-12-05T18:00:00Z, 'bisecting'

The entries are the ring kept in the domain's own metadata (:mod:`catkeeper.backend.audit`),
read from the host as every other user (and ``virsh metadata``) sees it; a read-only
connection is enough. Times are local, with the date when not today. Exit codes:
``catkeeper.cli.common.Exit``. Nothing here imports textual or rich.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from catkeeper.cli.common import (
    Clock,
    add_target_arguments,
    backend_errors,
    emit,
    find_vm,
    finish,
    hosts_named,
    json_flag,
    open_fleet,
    wait_host_flag,
)
from catkeeper.config import Config

if TYPE_CHECKING:
    from catkeeper.backend.audit import Entry
    from catkeeper.commands import Command
    from catkeeper.model import VM


def add_arguments(p: argparse.ArgumentParser, _command: Command) -> None:
    add_target_arguments(p, many=False)
    json_flag(p, "print the entries as JSON (when as Unix time)")
    wait_host_flag(p)


def run(args: argparse.Namespace, config: Config, *, clock: Clock = time.time) -> int:
    return finish(_run(args, config, clock))


async def _run(args: argparse.Namespace, config: Config, clock: Clock) -> int:
    from catkeeper.backend import audit

    async with open_fleet(args, config, only=hosts_named([args.target], args), clock=clock) as f:
        vm = find_vm(f, args.target)
        with backend_errors():
            entries = await audit.read(f, vm)
        now = f.clock()
    emit(args, _document(vm, entries), history_text(vm.ref, entries, now))
    return 0


def _document(vm: VM, entries: Sequence[Entry]) -> dict[str, Any]:
    return {
        "vm": vm.ref,
        "host": vm.host,
        "name": vm.name,
        "uuid": vm.uuid,
        "entries": [e.to_json() for e in entries],
    }


def history_text(ref: str, entries: Sequence[Entry], now: float) -> str:
    """The table people read: ``entries`` newest first, as given."""
    from catkeeper.backend.audit import when_text

    if not entries:
        return f"{ref}: no changes recorded on the host"
    count = len(entries)
    rows = [("WHEN", "WHO", "ACTION", "DETAIL")]
    rows += [(when_text(e.when, now), e.who, e.action, e.detail) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{ref}: {count} change{'s' if count > 1 else ''} recorded on the host, newest first"]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    return "\n".join(lines)
