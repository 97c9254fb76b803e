"""Ask before deleting a VM: which of its volumes go too, and, for a VM someone else has
reserved, the VM's name typed out.

The screen only decides; the caller runs ``vmops.delete`` with the answer. It lists every
disk: the volumes libvirt manages get a checkbox (ticked when it is a writable disk nothing
else uses), anything else is shown as kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Static

from catkeeper.backend.vm.vmops import DiskVolume
from catkeeper.model import VM


@dataclass(frozen=True)
class DeleteChoice:
    volumes: tuple[str, ...]  # paths of the volumes to delete with the VM
    force_off: bool


def _size(capacity: int | None) -> str:
    if capacity is None:
        return "?"
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2)):
        if capacity >= factor:
            return f"{capacity / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{capacity} B"


def _label(disk: DiskVolume) -> Text:
    text = Text()
    text.append(f"{disk.target:<4} ", "bold")
    text.append(disk.path or "")
    details = [f"{disk.pool}/{disk.volume}", _size(disk.capacity)]
    if disk.format:
        details.append(disk.format)
    if disk.device != "disk":
        details.append(disk.device)
    if disk.readonly:
        details.append("read-only")
    text.append(f"  ({', '.join(details)})", "dim")
    if disk.used_by:
        text.append(f"  also used by {', '.join(disk.used_by)}", "bold yellow")
    return text


class DeleteConfirmScreen(ModalScreen[DeleteChoice | None]):
    """Dismisses with a ``DeleteChoice``, or None when cancelled (``esc``)."""

    DEFAULT_CSS = """
    DeleteConfirmScreen { align: center middle; }
    DeleteConfirmScreen > Vertical {
        width: 100; max-width: 100%; height: auto; max-height: 100%;
        border: thick $error; background: $surface; padding: 0 1;
    }
    DeleteConfirmScreen #question { text-style: bold; width: 100%; }
    DeleteConfirmScreen .note { color: $text-muted; width: 100%; }
    DeleteConfirmScreen #reserved { color: $warning; text-style: bold; margin: 1 0 0 0; }
    DeleteConfirmScreen #volumes { height: auto; max-height: 10; margin: 1 0 0 0; }
    DeleteConfirmScreen #force { margin: 1 0 0 0; }
    DeleteConfirmScreen Checkbox { width: 100%; }
    DeleteConfirmScreen #name { margin: 0; width: 100%; }
    DeleteConfirmScreen Horizontal { height: auto; align-horizontal: right; margin: 1 0 0 0; }
    DeleteConfirmScreen Button { margin: 0 0 0 2; min-width: 10; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, vm: VM, disks: Sequence[DiskVolume], *, me: str, now: float) -> None:
        super().__init__()
        self.vm = vm
        self.disks = list(disks)
        res = vm.reservation
        # Someone else's live reservation: typing the name is the confirmation.
        self.needs_name = res is not None and res.owner != me and not res.is_expired(now)

    def compose(self) -> ComposeResult:
        vm = self.vm
        with Vertical():
            yield Label(f"Delete {vm.ref}?", id="question")
            yield Static(
                f"{vm.state.value}; its definition, snapshots, managed save and NVRAM go. "
                "Ticked volumes are deleted too.",
                classes="note",
            )
            with VerticalScroll(id="volumes"):
                for index, disk in enumerate(self.disks):
                    if disk.deletable:
                        yield Checkbox(
                            _label(disk), disk.suggested, id=f"vol-{index}", compact=True
                        )
                    else:
                        why = "no medium" if disk.path is None else "not a pool volume; kept"
                        yield Static(
                            Text.assemble(
                                (f"  {disk.target:<4} ", "bold"),
                                disk.path or "",
                                (f"  ({why})", "dim"),
                            )
                        )
                if not self.disks:
                    yield Static("  (no disks)", classes="note")
            if vm.state.is_active:
                yield Checkbox("It is running: force it off first", False, id="force", compact=True)
            if self.needs_name and vm.reservation is not None:
                res = vm.reservation
                note = f": {res.note}" if res.note else ""
                yield Static(f"Reserved by {res.owner}{note}", id="reserved")
                yield Input(placeholder=f"type {vm.name} to delete it", id="name", compact=True)
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel", variant="default")
                yield Button("Delete", id="delete", variant="error", disabled=True)

    def on_mount(self) -> None:
        self._update()
        if self.needs_name:
            self.query_one("#name", Input).focus()
        else:
            self.query_one("#cancel", Button).focus()

    def _chosen(self) -> tuple[str, ...]:
        paths = []
        for index, disk in enumerate(self.disks):
            if disk.deletable and disk.path and self.query_one(f"#vol-{index}", Checkbox).value:
                paths.append(disk.path)
        return tuple(paths)

    def _ready(self) -> bool:
        if self.vm.state.is_active and not self.query_one("#force", Checkbox).value:
            return False
        return not self.needs_name or self.query_one("#name", Input).value.strip() == self.vm.name

    def _update(self) -> None:
        count = len(self._chosen())
        button = self.query_one("#delete", Button)
        button.label = (
            f"Delete VM and {count} volume{'s' if count != 1 else ''}" if count else "Delete VM"
        )
        button.disabled = not self._ready()

    def on_checkbox_changed(self, _event: Checkbox.Changed) -> None:
        self._update()

    def on_input_changed(self, _event: Input.Changed) -> None:
        self._update()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        if self._ready():
            self._finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "delete" and self._ready():
            self._finish()
        elif event.button.id == "cancel":
            self.dismiss(None)

    def _finish(self) -> None:
        force = self.vm.state.is_active and self.query_one("#force", Checkbox).value
        self.dismiss(DeleteChoice(volumes=self._chosen(), force_off=force))

    def action_cancel(self) -> None:
        self.dismiss(None)
