"""A VM's snapshots: list, take (with a description), revert, delete.

``SnapshotsScreen(fleet, vm)`` is pushed from the detail screen. Every libvirt call runs in a
worker through ``backend.snapshots``; failures are shown as notifications and the list is
read again, so the screen never shows a state that is not on the host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from catkeeper.backend.errors import BackendError
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.vm import snapshots
from catkeeper.model import VM
from catkeeper.screens.confirm import ConfirmScreen, held_question, holder


class NewSnapshotScreen(ModalScreen[tuple[str, str] | None]):
    """Name (empty: a dated one) and description of a new snapshot."""

    DEFAULT_CSS = """
    NewSnapshotScreen { align: center middle; }
    NewSnapshotScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    NewSnapshotScreen Input { width: 100%; }
    NewSnapshotScreen Horizontal { height: auto; align-horizontal: right; margin: 1 0 0 0; }
    NewSnapshotScreen Button { margin: 0 0 0 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, vm: VM) -> None:
        super().__init__()
        self.vm = vm

    def compose(self) -> ComposeResult:
        with Vertical():
            what = "disks and memory" if self.vm.state.is_active else "disks"
            yield Label(f"Snapshot {self.vm.ref} ({what})")
            yield Input(placeholder=f"name (default {snapshots.default_name()})", id="name")
            yield Input(placeholder="description", id="description")
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Take snapshot", id="take", variant="primary")

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self._take()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "take":
            self._take()
        else:
            self.dismiss(None)

    def _take(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        self.dismiss((name, self.query_one("#description", Input).value.strip()))

    def action_cancel(self) -> None:
        self.dismiss(None)


class SnapshotsScreen(ModalScreen[None]):
    """``n`` new, ``r`` revert, ``d`` delete (both ask first), ``esc`` back."""

    DEFAULT_CSS = """
    SnapshotsScreen { align: center middle; }
    SnapshotsScreen > Vertical {
        width: 100; max-width: 100%; height: 80%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    SnapshotsScreen #title { text-style: bold; width: 100%; }
    SnapshotsScreen DataTable { height: 1fr; }
    SnapshotsScreen #status { color: $text-muted; width: 100%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New"),
        Binding("r", "revert", "Revert"),
        Binding("d", "delete", "Delete"),
        Binding("escape", "close", "Back"),
    ]

    def __init__(
        self, fleet: Fleet, vm: VM, *, me: str = "", clock: Callable[[], float] = time.time
    ) -> None:
        """``me``/``clock``: who is looking and when, to name the holder before a revert."""
        super().__init__()
        self.fleet = fleet
        self.vm = vm
        self.me = me
        self._clock = clock
        self.items: list[snapshots.Snapshot] = []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The app's read-only mode (the backend refuses too): only looking is allowed.
        return not (action in ("new", "revert", "delete") and getattr(self.app, "readonly", False))

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Snapshots of {self.vm.ref}", id="title")
            yield DataTable(id="list", cursor_type="row", zebra_stripes=True)
            yield Static("loading…", id="status")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("", "Name", "Taken", "State", "Description")
        self.reload()

    def _vm(self) -> VM:
        # The inventory's newest view (state changes after a revert).
        return self.fleet.session(self.vm.host).vms.get(self.vm.uuid, self.vm)

    def _selected(self) -> snapshots.Snapshot | None:
        table = self.query_one(DataTable)
        if not self.items or table.cursor_row is None:
            return None
        row = table.cursor_row
        return self.items[row] if 0 <= row < len(self.items) else None

    def _show(self, items: list[snapshots.Snapshot]) -> None:
        self.items = items
        table = self.query_one(DataTable)
        table.clear()
        for s in items:
            taken = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created)) if s.created else "?"
            state = s.state + (" +memory" if s.memory else "")
            table.add_row("*" if s.current else "", s.name, taken, state, s.description)
        self.query_one("#status", Static).update(
            f"{len(items)} snapshot(s); * current.  n new  r revert  d delete  esc back"
            if items
            else "no snapshots.  n new  esc back"
        )

    def _failed(self, exc: BackendError) -> None:
        self.app.notify(str(exc), title="Snapshots", severity="error")

    @work(exclusive=True, group="snapshots")
    async def reload(self) -> None:
        try:
            self._show(await snapshots.list_snapshots(self.fleet, self._vm()))
        except BackendError as exc:
            self._failed(exc)
            self.query_one("#status", Static).update(f"cannot list: {exc}")

    @work(exclusive=True, group="snapshots")
    async def action_new(self) -> None:
        answer = await self.app.push_screen_wait(NewSnapshotScreen(self._vm()))
        if answer is None:
            return
        self.query_one("#status", Static).update("taking the snapshot…")
        try:
            snap = await snapshots.create_snapshot(self.fleet, self._vm(), *answer)
            self.app.notify(f"took snapshot {snap.name}", title="Snapshots")
        except BackendError as exc:
            self._failed(exc)
        self.reload()

    @work(exclusive=True, group="snapshots")
    async def action_revert(self) -> None:
        snap = self._selected()
        if snap is None:
            return
        after = "running" if snap.memory else snap.state
        detail = f"Back to snapshot {snap.name} ({after}); what it did since is lost."
        vm, now = self._vm(), self._clock()
        held = [vm] if holder(vm, self.me, now) else []
        question = held_question("Revert", vm, now) if held else None
        dialog = ConfirmScreen("Revert", [vm], detail=detail, held=held, now=now, question=question)
        if not await self.app.push_screen_wait(dialog):
            return
        try:
            await snapshots.revert_snapshot(self.fleet, self._vm(), snap.name)
            self.app.notify(f"reverted {self.vm.ref} to {snap.name}", title="Snapshots")
        except BackendError as exc:
            self._failed(exc)
        self.reload()

    @work(exclusive=True, group="snapshots")
    async def action_delete(self) -> None:
        snap = self._selected()
        if snap is None:
            return
        detail = f"Snapshot {snap.name} is deleted; the VM itself stays as it is."
        confirm = ConfirmScreen("Delete snapshot of", [self._vm()], detail=detail)
        if not await self.app.push_screen_wait(confirm):
            return
        try:
            await snapshots.delete_snapshot(self.fleet, self._vm(), snap.name)
        except BackendError as exc:
            self._failed(exc)
        self.reload()

    def action_close(self) -> None:
        self.dismiss(None)
