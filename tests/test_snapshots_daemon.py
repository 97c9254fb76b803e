"""Snapshots against a real libvirtd.

The domain has a qcow2 disk, so libvirt 9.0 takes internal snapshots (``qemu-img snapshot``
while it is shut off; ``savevm`` with memory while it runs). A disk-less domain cannot
snapshot at all on libvirt 9.0 ("nothing selected for snapshot" when shut off; "internal
and full system snapshots require all disks to be selected" when running).
"""

from __future__ import annotations

import subprocess
import time

import pytest

from catkeeper.backend import snapshots
from catkeeper.backend.actions import ActionError
from catkeeper.backend.fleet import Fleet
from tests.vmops_support import (
    HOST,
    Lab,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    lab_fixture,  # noqa: F401 - the lab fixture
    vm_of,
)

pytestmark = pytest.mark.daemon


def qemu_io(path: str, command: str) -> str:
    r = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, path],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return r.stdout + r.stderr


async def test_snapshot_create_revert_delete_round_trip(fleet: Fleet, lab: Lab) -> None:
    disk = lab.image("disk.qcow2")
    qemu_io(disk, "write -P 0x11 0 64k")
    dom = lab.domain(disk=disk)
    vm = await vm_of(fleet, dom)
    assert await snapshots.list_snapshots(fleet, vm) == []

    t0 = time.monotonic()
    first = await snapshots.create_snapshot(fleet, vm, "before", "pristine disk")
    assert first.name == "before" and first.description == "pristine disk"
    assert first.state == "shutoff" and not first.memory and first.current

    qemu_io(disk, "write -P 0x22 0 64k")
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
    assert "pattern verification failed" not in qemu_io(disk, "read -P 0x11 0 64k")
    assert [s.current for s in await snapshots.list_snapshots(fleet, vm)] == [True, False]

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
