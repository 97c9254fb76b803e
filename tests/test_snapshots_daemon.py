"""Snapshots against a real libvirtd.

The domain has a qcow2 disk, so libvirt 9.0 takes internal snapshots (``qemu-img snapshot``
while it is shut off; ``savevm`` with memory while it runs). A disk-less domain cannot
snapshot at all on libvirt 9.0 ("nothing selected for snapshot" when shut off; "internal
and full system snapshots require all disks to be selected" when running).
"""

from __future__ import annotations

import time

import pytest

from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import snapshots
from tests.disk_patterns import reads_as, write_pattern
from tests.vmops_support import (
    HOST,
    Lab,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    lab_fixture,  # noqa: F401 - the lab fixture
    vm_of,
)

pytestmark = pytest.mark.daemon

# Two 64 KiB ranges of the 16 MiB disk: X holds data from before the first snapshot (then is
# overwritten), Y is empty until after it.
X, Y, LEN = 0, 1024 * 1024, 64 * 1024
A, B, C = 0x11, 0x22, 0x33


async def test_snapshot_create_revert_delete_round_trip(fleet: Fleet, lab: Lab) -> None:
    disk = lab.image("disk.qcow2")
    write_pattern(disk, A, X, LEN)
    dom = lab.domain(disk=disk)
    vm = await vm_of(fleet, dom)
    assert await snapshots.list_snapshots(fleet, vm) == []

    t0 = time.monotonic()
    first = await snapshots.create_snapshot(fleet, vm, "before", "pristine disk")
    assert first.name == "before" and first.description == "pristine disk"
    assert first.state == "shutoff" and not first.memory and first.current

    # Written after the snapshot: X overwritten, Y newly filled.
    write_pattern(disk, B, X, LEN)
    write_pattern(disk, C, Y, LEN)
    assert reads_as(disk, B, X, LEN) and reads_as(disk, C, Y, LEN)
    auto = await snapshots.create_snapshot(fleet, vm)  # a dated name
    assert auto.name.startswith("snap-") and auto.parent == "before"
    listed = await snapshots.list_snapshots(fleet, vm)
    assert [s.name for s in listed] == ["before", auto.name]
    assert [s.current for s in listed] == [False, True]

    with pytest.raises(ActionError, match="already has a snapshot of that name"):
        await snapshots.create_snapshot(fleet, vm, "before")
    with pytest.raises(ActionError, match="a snapshot name is"):
        await snapshots.create_snapshot(fleet, vm, "no/slashes")

    await snapshots.revert_snapshot(fleet, vm, "before")
    # The disk is as it was at "before": X holds A again, Y is empty again.
    assert reads_as(disk, A, X, LEN)
    assert not reads_as(disk, B, X, LEN)
    assert reads_as(disk, 0, Y, LEN)
    assert not reads_as(disk, C, Y, LEN)
    assert [s.current for s in await snapshots.list_snapshots(fleet, vm)] == [True, False]

    # Forward again, to the later snapshot: the writes after "before" come back.
    await snapshots.revert_snapshot(fleet, vm, auto.name)
    assert reads_as(disk, B, X, LEN) and reads_as(disk, C, Y, LEN)
    assert [s.current for s in await snapshots.list_snapshots(fleet, vm)] == [False, True]

    await snapshots.delete_snapshot(fleet, vm, auto.name)
    await snapshots.delete_snapshot(fleet, vm, "before")
    assert await snapshots.list_snapshots(fleet, vm) == []
    with pytest.raises(ActionError, match=f"revert {HOST}/{dom.name()} to snapshot 'gone'"):
        await snapshots.revert_snapshot(fleet, vm, "gone")
    print(f"\nround trip took {time.monotonic() - t0:.2f} s")


async def test_live_snapshot_holds_memory_and_revert_resumes_running(
    fleet: Fleet, lab: Lab
) -> None:
    dom = lab.domain(disk=lab.image("disk.qcow2"), start=True)
    vm = await vm_of(fleet, dom)
    snap = await snapshots.create_snapshot(fleet, vm, "live", "while running")
    assert snap.state == "running" and snap.memory
    dom.destroy()
    vm = await vm_of(fleet, dom)
    await snapshots.revert_snapshot(fleet, vm, "live")
    assert dom.isActive()
    assert fleet.session(HOST).vms[vm.uuid].state.value == "running"
