"""Backend events → one FleetUpdated per batch (tui/events.py); a batch of more VMs than
one slice is folded in over several turns of the loop, so keys get in between."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from catkeeper.backend.events import HostChanged, InventoryLoaded, VmChanged
from catkeeper.model import VM, Host, HostState, VmState
from catkeeper.screens.messages import FleetUpdated
from catkeeper.screens.store import FleetStore
from catkeeper.tui.events import VMS_PER_SLICE, EventPump
from tests.fleet_helpers import plain_vm


def _vms(host: str, n: int) -> tuple[VM, ...]:
    return tuple(plain_vm(host, f"vm{i}", uuid=f"{host}-{i}") for i in range(n))


async def test_a_reconnect_storm_is_folded_in_slices_with_the_loop_free_between() -> None:
    loop = asyncio.get_running_loop()
    store = FleetStore()
    posted: list[FleetUpdated] = []
    turns: list[int] = []  # how many slices were posted when a key queued meanwhile ran

    def call_later(fn: Callable[[], None]) -> None:
        loop.call_soon(fn)

    def post(update: FleetUpdated) -> None:
        posted.append(update)
        if len(posted) == 1:  # a key arriving while the first slice is folded in
            loop.call_soon(lambda: turns.append(len(posted)))

    pump = EventPump(store, lambda: 1.0, call_later, post)
    hosts = [f"h{i:02d}" for i in range(21)]
    for host in hosts:  # every host back at once, 500 VMs each
        pump.on_event(InventoryLoaded(host, _vms(host, 500)))
    stopped = dataclasses.replace(_vms("h00", 1)[0], state=VmState.SHUTOFF)
    pump.on_event(VmChanged(stopped))  # and one change after them, kept in order
    while pump.busy:
        await asyncio.sleep(0.01)
    sizes = [len(u.changes.upserts) for u in posted]
    assert sum(sizes) == 21 * 500 + 1 and len(store.vms) == 21 * 500
    assert store.vms["h00/h00-0"].state is VmState.SHUTOFF
    assert len(posted) > 1 and max(sizes) <= VMS_PER_SLICE
    assert [u.serial for u in posted] == list(range(1, len(posted) + 1))
    assert turns == [1]  # the key ran right after the first slice, before the others


async def test_host_states_are_not_held_behind_other_hosts_rows() -> None:
    loop = asyncio.get_running_loop()
    store = FleetStore()
    posted: list[FleetUpdated] = []
    pump = EventPump(store, lambda: 1.0, lambda fn: loop.call_soon(fn), posted.append)
    hosts = [f"h{i:02d}" for i in range(6)]
    for host in hosts:  # every host back at once: its rows, then its state
        pump.on_event(InventoryLoaded(host, _vms(host, VMS_PER_SLICE)))
        pump.on_event(HostChanged(Host(name=host, uri="test:///", state=HostState.UP)))
    while pump.busy:
        await asyncio.sleep(0.01)
    first = posted[0].changes
    assert set(first.hosts) == set(hosts)  # every host's state in the first slice
    assert {vm.host for vm in first.upserts.values()} == {"h00"}  # rows one host a turn
    assert len(posted) == len(hosts) and len(store.vms) == 6 * VMS_PER_SLICE


def test_a_slice_stays_on_the_tables_incremental_path() -> None:
    """The table puts up to ``_FEW`` changed rows in place one by one and sorts everything
    for more: a reconnect storm's slices must stay below that, or each slice of 500 VMs
    re-sorts and re-filters all 10,000 rows."""
    from catkeeper.widgets import vm_rows

    assert VMS_PER_SLICE <= vm_rows._FEW
