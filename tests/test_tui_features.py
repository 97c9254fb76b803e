"""Reservations, consoles, guest IPs and VM operations, wired into the app, from the keyboard,
against real libvirt test-driver fleets written per test (tests/tui_support.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, Static

from catkeeper.app import CatkeeperApp
from catkeeper.backend import reservations
from catkeeper.backend.ipscan.book import best_ip
from catkeeper.config import IpScan
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.console_info import ConsoleInfoScreen
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.delete_confirm import DeleteConfirmScreen
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.help import HelpScreen
from catkeeper.screens.palette import FleetCommands
from catkeeper.screens.reservation import ReservationScreen
from catkeeper.screens.snapshots import SnapshotsScreen
from tests.tui_support import (
    fleet_config,
    key_of,
    make_app,
    plain,
    until,
)


async def _ready(app: CatkeeperApp, pilot: object, name: str) -> None:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await app.wait_idle()
    assert app.fleet_screen.table.move_cursor_to(key_of(app, name))
    await pilot.pause()


def _vm(app: CatkeeperApp, name: str):  # type: ignore[no-untyped-def]
    return app.store.vms[key_of(app, name)]


def _row(app: CatkeeperApp, name: str) -> str:
    table = app.fleet_screen.table
    assert table.move_cursor_to(key_of(app, name))
    return table.render_line(1 + table.cursor_row - round(table.scroll_y)).text


def _toasts(app: CatkeeperApp) -> list[str]:
    return [n.message for n in app._notifications]


# ---- reservations ----------------------------------------------------------------------


async def test_reserve_from_the_table_then_release(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        assert "alice" not in _row(app, "build-01")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, ReservationScreen), what="the form")
        await pilot.press(*"perf run", "enter")  # the note field has the focus
        await until(
            lambda: (r := _vm(app, "build-01").reservation) is not None and r.note == "perf run",
            what="the reservation in the store",
        )
        await app.wait_idle()
        row = _row(app, "build-01")
        assert "alice" in row and "perf run" in row and "open" in row  # no end given
        assert any("reserved alpha/build-01" in m for m in _toasts(app))

        await pilot.press("R")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the release dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question == "Release your reservation of alpha/build-01?"
        await pilot.press("y")
        await until(lambda: _vm(app, "build-01").reservation is None, what="the release")
        await app.wait_idle()
        assert "alice" not in _row(app, "build-01")


async def test_releasing_someone_elses_reservation_names_them(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="dave")
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "web-01")  # alice's, "bisecting kernel"
        await pilot.press("R")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the release dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.question == "Release alice's reservation of alpha/web-01?"
        assert "bisecting kernel" in dialog.detail and "not yours" in dialog.detail
        await pilot.press("y")  # confirmed explicitly: released with force
        await until(lambda: _vm(app, "web-01").reservation is None, what="the release")


async def test_a_conflict_reopens_the_form_with_what_was_typed(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        seen = _vm(app, "build-01")
        await pilot.press("r")
        await until(lambda: isinstance(app.screen, ReservationScreen), what="the form")
        await pilot.press(*"my note")
        # Meanwhile bob reserves it, through the same libvirt connection.
        await reservations.reserve(app.fleet, seen, note="bob was faster", me="bob")
        await pilot.press("enter")
        await until(lambda: any("bob" in m for m in _toasts(app)), what="the conflict toast")
        await until(
            lambda: isinstance(app.screen, ReservationScreen) and app.screen.draft is not None,
            what="the form again",
        )
        form = app.screen
        assert isinstance(form, ReservationScreen)
        assert form.query_one("#note", Input).value == "my note"  # nothing typed is lost
        assert form.held_by_other and form.current is not None and form.current.owner == "bob"
        reservation = _vm(app, "build-01").reservation
        assert reservation is not None and reservation.owner == "bob"  # nothing overwritten


# ---- someone else's VM -------------------------------------------------------------------


async def test_stopping_someone_elses_vm_names_the_owner_and_note(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="dave")
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "web-01")
        await pilot.press("S")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert [vm.name for vm in dialog.held] == ["web-01"]
        held = plain(dialog.query_one("#held", Static))
        assert "alice" in held and "bisecting kernel" in held
        assert "Stop anyway (y)" in str(dialog.query_one("#yes").render())
        await pilot.press("n")
        await until(lambda: app.screen is app.fleet_screen, what="the dialog gone")

        # Bulk: one dialog; an expired reservation (bob's db-01) is nobody's to protect.
        table = app.fleet_screen.table
        for name in ("web-01", "web-02", "db-01"):
            table.toggle_mark(key_of(app, name))
        await pilot.press("ctrl+k")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the bulk dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert len(dialog.vms) == 3
        assert [vm.name for vm in dialog.held] == ["web-01"]


async def test_own_vm_asks_no_extra_question(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "web-01")
        await pilot.press("S")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert dialog.held == []
        await pilot.press("n")
        await until(lambda: app.screen is app.fleet_screen, what="the dialog gone")
        await pilot.press("p")  # pause: no dialog for one's own VM
        await until(lambda: _vm(app, "web-01").state.value == "paused", what="paused")


# ---- read-only ---------------------------------------------------------------------------


async def test_readonly_refuses_every_change(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path, readonly=True), me="alice")
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        for key in ("r", "R", "e", "n", "ctrl+d", "b", "C"):
            await pilot.press(key)  # hidden: the keys do nothing
            await pilot.pause()
            assert app.screen is app.fleet_screen, key
        footer = " ".join(
            b.binding.description for b in app.active_bindings.values() if b.binding.show
        )
        assert "Reserve" not in footer and "Start" not in footer
        assert "Open console" in footer  # looking is fine
        for command in ("rename build-99", "clone build-99", "reserve", "delete"):
            await pilot.press("colon", *command, "enter")
            await pilot.pause()
            assert app.screen is app.fleet_screen, command
        refused = [m for m in _toasts(app) if m.startswith("read-only mode")]
        assert len(refused) == 4, _toasts(app)
        texts = [text for text, _help, _msg in FleetCommands(app.screen, None).entries()]
        assert "Find IPs of VM" in texts
        assert not {"Reserve VM…", "Delete VM…", "Edit XML", "New VM…"} & set(texts)

        await pilot.press("enter")  # detail: snapshots may be looked at, not changed
        await pilot.press("ctrl+s")
        await until(lambda: isinstance(app.screen, SnapshotsScreen), what="the snapshots")
        assert not app.screen.check_action("new", ())
        assert not app.screen.check_action("delete", ())


# ---- consoles ----------------------------------------------------------------------------


async def test_console_without_a_display_shows_how_to_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "web-01")  # running, VNC on 127.0.0.1:5900
        await pilot.press("v")
        await until(lambda: isinstance(app.screen, ConsoleInfoScreen), what="the info panel")
        info = app.screen.info  # type: ignore[attr-defined]
        assert info.reason and "no display" in info.reason
        assert info.endpoint == "127.0.0.1:5900"
        await pilot.press("escape")
        await until(lambda: app.screen is app.fleet_screen, what="the panel closed")

        # A shut-off VM has no console: the toast says why.
        app.fleet_screen.table.move_cursor_to(key_of(app, "build-01"))
        await pilot.press("v")
        await until(lambda: any("build-01" in m for m in _toasts(app)), what="the reason")
        assert any("start it to see its console" in m for m in _toasts(app))
        assert app.screen is app.fleet_screen


async def test_serial_console_the_driver_cannot_open_is_a_toast(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "web-01")
        await pilot.press("c")
        await until(lambda: bool(_toasts(app)), what="a toast")
        assert "not supported" in _toasts(app)[0]  # libvirt's own words
        assert app.screen is app.fleet_screen


# ---- guest IPs ---------------------------------------------------------------------------


async def test_i_fills_the_ip_column_and_the_detail_lists_every_source(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))  # no background scans
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "web-01")
        assert _vm(app, "web-01").ips == ()
        assert _vm(app, "web-02").ips == ()
        await pilot.press("i")
        await until(lambda: best_ip(_vm(app, "web-01")) is not None, what="web-01's IP")
        await app.wait_idle()
        ip = best_ip(_vm(app, "web-01"))
        assert ip is not None and ip.startswith("10.9.")
        assert ip in _row(app, "web-01")
        assert _vm(app, "web-02").ips == ()  # only the VM asked about
        await until(lambda: any(ip in m for m in _toasts(app)), what="the result toast")

        app.fleet_screen.table.move_cursor_to(key_of(app, "web-01"))
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DetailScreen), what="the detail")
        text = plain(app.screen.query_one("#info", Static))
        listed = [line for line in text.splitlines() if ip in line and "ago" in line]
        sources = {line.split()[2] for line in listed}
        # Each source with its age: on the test driver (no bulk lease call, no connected
        # agent channel) that is the lease asked per VM; agent and arp are not asked.
        assert sources == {"lease"}, text


async def test_I_scans_the_whole_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(fleet_config(tmp_path))
    # No sweep of this machine's networks from a test: libvirt's sources only.
    real = app.ipscan.scan_host
    monkeypatch.setattr(
        app.ipscan, "scan_host", lambda host, **kw: real(host, **{**kw, "sweep": False})
    )
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "web-01")
        await pilot.press("I")
        for name in ("web-01", "web-02", "db-01"):  # every active VM of alpha
            await until(lambda n=name: best_ip(_vm(app, n)) is not None, what=f"{name}'s IP")
        assert _vm(app, "cache-01").ips == ()  # beta was not asked


async def test_background_scans_fill_ips_without_a_key(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path, ipscan=IpScan(libvirt_interval=60.0)))
    async with app.run_test(size=(160, 30)):
        await app.wait_idle()
        for name in ("web-01", "cache-01", "ci-runner"):
            await until(lambda n=name: best_ip(_vm(app, n)) is not None, what=f"{name}'s IP")
        assert _vm(app, "build-01").ips == ()  # shut off: nothing to ask


# ---- VM operations -----------------------------------------------------------------------


async def test_ctrl_d_shows_the_delete_confirmation(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "web-03")  # carol's, "release candidate"
        await pilot.press("ctrl+d")
        await until(lambda: isinstance(app.screen, DeleteConfirmScreen), what="the dialog")
        dialog = app.screen
        assert isinstance(dialog, DeleteConfirmScreen)
        assert dialog.needs_name  # someone else's: type the name
        assert "carol" in plain(dialog.query_one("#reserved", Static))
        await pilot.press("escape")
        await until(lambda: app.screen is app.fleet_screen, what="cancelled")
        assert "web-03" in [vm.name for vm in app.store.vms.values()]

        app.fleet_screen.table.move_cursor_to(key_of(app, "build-01"))
        await pilot.press("ctrl+d")
        await until(lambda: isinstance(app.screen, DeleteConfirmScreen), what="the dialog")
        await pilot.click("#delete")
        await until(
            lambda: "build-01" not in [vm.name for vm in app.store.vms.values()],
            what="build-01 deleted",
        )
        await until(lambda: any("deleted alpha/build-01" in m for m in _toasts(app)), what="toast")


async def test_rename_and_clone_commands(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        await pilot.press("colon", *"rename build-99", "enter")
        await until(lambda: any(vm.name == "build-99" for vm in app.store.vms.values()), what="rn")
        await app.wait_idle()
        assert app.fleet_screen.table.move_cursor_to(key_of(app, "build-99"))
        await pilot.press("colon", *"clone build-100", "enter")
        await until(
            lambda: any(vm.name == "build-100" for vm in app.store.vms.values()), what="clone"
        )
        await pilot.press("colon", *"rename", "enter")
        await until(lambda: any("usage: :rename" in m for m in _toasts(app)), what="usage")


async def test_edit_with_an_editor_that_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISUAL", "true")
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        await pilot.press("e")
        await until(lambda: any("no changes" in m for m in _toasts(app)), what="no changes")


async def test_n_opens_the_create_form_on_the_cursors_host(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 40)) as pilot:
        await _ready(app, pilot, "cache-01")
        await pilot.press("n")
        await until(lambda: isinstance(app.screen, CreateFormScreen), what="the form")
        form = app.screen
        assert isinstance(form, CreateFormScreen)
        assert form.hosts == ["alpha", "beta"] and form.default_host == "beta"
        await pilot.press("escape")
        await until(lambda: app.screen is app.fleet_screen, what="cancelled")


async def test_detail_ctrl_s_opens_the_snapshots(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 30)) as pilot:
        await _ready(app, pilot, "web-02")
        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, DetailScreen), what="the detail")
        await pilot.press("ctrl+s")
        await until(lambda: isinstance(app.screen, SnapshotsScreen), what="the snapshots")
        assert app.screen.vm.name == "web-02"  # type: ignore[attr-defined]


# ---- help and palette --------------------------------------------------------------------


async def test_help_and_palette_list_the_new_actions(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(160, 50)) as pilot:
        await app.wait_idle()
        await pilot.press("question_mark")
        await until(lambda: isinstance(app.screen, HelpScreen), what="the help")
        text = "\n".join(plain(s) for s in app.screen.query(Static))
        for key, what in (
            ("r", "Reserve"),
            ("R", "Release reservation"),
            ("v", "Open console"),
            ("c", "Serial console"),
            ("i", "Find IPs of VM"),
            ("I", "Find IPs on host"),
            ("e", "Edit XML"),
            ("n", "New VM"),
            ("^d", "Delete VM"),
            ("b", "Reboot"),
            ("B", "Reset"),
            ("C", "Cancel graceful stop"),
            ("^s", "Snapshots"),
        ):
            assert any(line.split()[:1] == [key] and what in line for line in text.splitlines()), (
                what
            )
        assert ":rename NEWNAME" in text and ":clone NEWNAME" in text
        await pilot.press("escape")
        texts = [text for text, _help, _msg in FleetCommands(app.screen, None).entries()]
        for entry in (
            "Reserve VM…",
            "Release reservation",
            "Open console",
            "Serial console",
            "Find IPs of VM",
            "Find IPs on host",
            "Edit XML",
            "New VM…",
            "Delete VM…",
            "Rename VM…",
            "Clone VM…",
        ):
            assert entry in texts
