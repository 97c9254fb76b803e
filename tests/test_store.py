"""The TUI's copy of the fleet (screens/store.py): state history is kept per VM while the VM
exists, and goes with it (kept, it grew with every VM ever defined and undefined)."""

from __future__ import annotations

import dataclasses

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
    assert [st for _t, st in store.history[vm_key(a)]] == [VmState.RUNNING, VmState.SHUTOFF]
    store.apply([VmRemoved("h1", a.uuid)], 3.0)
    assert vm_key(a) not in store.history and vm_key(a) not in store.vms
    store.apply([InventoryLoaded("h1", ())], 4.0)  # b is gone from the host's new inventory
    assert store.history == {} and store.vms == {}
    store.apply([VmChanged(a)], 5.0)  # defined again: a new history
    assert store.history[vm_key(a)] == [(5.0, VmState.RUNNING)]
