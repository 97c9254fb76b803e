"""What each command-table entry does when reached in the TUI (``test_tui_commands.py``
proves every face reaches it): the VM changed state, its screen opened, its notice came.
Also bulk on marked VMs (one confirmation naming holders, one summary), ``:scan HOST`` and
the detail screen's "Since" date. Test-driver fleets from ``tests/tui_support.py``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console
from textual.command import CommandPalette

from catkeeper.app import CatkeeperApp
from catkeeper.commands import COMMANDS, TUI_FACES
from catkeeper.model import VM, Reservation, VmState
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.console_info import ConsoleInfoScreen
from catkeeper.screens.create_form import CreateFormScreen
from catkeeper.screens.delete_confirm import DeleteConfirmScreen
from catkeeper.screens.detail import DetailScreen, describe_vm
from catkeeper.screens.help import HelpScreen
from catkeeper.screens.placement import PlacementScreen
from catkeeper.screens.reservation import ReservationScreen
from catkeeper.screens.snapshots import SnapshotsScreen
from tests.tui_support import fleet_config, key_of, make_app, names, state_of, until

Check = Callable[[CatkeeperApp], object]


def _toasts(app: CatkeeperApp) -> list[str]:
    return [n.message for n in app._notifications]


def _toast(text: str) -> Check:
    return lambda app: any(text in m for m in _toasts(app))


def _screen(kind: type) -> Check:
    return lambda app: isinstance(app.screen, kind)


def _state(name: str, state: str) -> Check:
    return lambda app: state_of(app, name) == state


def _exists(name: str) -> Check:
    return lambda app: any(vm.name == name for vm in app.store.vms.values())


@dataclass(frozen=True)
class Effect:
    vm: str  # the cursor's VM
    keys: tuple[str, ...]  # a key, or ":" and the line
    done: Check
    confirm: bool = False  # a dialog comes first: answer yes


def _colon(line: str) -> tuple[str, ...]:
    return ("colon", *line, "enter")


EFFECTS: dict[str, Effect] = {
    "start": Effect("build-01", ("s",), _state("build-01", "running")),
    "stop": Effect("web-02", ("S",), _state("web-02", "shutoff"), confirm=True),
    "shutdown": Effect("web-02", ("d",), _state("web-02", "shutoff"), confirm=True),
    "destroy": Effect("web-02", ("ctrl+k",), _state("web-02", "shutoff"), confirm=True),
    # The test driver reboots and resets in place: the VM is still running, no error came.
    "reboot": Effect("web-02", ("b",), lambda a: not a.workers, confirm=True),
    "reset": Effect("web-02", ("B",), lambda a: not a.workers, confirm=True),
    "pause": Effect("web-02", ("p",), _state("web-02", "paused")),
    "resume": Effect("db-01", ("u",), _state("db-01", "running")),  # bob's has expired
    "cancel-stop": Effect("web-02", ("C",), _toast("no graceful stop in progress")),
    "reserve": Effect("build-01", ("r",), _screen(ReservationScreen)),
    "release": Effect("web-01", ("R",), _screen(ConfirmScreen)),
    "console": Effect("web-01", ("v",), _screen(ConsoleInfoScreen)),
    "serial": Effect("web-01", ("c",), _toast("not supported")),
    "scan": Effect("build-01", ("i",), _toast("alpha/build-01: ")),
    "scan-host": Effect("build-01", ("I",), _toast("host alpha: ")),
    "edit": Effect("build-01", ("e",), _toast("no changes")),
    "create": Effect("build-01", ("n",), _screen(CreateFormScreen)),
    "delete": Effect("build-01", ("ctrl+d",), _screen(DeleteConfirmScreen)),
    "rename": Effect("build-01", _colon("rename build-99"), _exists("build-99")),
    "clone": Effect("build-01", _colon("clone build-100"), _exists("build-100")),
    "snapshot": Effect("build-01", _colon("snapshot s1"), _toast("took snapshot s1")),
    "snapshots": Effect("build-01", ("ctrl+s",), _screen(SnapshotsScreen)),
    "place": Effect("build-01", _colon("place 1G 1"), _screen(PlacementScreen)),
    "history": Effect("build-01", _colon("history"), _screen(DetailScreen)),
    "view": Effect("build-01", _colon("view nosuch"), _toast("no view 'nosuch'")),
    "save-view": Effect("build-01", _colon("save-view mine"), _toast("view mine saved to ")),
    "filter": Effect("build-01", _colon("filter web"), lambda a: names(a) and all(
        "web" in n for n in names(a)
    )),
    "command-line": Effect("build-01", ("colon",), lambda a: a.fleet_screen.bar.is_open),
    "host": Effect("build-01", _colon("host beta"), lambda a: names(a) == [
        "cache-01", "ci-runner", "web-03"
    ]),
    "sort": Effect("build-01", _colon("sort memory"), lambda a: (
        a.fleet_screen.table.sort_column == "memory"
    )),
    "vm": Effect("build-01", _colon("vm beta/cache-01"), lambda a: (
        (vm := a.fleet_screen.table.cursor_vm) is not None and vm.name == "cache-01"
    )),
    "readonly": Effect("build-01", _colon("readonly"), lambda a: a.readonly),
    "palette": Effect("build-01", ("ctrl+p",), _screen(CommandPalette)),
    "help": Effect("build-01", ("question_mark",), _screen(HelpScreen)),
    "quit": Effect("build-01", ("q",), lambda a: a.return_code == 0),
}  # fmt: skip


def test_every_tui_entry_has_an_effect_here() -> None:
    assert set(EFFECTS) == {c.name for c in COMMANDS if c.faces & TUI_FACES}


@pytest.mark.parametrize("name", sorted(EFFECTS))
async def test_each_entry_does_what_it_says(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # the console shows how to connect
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("VISUAL", "true")  # an editor that changes nothing
    effect = EFFECTS[name]
    # Where :save-view writes (a config loaded from a file or the demo always has one).
    config = dataclasses.replace(fleet_config(tmp_path), views_file=str(tmp_path / "views.yaml"))
    app = make_app(config, me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        assert app.fleet_screen.table.move_cursor_to(key_of(app, effect.vm))
        await pilot.pause()
        await pilot.press(*effect.keys)
        if effect.confirm:
            await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
            await pilot.press("y")
        await until(lambda: bool(effect.done(app)), what=f"{name} done")
        assert not [m for m in _toasts(app) if "Something went wrong" in m]


# ---- bulk: marked VMs, one confirmation, one summary ------------------------------------


async def _mark(app: CatkeeperApp, pilot: object, *vms: str) -> None:
    await app.wait_idle()
    for vm in vms:
        app.fleet_screen.table.toggle_mark(key_of(app, vm))
    await pilot.pause()  # type: ignore[attr-defined]


async def _one_question(app: CatkeeperApp, count: int) -> ConfirmScreen:
    await until(lambda: isinstance(app.screen, ConfirmScreen), what="one question")
    dialog = app.screen
    assert isinstance(dialog, ConfirmScreen)
    assert len(dialog.vms) == count
    return dialog


async def test_bulk_reserve_one_question_one_form(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "build-01", "web-02", "cache-01")
        await pilot.press("r")
        dialog = await _one_question(app, 3)
        assert dialog.held == []
        await pilot.press("y")
        await until(lambda: isinstance(app.screen, ReservationScreen), what="one form")
        await pilot.press(*"bulk", "enter")
        for vm in ("build-01", "web-02", "cache-01"):
            await until(
                lambda v=vm: (
                    (r := app.store.vms[key_of(app, v)].reservation) is not None
                    and r.owner == "alice"
                    and r.note == "bulk"
                ),
                what=f"{vm} reserved",
            )
        await until(lambda: _toast("reserve: 3 done, 0 failed")(app), what="the summary")


async def test_bulk_release_names_the_holder(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "web-01", "ci-runner", "web-03")  # alice, alice, carol
        await pilot.press("R")
        dialog = await _one_question(app, 3)
        assert [vm.name for vm in dialog.held] == ["web-03"]
        await pilot.press("y")
        for vm in ("web-01", "ci-runner", "web-03"):
            await until(
                lambda v=vm: app.store.vms[key_of(app, v)].reservation is None,
                what=f"{vm} released",
            )
        await until(lambda: _toast("release: 3 done, 0 failed")(app), what="the summary")


async def test_bulk_delete_one_question(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "build-01", "web-02", "cache-01")
        await pilot.press("ctrl+d")
        await _one_question(app, 3)
        await pilot.press("y")
        await until(
            lambda: (
                not {"build-01", "web-02", "cache-01"} & {v.name for v in app.store.vms.values()}
            ),
            what="all three gone",
        )
        await until(lambda: _toast("delete: 3 done, 0 failed")(app), what="the summary")


async def test_bulk_lifecycle_one_question_one_summary(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "web-01", "web-02", "cache-01")
        await pilot.press("p")
        await _one_question(app, 3)
        await pilot.press("y")
        for vm in ("web-01", "web-02", "cache-01"):
            await until(lambda v=vm: _state(v, "paused")(app), what=f"{vm} paused")
        await until(lambda: _toast("pause: 3 done, 0 failed")(app), what="the summary")


async def test_bulk_start_names_each_holder(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="dave")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "build-01", "web-03")  # nobody's, carol's
        await pilot.press("s")
        dialog = await _one_question(app, 2)
        assert [vm.name for vm in dialog.held] == ["web-03"]
        await pilot.press("n")
        await pilot.pause(0.3)
        assert state_of(app, "build-01") == "shutoff" and state_of(app, "web-03") == "shutoff"


# ---- :scan HOST ----------------------------------------------------------------------------


async def test_scan_with_a_host_scans_that_host(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await app.wait_idle()
        assert app.fleet_screen.table.move_cursor_to(key_of(app, "build-01"))  # on alpha
        await pilot.press(*_colon("scan beta"))
        await until(lambda: _toast("host beta: ")(app), what="beta scanned")
        assert not any("alpha" in m for m in _toasts(app))
        await pilot.press(*_colon("scan nosuch"))
        await until(lambda: _toast("no host 'nosuch'")(app), what="the refusal")


# ---- the detail screen's "Since" -------------------------------------------------------------


def _since_line(since: float, now: float) -> str:
    vm = VM(
        host="lab1",
        name="web",
        uuid="u",
        state=VmState.SHUTOFF,
        vcpus=1,
        memory_kib=1024,
        max_memory_kib=1024,
        autostart=False,
        persistent=True,
        reservation=Reservation(owner="alice", since=since),
    )
    console = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(describe_vm(vm, None, [], now))
    return next(line for line in console.export_text().splitlines() if "Since" in line)


def test_since_shows_the_date_when_not_today() -> None:
    noon = time.mktime((2026, 12, 3, 12, 0, 0, 0, 0, -1))  # local noon, whatever the zone
    ten_days = noon - 10 * 86400 - 4 * 3600 - 15 * 60  # 07:45 ten days before
    assert _since_line(ten_days, noon).split() == ["Since", "2026-11-23", "07:45", "(10d", "ago)"]
    today = noon - 4 * 3600 - 15 * 60
    assert _since_line(today, noon).split() == ["Since", "07:45:00", "(4h", "ago)"]


async def test_bulk_scan_one_notice(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "build-01", "web-02", "cache-01")
        await pilot.press("i")
        await until(
            lambda: any(n.title.startswith("IP scan of 3 VMs") for n in app._notifications),
            what="one notice",
        )
        notice = next(n for n in app._notifications if n.title.startswith("IP scan of 3"))
        assert notice.title == "IP scan of 3 VMs: 3 done, 0 failed"
        for ref in ("alpha/build-01: ", "alpha/web-02: ", "beta/cache-01: "):
            assert ref in notice.message
        assert len(app._notifications) == 1


async def test_bulk_snapshot_one_question(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), me="alice")
    async with app.run_test(size=(160, 40)) as pilot:
        await _mark(app, pilot, "build-01", "web-02", "web-03")  # web-03 is carol's
        await pilot.press(*_colon("snapshot before-upgrade"))
        dialog = await _one_question(app, 3)
        assert [vm.name for vm in dialog.held] == ["web-03"]
        await pilot.press("y")
        await until(lambda: _toast("snapshot: 3 done, 0 failed")(app), what="the summary")
