"""The create form and the delete confirmation, pushed in a minimal app with fixed data:
what a person sees (snapshots) and what they get back (Pilot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Button, Input, Static

from catkeeper.backend.vm.create import CloudInitSource, CreateSpec, ImageSource, NetInstallSource
from catkeeper.backend.vm.vmops import DiskVolume
from catkeeper.model import VM, Reservation, VmState
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.delete_confirm import DeleteChoice, DeleteConfirmScreen

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 50), id="160x50")]
Snap = Callable[..., bool]
NOW = 1_800_000_000.0
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ9iNUkIr44e5q8XvK9A5njxI+bekohFVC/ULfI5jr+Y alice@lab"


class Harness(App[None]):
    """Pushes one screen and keeps what it was dismissed with."""

    def __init__(self, screen: Any) -> None:
        super().__init__()
        self.screen_under_test = screen
        self.result: object = "not dismissed"

    def on_mount(self) -> None:
        self.push_screen(self.screen_under_test, callback=self._done)

    def _done(self, result: object) -> None:
        self.result = result


def vm(state: VmState = VmState.RUNNING, owner: str | None = "bob") -> VM:
    return VM(
        host="lab1",
        name="db-01",
        uuid="6f1c2b1e-0000-4000-8000-000000000001",
        state=state,
        vcpus=4,
        memory_kib=8 * 1024 * 1024,
        max_memory_kib=8 * 1024 * 1024,
        autostart=False,
        persistent=True,
        reservation=Reservation(owner=owner, note="load test until Fri") if owner else None,
    )


DISKS = [
    DiskVolume(
        target="vda", device="disk", path="/var/lib/libvirt/images/db-01.qcow2",
        pool="default", volume="db-01.qcow2", capacity=20 * 1024**3, format="qcow2",
        readonly=False, suggested=True,
    ),
    DiskVolume(
        target="vdb", device="disk", path="/var/lib/libvirt/images/base-sles15.qcow2",
        pool="default", volume="base-sles15.qcow2", capacity=10 * 1024**3, format="qcow2",
        readonly=False, used_by=("VM db-02",), suggested=False,
    ),
    DiskVolume(
        target="hdc", device="cdrom", path="/srv/iso/SLE-15-SP6.iso", pool="isos",
        volume="SLE-15-SP6.iso", capacity=700 * 1024**2, format="iso", readonly=True,
    ),
    DiskVolume(
        target="vdc", device="disk", path="/dev/vg0/scratch", pool=None, volume=None,
        capacity=None, format=None, readonly=False,
    ),
]  # fmt: skip


def delete_screen(**kw: Any) -> DeleteConfirmScreen:
    return DeleteConfirmScreen(vm(**kw), DISKS, me="alice", now=NOW)


def create_form() -> CreateFormScreen:
    return CreateFormScreen(["lab1", "lab2", "gpu4"], host="lab2", ssh_keys=[KEY])


# ---- snapshots ------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_create_form_snapshot(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(Harness(create_form()), terminal_size=size)


def test_create_form_errors_snapshot(snap_compare: Snap) -> None:
    async def run_before(pilot: Any) -> None:
        await pilot.press(*"bad name", "ctrl+s")

    assert snap_compare(Harness(create_form()), terminal_size=(100, 40), run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_delete_confirm_snapshot(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(Harness(delete_screen()), terminal_size=size)


# ---- behaviour ------------------------------------------------------------------------


async def test_delete_needs_the_name_of_a_vm_reserved_by_someone_else() -> None:
    app = Harness(delete_screen())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        button = app.screen.query_one("#delete", Button)
        assert button.disabled and str(button.label) == "Delete VM and 1 volume"
        await pilot.press(*"db-01")
        assert button.disabled  # still running: force-off must be ticked
        app.screen.query_one("#force").value = True  # type: ignore[attr-defined]
        await pilot.pause()
        assert not button.disabled
        app.screen.query_one("#vol-1").value = True
        await pilot.pause()
        assert str(button.label) == "Delete VM and 2 volumes"
        await pilot.click("#delete")
        await pilot.pause()
    assert app.result == DeleteChoice(
        volumes=(DISKS[0].path or "", DISKS[1].path or ""), force_off=True
    )


async def test_delete_of_my_own_shut_off_vm_needs_no_typing_and_esc_cancels() -> None:
    app = Harness(
        DeleteConfirmScreen(vm(VmState.SHUTOFF, owner="alice"), DISKS, me="alice", now=NOW)
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.screen.query("#name") and not app.screen.query("#force")
        assert not app.screen.query_one("#delete", Button).disabled
        await pilot.press("escape")
        await pilot.pause()
    assert app.result is None


async def test_create_form_keeps_input_on_errors_and_returns_a_valid_spec() -> None:
    app = Harness(create_form())
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press(*"bad name", "ctrl+s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CreateFormScreen)
        assert app.result == "not dismissed"
        fields = {e.field for e in screen.errors}
        assert fields == {"name", "source.image"}
        assert screen.query_one("#name", Input).has_class("invalid")
        assert "not valid" in str(screen.query_one("#errors", Static).render())
        assert screen.query_one("#name", Input).value == "bad name"  # nothing lost

        screen.query_one("#name", Input).value = "web-07"
        screen.query_one("#source", Input).value = "default/sles15.qcow2"
        screen.query_one("#disk", Input).value = "40G"
        await pilot.press("ctrl+s")
        await pilot.pause()
    spec = app.result
    assert isinstance(spec, CreateSpec)
    assert (spec.host, spec.name, spec.disk_gib, spec.memory_mib) == ("lab2", "web-07", 40.0, 2048)
    assert spec.source == ImageSource("default/sles15.qcow2", copy=False)
    assert spec.graphics == "vnc" and spec.vnc_listen == "127.0.0.1"
    # An empty Pool leaves the choice to create: the image's pool ("default" here), so a
    # host without a pool named "default" still takes an image from another pool.
    assert spec.pool is None


async def test_create_form_switches_source_fields() -> None:
    app = Harness(create_form())
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, CreateFormScreen)
        assert not screen.query_one("#row-keys").display
        screen.query_one("#kind").value = "cloud-init"  # type: ignore[attr-defined]
        await pilot.pause()
        assert screen.query_one("#row-keys").display and not screen.query_one("#row-copy").display
        screen.query_one("#name", Input).value = "ci-01"
        screen.query_one("#source", Input).value = "/images/leap.qcow2"
        spec, errors = screen.read_spec()
        assert not errors and spec is not None
        assert spec.source == CloudInitSource("/images/leap.qcow2", ssh_keys=(KEY,), user=None)
        screen.query_one("#pool", Input).value = "fast"
        spec, errors = screen.read_spec()
        assert spec is not None and spec.pool == "fast"  # a pool typed in wins

        screen.query_one("#kind").value = "netinstall"  # type: ignore[attr-defined]
        await pilot.pause()
        screen.query_one("#source", Input).value = "ftp://nope"
        spec, errors = screen.read_spec()
        assert [e.field for e in errors] == ["source.url"]
        screen.query_one("#source", Input).value = "http://127.0.0.1:8080/repo/oss/"
        screen.query_one("#args", Input).value = "console=ttyS0"
        spec, errors = screen.read_spec()
        assert not errors and spec is not None
        assert spec.source == NetInstallSource(
            "http://127.0.0.1:8080/repo/oss/", extra_args="console=ttyS0"
        )
