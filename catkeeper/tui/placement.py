"""``:place MEMORY [VCPUS] [TAG…]``: where a VM of that size fits, as ``catkeeper place``
prints it, on a screen whose enter opens the create form on the host chosen.

The ranking adds up every VM of the fleet, so it runs on a worker thread over a copy of the
store's lists taken on the UI thread (the store changes under a thread reading it); at 10,000
VMs the copy is a list of references, the adding up is the thread's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from catkeeper.backend.capacity import Placement, parse_memory, place
from catkeeper.commands import Command
from catkeeper.screens.placement import Place, PlacementScreen
from catkeeper.screens.store import FleetStore
from catkeeper.tui.host import Handler, Host


class CreateOn(Protocol):
    """``VmOps.create_on``: the create form on a host, with the memory and vCPUs given."""

    def __call__(self, chosen: str | None, *, memory: str = ..., vcpus: int = ...) -> None: ...


DEFAULT_VCPUS = 2  # as ``catkeeper place`` and the create form


@dataclass(frozen=True)
class Wanted:
    memory: str  # as typed: the create form shows it so
    memory_kib: int
    vcpus: int
    tags: tuple[str, ...]


def parse_args(args: Sequence[str]) -> Wanted | str:
    """``16G 8 gpu``, ``16G gpu``, ``512`` (MiB, as create) → what is wanted, or what is
    wrong. A number after the memory is the vCPUs; any other word a tag."""
    if not args:
        return "place: how much memory? e.g. :place 16G 8"
    try:
        memory_kib = parse_memory(args[0])
    except ValueError as exc:
        return f"place: memory {exc}"
    rest = list(args[1:])
    vcpus = DEFAULT_VCPUS
    if rest and rest[0].lstrip("-").isdigit():
        vcpus = int(rest.pop(0))
        if vcpus < 1:
            return "place: a VM needs at least 1 vCPU"
    return Wanted(args[0], memory_kib, vcpus, tuple(dict.fromkeys(rest)))


def placer(store: FleetStore, tags: Sequence[str] = ()) -> Place:
    """The ranking over the fleet as it is now, callable from any thread."""
    hosts = list(store.hosts.values())
    vms = list(store.vms.values())
    tags = tuple(tags)

    def ranked(memory_kib: int, vcpus: int) -> Placement:
        return place(hosts, vms, memory_kib, vcpus, tags=tags)

    return ranked


class Placing:
    def __init__(self, host: Host, create_on: CreateOn) -> None:
        self.host = host
        self._create_on = create_on

    def handlers(self) -> dict[str, Handler]:
        return {"place": self.place}

    def place(self, _command: Command, args: Sequence[str]) -> None:
        wanted = parse_args(args)
        if isinstance(wanted, str):
            # Back on the : line as typed, the problem beside it: fix a word, press enter.
            bar = self.host.to_fleet_screen().bar
            bar.open("command", " ".join(["place", *args]))
            bar.set_problem(wanted)
            return
        self.host.start(self._show(wanted), name="place", group="place")

    async def _show(self, wanted: Wanted) -> None:
        host = self.host
        ranked = placer(host.store, wanted.tags)
        placement = await asyncio.to_thread(ranked, wanted.memory_kib, wanted.vcpus)
        writable = (
            ()
            if host.readonly
            else [name for name, s in host.fleet.sessions.items() if not s.readonly]
        )
        chosen = await host.wait_for(PlacementScreen(placement, can_create=writable))
        if chosen:
            self._create_on(chosen, memory=wanted.memory, vcpus=wanted.vcpus)
