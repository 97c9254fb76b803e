"""The snapshots screen against a real libvirtd: take one, see it listed, delete it."""

from __future__ import annotations

import pytest
from textual.app import App
from textual.widgets import DataTable, Input

from catkeeper.backend.fleet import Fleet
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.snapshots import NewSnapshotScreen, SnapshotsScreen
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
