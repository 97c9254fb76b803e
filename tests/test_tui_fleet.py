"""The fleet screen with Pilot: rows, filter bar, sort, marks, hosts, read-only, help.

Dead hosts are really dead: a refused port, a black-holed relay in front of the test sshd,
and an ssh host whose relay is stopped under it (the real libvirtd behind it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input

from catkeeper.app import CatkeeperApp
from catkeeper.backend.errors import BackendError
from catkeeper.config import HostConfig, SshSettings, Timing
from catkeeper.model import Host, HostState
from catkeeper.screens.detail import DetailScreen
from catkeeper.screens.error import ErrorScreen
from catkeeper.screens.help import HelpScreen
from catkeeper.widgets.host_strip import HostStrip
from tests.daemons import DelayRelay, DomainFactory, SshServer
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


async def test_keys_typed_right_after_slash_go_to_the_bar(tmp_path: Path) -> None:
    """Keys that arrive in one read with "/" (typed fast, pasted, or batched by a slow ssh
    link) are the filter's, not the table's keys: while the bar took the focus on the next
    turn they went to the table (the bar stayed empty here; in CI's tmux test the "e" of
    "state" opened the VM's XML in vi, and "s" is the table's key to boot a VM)."""
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        for key, char in [("slash", "/"), ("d", "d"), ("b", "b")]:
            app.post_message(events.Key(key, char))  # as the driver does, before any turn
        await pilot.pause()
        assert app.fleet_screen.bar.input.value == "db"
        await until(lambda: names(app) == ["db-01"], what="the filter applied")
        await pilot.press("escape")
        for key, char in [("colon", ":"), ("s", "s"), ("o", "o")]:
            app.post_message(events.Key(key, char))
        await pilot.pause()
        assert (app.fleet_screen.bar.mode, app.fleet_screen.bar.input.value) == ("command", "so")


async def test_a_filter_longer_than_the_bar_scrolls_to_the_cursor(tmp_path: Path) -> None:
    """The bar's Input stores its size without a screen layout (BarInput): typing past the
    right edge must still scroll so the cursor stays on screen, and home goes back."""
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(60, 20)) as pilot:
        await app.wait_idle()
        await pilot.press("slash")
        entry = app.fleet_screen.bar.input
        text = "!state:shutoff " * 6  # 90 cells in a bar of about 50
        await pilot.press(*[c if c != " " else "space" for c in text], "w", "e", "b")
        await pilot.pause()
        assert entry.value == text + "web"
        assert entry.scroll_x > 0
        cursor_x = entry.cursor_screen_offset.x
        assert entry.region.x <= cursor_x <= entry.region.right  # as with a plain Input
        await pilot.press("home")
        await pilot.pause()
        assert entry.scroll_x == 0
        assert names(app) == ["web-01", "web-02"]  # web-03 is shut off


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


def on_screen(app: CatkeeperApp, name: str) -> str:
    """The table line a person sees for VM ``name`` (its cursor moved there, so it shows)."""
    table = app.fleet_screen.table
    assert table.move_cursor_to(key_of(app, name)), f"{name} is not in the table"
    for y in range(1, table.size.height):
        line = table.render_line(y).text
        if f" {name} " in line:
            return line
    raise AssertionError(f"no line for {name} on screen")


async def strip_text(app: CatkeeperApp, pilot: Pilot[None], pick: str) -> str:
    """The host strip as a person reads it after focusing it and picking host ``pick``."""
    strip = app.fleet_screen.query_one(HostStrip)
    strip.focus()
    assert strip.pick(pick)
    await pilot.pause()
    assert strip.has_focus
    return strip.render().plain


async def start_shows(app: CatkeeperApp, pilot: Pilot[None], name: str) -> None:
    """Start shut-off VM ``name`` with its key and wait for the table to show it running."""
    table = app.fleet_screen.table
    table.focus()
    assert table.move_cursor_to(key_of(app, name))
    await pilot.pause()
    assert table.vm(key_of(app, name)).state.value == "shutoff"  # type: ignore[union-attr]
    await pilot.press("s")
    # A start takes milliseconds on the test driver: 30 s is for a loaded machine.
    await until(
        lambda: table.vm(key_of(app, name)).state.value == "running",  # type: ignore[union-attr]
        timeout=30,
        what=f"{name} shown running",
    )
    assert " running " in on_screen(app, name)


def ssh_host_through(relay: DelayRelay, sshd: SshServer, tmp_path: Path, name: str) -> HostConfig:
    """A host reached with catkeeper's own ssh transport through ``relay`` (in front of the
    test ``sshd``), its libvirt the real libvirtd behind a forwarded unix socket."""
    known_hosts = tmp_path / f"known_hosts.{name}"
    known_hosts.write_text(f"[127.0.0.1]:{relay.port} {sshd.host_key_line}\n")
    return HostConfig(
        name=name,
        uri="qemu:///system",
        ssh=SshSettings(
            host="127.0.0.1",
            user="root",
            port=relay.port,
            key=str(sshd.client_key),
            known_hosts=str(known_hosts),
        ),
    )


async def test_unreachable_host_is_shown_while_others_work(tmp_path: Path) -> None:
    # gamma is qemu+tcp to 127.0.0.1:1, where nothing listens: libvirt is refused for real.
    app = make_app(fleet_config(tmp_path, unreachable=True))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle(30)
        await pilot.pause()
        assert names(app) == ALL
        hosts = {h.name: h for h in app.fleet_screen.strip.hosts}
        # Between retries it is "connecting" for a moment; the strip still says unreachable.
        assert HostStrip.shown_state(hosts["gamma"]) is HostState.UNREACHABLE
        assert "Connection refused" in (hosts["gamma"].error or "")
        assert hosts["alpha"].state is HostState.UP
        # The chip says so, and focusing the strip and picking the host shows its error.
        shown = await strip_text(app, pilot, "gamma")
        assert "✖ gamma unreachable" in shown
        assert hosts["gamma"].error in shown
        # The hosts that answer keep working: a start there shows.
        await start_shows(app, pilot, "build-01")


@pytest.mark.daemon
async def test_hung_host_delays_no_other(
    tmp_path: Path, sshd: SshServer, delay_relay: Callable[..., DelayRelay]
) -> None:
    # gamma accepts TCP connections and then says nothing (a black-holed relay): a hung host.
    relay = delay_relay(sshd.port, blackhole=True)
    base = fleet_config(tmp_path)
    config = dataclasses.replace(
        base, hosts=(*base.hosts, ssh_host_through(relay, sshd, tmp_path, "gamma"))
    )
    assert config.timing.connect_timeout == 10  # the default: gamma hangs that long
    app = make_app(config)
    strip = app.fleet_screen.strip

    def gamma() -> Host:
        return next(h for h in strip.hosts if h.name == "gamma")

    async with app.run_test(size=(120, 30)) as pilot:
        # alpha and beta are listed and act (in about a second; gamma hangs for ten).
        await until(lambda: names(app) == ALL, timeout=30, what="alpha and beta listed")
        await start_shows(app, pilot, "build-01")
        # ...all while gamma still hangs: tried, not yet given up, shown as connecting.
        assert relay.accepted >= 1
        assert gamma().state is HostState.CONNECTING and gamma().error is None, gamma()
        assert "◌ gamma connecting…" in await strip_text(app, pilot, "gamma")
        # Then gamma gives up after its connect timeout and says why.
        await until(
            lambda: "timed out" in (gamma().error or ""), timeout=60, what="gamma timed out"
        )
        shown = await strip_text(app, pilot, "gamma")
        assert "✖ gamma unreachable" in shown
        assert (gamma().error or "?") in shown
        assert names(app) == ALL


@pytest.mark.daemon
async def test_rows_of_a_lost_host_stay_visible_and_stale(
    tmp_path: Path,
    sshd: SshServer,
    delay_relay: Callable[..., DelayRelay],
    tcg_domain: DomainFactory,
) -> None:
    dom = tcg_domain()  # shut off, on the real libvirtd that "remote" reaches over ssh
    vm_name = dom.name()
    relay = delay_relay(sshd.port)
    base = fleet_config(tmp_path)
    config = dataclasses.replace(
        base,
        hosts=(*base.hosts, ssh_host_through(relay, sshd, tmp_path, "remote")),
        timing=Timing(connect_timeout=8, call_timeout=10),
    )
    app = make_app(config)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle(60)
        await until(lambda: vm_name in names(app), timeout=30, what=f"{vm_name} listed")
        table = app.fleet_screen.table
        key = key_of(app, vm_name)
        strip = app.fleet_screen.strip

        def remote() -> Host:
            return next(h for h in strip.hosts if h.name == "remote")

        assert remote().state is HostState.UP, remote().error
        assert not table.vm(key).stale  # type: ignore[union-attr]
        assert " shutoff " in on_screen(app, vm_name)

        relay.stop()  # the network to "remote" is gone: live connections cut, new ones refused

        # Reconnecting is refused, so the host stays lost and says why.
        await until(
            lambda: "connection refused" in (remote().error or ""),
            timeout=60,
            what="remote's reconnect refused",
        )
        await until(
            lambda: (vm := app.store.vms.get(key)) is not None and vm.stale,
            timeout=30,
            what=f"the backend to keep {vm_name} as stale",
        )

        def shown_stale() -> bool:
            vm = table.vm(key)
            return vm is not None and vm.stale and key in table.shown_keys

        # Its rows stay, marked stale (~ before the last known state); the others are live.
        await until(shown_stale, timeout=30, what=f"the table to show {vm_name} as stale")
        assert set(ALL) <= set(names(app))
        assert " ~shutoff " in on_screen(app, vm_name)
        assert not table.vm(key_of(app, "web-01")).stale  # type: ignore[union-attr]
        assert " running " in on_screen(app, "web-01")
        # On the stale row the status line tells why; the strip marks the host unreachable.
        table.move_cursor_to(key)
        await pilot.pause()
        error = remote().error or "?"
        assert f"remote unreachable: {error}" in app.fleet_screen.status.render().plain
        shown = await strip_text(app, pilot, "remote")
        assert "✖ remote unreachable" in shown
        assert error in shown
        # No action is offered for a stale VM: the key is refused with a word, not tried
        # against the dead host (that would fail with the host's error instead).
        app.fleet_screen.table.focus()
        table.move_cursor_to(key)
        await pilot.press("s")
        await until(lambda: bool(app._notifications), timeout=30, what="a toast")
        messages = [n.message for n in app._notifications]
        assert messages == ["Start: not possible for a VM that is stale"], messages
        assert app.screen is app.fleet_screen  # no dialog either
        assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
        # The other hosts keep working: a start there shows.
        await start_shows(app, pilot, "build-01")
        assert table.vm(key).stale  # type: ignore[union-attr]


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
        assert "command('start')" not in footer_keys
        app.action_command("start")  # e.g. from the palette or :start
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


async def test_fleet_updates_repaint_only_what_changed(tmp_path: Path) -> None:
    """Each warm refresh sends the screens a fleet update (a host's new latency): with
    nothing else changed, none of them may repaint the whole screen. Textual repaints all of
    the top screen whenever a screen under it handles a message, so this failed while the
    blank screen under the fleet screen was sent them too (most of an idle TUI's CPU)."""
    config = dataclasses.replace(fleet_config(tmp_path), timing=Timing(refresh_interval=0.2))
    app = make_app(config)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        await pilot.pause(0.5)
        compositor = app.fleet_screen._compositor
        render_full_update = compositor.render_full_update
        full_frames = 0

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal full_frames
            full_frames += 1
            return render_full_update(*args, **kwargs)

        compositor.render_full_update = counted  # type: ignore[method-assign]
        seen = app.fleet_screen.seen_serial
        await until(lambda: app.fleet_screen.seen_serial >= seen + 5, what="5 fleet updates")
        await pilot.pause(0.3)
        assert full_frames == 0
