"""What a person sees, at 80x24 (ssh into a jump box) and 160x50, with every clock frozen.

The backend's own clock (error ages, last-seen times) is frozen through HostSession's
``clock`` default, the app's (and its IP book's) through its ``clock`` argument, IP
sightings through the libvirt source's ``clock`` default, latency through the injected
formatter, and history times are printed in UTC. "Now" is 2026-11-23 12:00 UTC: six of the
demo fleet's eight reservations are active, two have expired.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from catkeeper.app import CatkeeperApp
from catkeeper.backend.fleet import Fleet
from catkeeper.config import DEMO_DIR, Config, HostConfig, Timing, demo_config
from catkeeper.screens.store import vm_key
from tests.tui_support import (
    DEMO_NOW,
    NO_BACKGROUND_SCANS,
    UNREACHABLE_URI,
    make_app,
)

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 50), id="160x50")]
Snap = Callable[..., bool]


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


# The detail screen shows the host's URI, which for the demo holds the package's path: copy
# the demo fleet to a fixed place so the snapshots do not depend on where the repo lives.
DEMO_COPY = Path(tempfile.gettempdir()) / "catkeeper-snapshot-demo"


def demo(*, unreachable: bool = False) -> CatkeeperApp:
    DEMO_COPY.mkdir(exist_ok=True)
    for xml in DEMO_DIR.glob("*.xml"):
        shutil.copyfile(xml, DEMO_COPY / xml.name)
    config = demo_config(DEMO_COPY)
    hosts = config.hosts
    if unreachable:
        hosts = (*hosts, HostConfig("lab9", UNREACHABLE_URI))
    # No retry during the snapshot: the strip would show the same, but the run ends sooner.
    timing = Timing(backoff_initial=600, backoff_max=600)
    # IPs come from one scan in ``settled`` rather than a background loop racing the picture.
    config = Config(hosts=hosts, source=config.source, timing=timing, ipscan=NO_BACKGROUND_SCANS)
    # The fleet hands its clock to every HostSession (error ages in the host strip).
    fleet = Fleet(config, clock=lambda: DEMO_NOW)
    return make_app(config, clock=lambda: DEMO_NOW, fleet=fleet)


def settled(*keys: str, then: Callable[[Pilot[Any]], Awaitable[None]] | None = None) -> Any:
    """``run_before``: wait until every host answered and its rows are on screen."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        await app.wait_idle(15)
        await app.ipscan.scan(sweep=False)  # what the first background scan finds
        await app.wait_idle(15)
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        if then is not None:
            await then(pilot)
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_fleet_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(demo(), terminal_size=size, run_before=settled())


@pytest.mark.parametrize("size", SIZES)
def test_filter_active(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(demo(), terminal_size=size, run_before=settled("slash", *"state:run k8s"))


@pytest.mark.parametrize("size", SIZES)
def test_detail_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(demo(), terminal_size=size, run_before=settled("down", "down", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_help_screen(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(demo(), terminal_size=size, run_before=settled("question_mark"))


@pytest.mark.parametrize("size", SIZES)
def test_confirm_dialog(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def mark_three_running(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        table = app.fleet_screen.table
        running = [k for k in table.shown_keys if table.vm(k).state.value == "running"]  # type: ignore[union-attr]
        for key in running[:3]:
            table.toggle_mark(key)
        await pilot.pause()
        await pilot.press("ctrl+k")

    assert snap_compare(demo(), terminal_size=size, run_before=settled(then=mark_three_running))


@pytest.mark.parametrize("size", SIZES)
def test_host_unreachable(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def focus_the_dead_host(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        strip = app.fleet_screen.strip
        strip.focus()
        strip.pick("lab9")

    assert snap_compare(
        demo(unreachable=True), terminal_size=size, run_before=settled(then=focus_the_dead_host)
    )


def _cursor_to(host: str, name: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def move(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        vm = app.fleet.find(f"{host}/{name}")
        assert app.fleet_screen.table.move_cursor_to(vm_key(vm))
        await pilot.pause()

    return move


@pytest.mark.parametrize("size", SIZES)
def test_reserved_and_expired_rows(snap_compare: Snap, size: tuple[int, int]) -> None:
    """Every reserved VM: owner, until, note; the two expired ones dimmed and marked."""
    keys = ("slash", *"!reserved:no", "enter")
    assert snap_compare(demo(), terminal_size=size, run_before=settled(*keys))


@pytest.mark.parametrize("size", SIZES)
def test_detail_addresses(snap_compare: Snap, size: tuple[int, int]) -> None:
    """A running VM's addresses, one line per source, with their age."""

    async def open_it(pilot: Pilot[Any]) -> None:
        await _cursor_to("lab2", "fedora41-kernel-bisect")(pilot)
        await pilot.press("enter")
        await pilot.pause()
        if size[1] < 30:  # bring the Addresses section into view
            await pilot.press("tab")
            for _ in range(16):
                await pilot.press("down")

    assert snap_compare(demo(), terminal_size=size, run_before=settled(then=open_it))


@pytest.mark.parametrize("size", SIZES)
def test_reservation_form(snap_compare: Snap, size: tuple[int, int]) -> None:
    """``r`` on a VM someone else holds: the form says whose it is and offers a take-over."""

    async def open_it(pilot: Pilot[Any]) -> None:
        await _cursor_to("lab2", "fedora41-kernel-bisect")(pilot)
        await pilot.press("r")

    assert snap_compare(demo(), terminal_size=size, run_before=settled(then=open_it))


@pytest.mark.parametrize("size", SIZES)
def test_stop_someone_elses_vm(snap_compare: Snap, size: tuple[int, int]) -> None:
    """The confirmation names the holder and the note."""

    async def stop_it(pilot: Pilot[Any]) -> None:
        await _cursor_to("lab2", "fedora41-kernel-bisect")(pilot)
        await pilot.press("S")

    assert snap_compare(demo(), terminal_size=size, run_before=settled(then=stop_it))
