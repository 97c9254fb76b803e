"""The TUI's picture of the fleet, folded from backend events. Plain data, no widgets.

Every screen reads the same store, so the table, the detail screen and the palette can
never disagree. ``apply`` returns what changed so widgets update only those rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from catkeeper.backend.events import (
    DomainEvent,
    FleetEvent,
    HostChanged,
    InventoryLoaded,
    StatsUpdated,
    VmChanged,
    VmRemoved,
)
from catkeeper.model import VM, Host, VmState

# Enough for a day of flapping; older entries are dropped so memory stays bounded.
_HISTORY_LIMIT = 50


def row_key(host: str, uuid: str) -> str:
    """The table's row key for a VM: unique across the fleet."""
    return f"{host}/{uuid}"


def vm_key(vm: VM) -> str:
    return row_key(vm.host, vm.uuid)


@dataclass
class Changes:
    """What one batch of events changed."""

    upserts: dict[str, VM] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    hosts: dict[str, Host] = field(default_factory=dict)
    stats: set[str] = field(default_factory=set)  # hosts with a new live-stats poll

    def __bool__(self) -> bool:
        return bool(self.upserts or self.removed or self.hosts or self.stats)


class FleetStore:
    def __init__(self, hosts: Iterable[Host] = ()) -> None:
        self.hosts: dict[str, Host] = {h.name: h for h in hosts}
        self.vms: dict[str, VM] = {}
        # Per VM, time and state's value after time and state's value in one flat tuple:
        # plain values, which the collector stops walking at its first look (a nested tuple
        # takes a look per level). A list of (time, VmState) per VM was 20,000 objects that
        # every full pass of the collector walked at 10k VMs (catkeeper/heap.py).
        self._history: dict[str, tuple[float | str, ...]] = {}

    def history(self, key: str) -> list[tuple[float, VmState]]:
        """The VM's state changes seen since start, oldest first (at most _HISTORY_LIMIT)."""
        flat = self._history.get(key, ())
        return [(float(at), VmState(str(st))) for at, st in zip(flat[::2], flat[1::2], strict=True)]

    def _record(self, key: str, vm: VM, now: float) -> None:
        seen = self._history.get(key, ())
        if not seen or seen[-1] != vm.state.value:
            self._history[key] = (*seen[2 - 2 * _HISTORY_LIMIT :], now, vm.state.value)

    def apply(self, events: Iterable[FleetEvent], now: float) -> Changes:
        changes = Changes()
        for event in events:
            if isinstance(event, HostChanged):
                self.hosts[event.host.name] = event.host
                changes.hosts[event.host.name] = event.host
            elif isinstance(event, InventoryLoaded):
                fresh = {vm_key(vm): vm for vm in event.vms}
                gone = [k for k, vm in self.vms.items() if vm.host == event.host and k not in fresh]
                for key in gone:
                    del self.vms[key]
                    self._history.pop(key, None)
                    changes.upserts.pop(key, None)
                    changes.removed.add(key)
                for key, vm in fresh.items():
                    if self.vms.get(key) != vm:
                        self.vms[key] = vm
                        changes.upserts[key] = vm
                        changes.removed.discard(key)
                    self._record(key, vm, now)
            elif isinstance(event, VmChanged):
                key = vm_key(event.vm)
                self.vms[key] = event.vm
                changes.upserts[key] = event.vm
                changes.removed.discard(key)
                self._record(key, event.vm, now)
            elif isinstance(event, VmRemoved):
                key = row_key(event.host, event.uuid)
                self._history.pop(key, None)  # a VM defined again is a new one
                if self.vms.pop(key, None) is not None:
                    changes.upserts.pop(key, None)
                    changes.removed.add(key)
            elif isinstance(event, StatsUpdated):
                changes.stats.add(event.host)
            elif isinstance(event, DomainEvent):
                pass  # the re-read VmChanged that follows carries what the table shows
        return changes
