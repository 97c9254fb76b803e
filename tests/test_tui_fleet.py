"""The fleet screen with Pilot: rows, filter bar, sort, marks, hosts, read-only, help."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from textual.widgets import Input

from catkeeper.backend.errors import BackendError
from catkeeper.backend.events import HostChanged, InventoryLoaded
from catkeeper.model import HostState
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.error import ErrorScreen
from catkeeper.screens.help import HelpScreen
from catkeeper.widgets.host_strip import HostStrip
from tests.tui_support import fleet_config, key_of, make_app, names, plain, until

ALL = ["build-01", "db-01", "web-01", "web-02", "cache-01", "ci-runner", "web-03"]


async def test_rows_from_every_host(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.pause()
        assert names(app) == ALL  # host, then name
        strip = app.fleet_screen.strip
        assert {h.name: h.state for h in strip.hosts} == {
            "alpha": HostState.UP,
            "beta": HostState.UP,
        }
        assert app.fleet_screen.table.cursor_vm is not None
        assert app.fleet_screen.table.cursor_vm.name == "build-01"


async def test_filter_narrows_on_every_keystroke(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.press("slash")
        assert app.fleet_screen.bar.is_open
        assert isinstance(app.focused, Input)
        seen = []
        for ch in "cac":
            await pilot.press(ch)
            seen.append(names(app))
        assert seen == [
            ["web-01", "cache-01", "ci-runner", "web-03"],  # "bisecting", "carol", ...
            ["cache-01", "web-03"],  # "candidate"
            ["cache-01"],
        ]
        await pilot.press(*["backspace"] * 3, *"web-01")
        assert names(app) == ["web-01"]
        await pilot.press("enter")  # closes the bar, keeps the filter
        assert not app.fleet_screen.bar.is_open
        assert names(app) == ["web-01"]
        await pilot.press("slash")  # reopens with the filter to edit
        assert app.fleet_screen.bar.input.value == "web-01"
        await pilot.press("escape")  # clears and closes
        assert not app.fleet_screen.bar.is_open
        assert names(app) == ALL
        assert app.focused is app.fleet_screen.table


async def test_filter_operators_in_the_bar(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    cases = {
        "host:beta": ["cache-01", "ci-runner", "web-03"],
        "state:running": ["web-01", "web-02", "cache-01", "ci-runner"],
        "state:shut": ["build-01", "web-03"],
        "owner:me": ["web-01", "ci-runner"],  # the app's user is alice
        "owner:bob": ["db-01"],
        "reserved:expired": ["db-01"],
        "reserved:no": ["build-01", "web-02", "cache-01"],
        "!web": ["build-01", "db-01", "cache-01", "ci-runner"],
        "!owner:me state:running": ["web-02", "cache-01"],
        "kernel": ["web-01"],
    }
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        for text, expected in cases.items():
            await pilot.press("slash")
            app.fleet_screen.bar.input.value = ""
            await pilot.press(*text)
            assert names(app) == expected, text
            await pilot.press("escape")


async def test_bad_filter_is_shown_and_the_last_good_one_kept(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.press("slash", *"host:alpha")
        assert len(names(app)) == 4
        app.fleet_screen.bar.input.value = "host:alpha state:bogus"  # as if pasted
        await pilot.pause()
        problem = plain(app.fleet_screen.bar.query_one("#problem"))
        assert "unknown state 'bogus'" in problem
        assert len(names(app)) == 4  # the table keeps the last filter that made sense
        await pilot.press("enter")  # a bad filter is not accepted
        assert app.fleet_screen.bar.is_open


async def test_sort_by_key_and_click_is_stable(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        await pilot.press("2")  # name
        assert names(app) == sorted(ALL)
        await pilot.press("2")  # again: reversed
        assert names(app) == sorted(ALL, reverse=True)
        await pilot.press("3")  # state; ties keep host/name order
        assert names(app) == [
            "web-01",
            "web-02",
            "cache-01",
            "ci-runner",
            "db-01",
            "build-01",
            "web-03",
        ]
        await pilot.press("5")  # memory
        memories = [table.vm(k).memory_kib for k in table.shown_keys]  # type: ignore[union-attr]
        assert memories == sorted(memories)
        # Clicking a header sorts by it: the header is the table's first line.
        x = 2 + len("alpha") + 1  # mark column, host column, spaces → NAME starts here
        await pilot.click("#vms", offset=(x + 1, 0))
        assert table.sort_column == "name"
        assert names(app) == sorted(ALL)


async def test_cursor_follows_its_row_through_sorts_and_filters(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        await pilot.press("down", "down")
        assert table.cursor_vm is not None and table.cursor_vm.name == "web-01"
        await pilot.press("2")
        assert table.cursor_vm is not None and table.cursor_vm.name == "web-01"
        await pilot.press("slash", *"web")
        assert table.cursor_vm is not None and table.cursor_vm.name == "web-01"


async def test_marking_rows(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        await pilot.press("space", "space")  # marks and moves down
        assert [vm.name for vm in table.selection()] == ["build-01", "db-01"]
        await pilot.press("up", "space")  # unmarks db-01
        assert [vm.name for vm in table.selection()] == ["build-01"]
        assert "1 marked" in str(app.fleet_screen.status.render())
        await pilot.press("ctrl+a")
        assert len(table.selection()) == len(ALL)
        await pilot.press("escape")
        assert table.marked_keys == set()
        # With nothing marked, the selection is the cursor's row.
        assert [vm.name for vm in table.selection()] == ["web-01"]


async def test_unreachable_host_is_shown_while_others_work(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path, unreachable=True))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle(15)
        await pilot.pause()
        assert names(app) == ALL
        hosts = {h.name: h for h in app.fleet_screen.strip.hosts}
        assert hosts["gamma"].state is HostState.UNREACHABLE
        assert hosts["gamma"].error
        assert hosts["alpha"].state is HostState.UP
        # Focusing the strip and picking the host shows its error.
        strip = app.fleet_screen.query_one(HostStrip)
        strip.focus()
        strip.pick("gamma")
        await pilot.pause()
        assert hosts["gamma"].error in str(strip.render())


async def test_rows_of_a_lost_host_stay_visible_and_stale(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        session = app.fleet.session("beta")
        stale = tuple(dataclasses.replace(vm, stale=True) for vm in session.vms.values())
        # What HostSession emits when a connection drops (see _go_unreachable).
        app._on_fleet_event(InventoryLoaded("beta", stale))
        app._on_fleet_event(
            HostChanged(
                dataclasses.replace(
                    session.host, state=HostState.UNREACHABLE, error="keepalive timed out"
                )
            )
        )
        await app.wait_idle()
        await pilot.pause()
        assert names(app) == ALL
        table = app.fleet_screen.table
        assert table.vm(key_of(app, "cache-01")).stale  # type: ignore[union-attr]
        assert not table.vm(key_of(app, "web-01")).stale  # type: ignore[union-attr]
        table.move_cursor_to(key_of(app, "cache-01"))
        await pilot.pause()
        assert "beta unreachable: keepalive timed out" in str(app.fleet_screen.status.render())
        # No action is offered for a stale VM.
        app.run_lifecycle("start")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)


async def test_readonly_hides_and_refuses_actions(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path), readonly=True)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        table.move_cursor_to(key_of(app, "build-01"))
        await pilot.press("s")  # hidden: the key does nothing
        await pilot.pause(0.3)
        assert table.vm(key_of(app, "build-01")).state.value == "shutoff"  # type: ignore[union-attr]
        footer_keys = {b.binding.action for b in app.active_bindings.values() if b.enabled}
        assert "lifecycle('start')" not in footer_keys
        app.run_lifecycle("start")  # e.g. from the palette or :start
        await pilot.pause()
        assert any("read-only" in n.message for n in app._notifications)
        assert "READ-ONLY" in str(app.fleet_screen.status.render())


async def test_readonly_command_switches_it_on(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.press("colon", *"readonly", "enter")
        assert app.readonly
        assert all(s.readonly for s in app.fleet.sessions.values())
        await pilot.press("colon", *"host beta", "enter")
        assert names(app) == ["cache-01", "ci-runner", "web-03"]


async def test_help_lists_every_binding(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.wait_idle()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = " ".join(plain(s) for s in app.screen.query("Static"))
        for words in ("Force off", "Reset", "Mark", "Filter", "Sort by mem", "Domain XML"):
            assert words in text
        await pilot.press("escape")
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)


async def test_detail_screen_and_domain_xml(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.wait_idle()
        app.fleet_screen.table.move_cursor_to(key_of(app, "web-01"))
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        text = plain(app.screen.query_one("#info"))
        for words in ("web-01", "alice", "bisecting kernel", "52:54:00:00:00:05", "vnc"):
            assert words in text
        await pilot.press("x")
        await until(lambda: "<domain" in plain(app.screen.query_one("#xml")), what="the domain XML")
        await pilot.press("escape")
        assert app.screen is app.fleet_screen


async def test_palette_jumps_to_a_vm(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.press("ctrl+p")
        await pilot.press(*"ci-runner")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        vm = app.fleet_screen.table.cursor_vm
        assert vm is not None and vm.name == "ci-runner"


async def test_errors_are_routed_to_toasts_or_a_modal(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()

        async def expected() -> None:
            raise BackendError("lab9: connection refused")

        async def bug() -> None:
            raise ZeroDivisionError("division by zero")

        app.run_worker(expected(), name="refresh lab9", exit_on_error=False)
        await pilot.pause(0.2)
        assert [n.message for n in app._notifications] == ["lab9: connection refused"]
        assert not isinstance(app.screen, ErrorScreen)
        app.fleet_screen.run_worker(bug(), name="a bug", exit_on_error=False)
        await pilot.pause(0.2)
        assert isinstance(app.screen, ErrorScreen)
        await pilot.press("escape")
        assert app.screen is app.fleet_screen
