"""The TUI's copy of the fleet (screens/store.py): state history is kept per VM while the VM
exists, and goes with it (kept, it grew with every VM ever defined and undefined)."""

from __future__ import annotations

import dataclasses
import gc

from catkeeper.backend.events import InventoryLoaded, VmChanged, VmRemoved
from catkeeper.model import VM, VmState
from catkeeper.screens.store import FleetStore, vm_key
from tests.fleet_helpers import plain_vm


def _vm(name: str, state: VmState = VmState.RUNNING) -> VM:
    return plain_vm("h1", name, state, uuid=f"uuid-{name}")


def test_history_follows_the_vm_and_leaves_with_it() -> None:
    store = FleetStore()
    a, b = _vm("a"), _vm("b")
    store.apply([InventoryLoaded("h1", (a, b))], 1.0)
    store.apply([VmChanged(dataclasses.replace(a, state=VmState.SHUTOFF))], 2.0)
    assert store.history(vm_key(a)) == [(1.0, VmState.RUNNING), (2.0, VmState.SHUTOFF)]
    assert store.history(vm_key(b)) == [(1.0, VmState.RUNNING)]
    store.apply([VmRemoved("h1", a.uuid)], 3.0)
    assert store.history(vm_key(a)) == [] and vm_key(a) not in store.vms
    store.apply([InventoryLoaded("h1", ())], 4.0)  # b is gone from the host's new inventory
    assert store.history(vm_key(b)) == [] and store.vms == {}
    store.apply([VmChanged(a)], 5.0)  # defined again: a new history
    assert store.history(vm_key(a)) == [(5.0, VmState.RUNNING)]


def test_history_keeps_the_newest_changes_only() -> None:
    store = FleetStore()
    a = _vm("a")
    store.apply([InventoryLoaded("h1", (a,))], 0.0)
    for i in range(1, 80):
        state = VmState.SHUTOFF if i % 2 else VmState.RUNNING
        store.apply([VmChanged(dataclasses.replace(a, state=state))], float(i))
    store.apply([VmChanged(dataclasses.replace(a, state=VmState.SHUTOFF))], 80.0)  # no change
    kept = store.history(vm_key(a))
    assert [at for at, _st in kept] == [float(i) for i in range(30, 80)]
    assert kept[-1] == (79.0, VmState.SHUTOFF)


def test_history_is_nothing_the_collector_walks() -> None:
    """At 10k VMs a list of (time, VmState) per VM was 20,000 objects in every full pass of
    the collector (catkeeper/heap.py): the history is kept in plain tuples it stops tracking."""
    store = FleetStore()
    vms = [_vm(f"vm{i}") for i in range(100)]
    store.apply([InventoryLoaded("h1", tuple(vms))], 1.0)
    store.apply([VmChanged(dataclasses.replace(v, state=VmState.PAUSED)) for v in vms], 2.0)
    gc.collect()
    tracked = [key for key, kept in store._history.items() if gc.is_tracked(kept)]
    assert tracked == []
    assert store.history(vm_key(vms[7])) == [(1.0, VmState.RUNNING), (2.0, VmState.PAUSED)]
