"""The snapshots screen against a real libvirtd: take one, see it listed, delete it; revert
the disk to the one under the cursor."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import DataTable, Input

from catkeeper.backend.fleet import Fleet
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.snapshots import NewSnapshotScreen, SnapshotsScreen
from tests.disk_patterns import reads_as, write_pattern
from tests.tui_support import until
from tests.vmops_support import (
    Lab,
    fleet_fixture,  # noqa: F401 - the fleet fixture
    lab_fixture,  # noqa: F401 - the lab fixture
    vm_of,
)

pytestmark = pytest.mark.daemon


class Harness(App[None]):
    def __init__(self, fleet: Fleet, vm: VM) -> None:
        super().__init__()
        self.fleet, self.vm = fleet, vm

    def on_mount(self) -> None:
        self.push_screen(SnapshotsScreen(self.fleet, self.vm))


async def test_take_list_and_delete_a_snapshot(fleet: Fleet, lab: Lab) -> None:
    dom = lab.domain(disk=lab.image("disk.qcow2"))
    vm = await vm_of(fleet, dom)
    app = Harness(fleet, vm)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: isinstance(app.screen, SnapshotsScreen), what="the screen")
        screen = app.screen
        assert isinstance(screen, SnapshotsScreen)
        await pilot.pause(0.3)
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, NewSnapshotScreen), what="the form")
        app.screen.query_one("#name", Input).value = "before-upgrade"
        app.screen.query_one("#description", Input).value = "known good"
        await pilot.click("#take")
        await until(lambda: len(screen.items) == 1, what="the new snapshot listed")
        assert dom.snapshotListNames() == ["before-upgrade"]
        table = screen.query_one(DataTable)
        assert [str(c) for c in table.get_row_at(0)][1::3] == ["before-upgrade", "known good"]

        await pilot.press("d")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await until(lambda: not screen.items and app.screen is screen, what="the list emptied")
        assert dom.snapshotListNames() == []


X, Y, LEN = 0, 1024 * 1024, 64 * 1024  # two 64 KiB ranges of the 16 MiB disk


async def test_revert_puts_the_disk_back_to_the_selected_snapshot(fleet: Fleet, lab: Lab) -> None:
    disk = lab.image("disk.qcow2")
    dom = lab.domain(disk=disk)
    write_pattern(disk, 0x11, X, LEN)
    dom.snapshotCreateXML("<domainsnapshot><name>before</name></domainsnapshot>", 0)
    write_pattern(disk, 0x22, X, LEN)
    write_pattern(disk, 0x33, Y, LEN)
    dom.snapshotCreateXML("<domainsnapshot><name>after</name></domainsnapshot>", 0)
    write_pattern(disk, 0x44, X, LEN)  # since the last snapshot: lost by any revert
    vm = await vm_of(fleet, dom)
    app = Harness(fleet, vm)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(lambda: isinstance(app.screen, SnapshotsScreen), what="the screen")
        screen = app.screen
        assert isinstance(screen, SnapshotsScreen)
        await until(lambda: len(screen.items) == 2, timeout=60, what="both snapshots listed")
        names = [s.name for s in screen.items]
        assert [s.current for s in screen.items] == [n == "after" for n in names]
        screen.query_one(DataTable).move_cursor(row=names.index("before"))
        await pilot.pause()

        await pilot.press("r")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        done = f"reverted {vm.ref} to before"
        await until(
            lambda: any(n.message == done for n in app._notifications),
            timeout=60,
            what="the revert reported",
        )
        assert not [n.message for n in app._notifications if n.severity == "error"]
        await until(
            lambda: [s.current for s in screen.items] == [n == "before" for n in names],
            timeout=60,
            what="'before' shown as current",
        )
    # The disk is as it was at "before": X holds 0x11 again (not the later 0x22 or 0x44),
    # and Y, first written after it, is empty again.
    assert reads_as(disk, 0x11, X, LEN)
    assert not reads_as(disk, 0x44, X, LEN) and not reads_as(disk, 0x22, X, LEN)
    assert reads_as(disk, 0, Y, LEN)
    assert not reads_as(disk, 0x33, Y, LEN)
    assert dom.hasCurrentSnapshot() and dom.snapshotCurrent().getName() == "before"
