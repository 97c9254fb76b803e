"""Live stats on screen: the table's CPU% and NET columns (figure + sparkline) and the
detail screen's plots, fed through the real path: records folded by ``HostStats.take`` (the
test driver reports no counters, so the records are written here, as libvirt shapes them),
then one ``StatsUpdated`` into the app's event pump, as a poll posts it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest
from textual.pilot import Pilot

from catkeeper.app import CatkeeperApp
from catkeeper.backend.events import StatsUpdated
from catkeeper.backend.fleet import Fleet
from catkeeper.config import DEMO_DIR, Config, Timing, demo_config
from catkeeper.widgets.stats_plots import StatsPlots
from tests.tui_support import DEMO_NOW, NO_BACKGROUND_SCANS, make_app

Snap = Callable[..., bool]
DEMO_COPY = Path(tempfile.gettempdir()) / "catkeeper-snapshot-demo"


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def demo() -> CatkeeperApp:
    DEMO_COPY.mkdir(exist_ok=True)
    for xml in DEMO_DIR.glob("*.xml"):
        shutil.copyfile(xml, DEMO_COPY / xml.name)
    config = demo_config(DEMO_COPY)
    # stats_interval 0: no background poll of the test driver (no counters) racing the
    # samples this test feeds in.
    timing = Timing(backoff_initial=600, backoff_max=600, stats_interval=0)
    config = Config(
        hosts=config.hosts, source=config.source, timing=timing, ipscan=NO_BACKGROUND_SCANS
    )
    return make_app(config, clock=lambda: DEMO_NOW, fleet=Fleet(config, clock=lambda: DEMO_NOW))


def _record(i: int, poll: int) -> dict[str, Any]:
    """Poll ``poll`` of the ``i``-th running VM: CPU and traffic that differ per VM."""
    busy = (i * 37 + poll * poll * 11) % 100  # percent of one vCPU in the last 10 s
    cpu_s = sum((i * 37 + p * p * 11) % 100 for p in range(poll + 1)) / 10
    return {
        "state.state": libvirt.VIR_DOMAIN_RUNNING,
        "vcpu.current": 1,
        "cpu.time": int(cpu_s * 1e9),
        "balloon.rss": 512 * 1024 + busy * 1024,
        "net.count": 1,
        "net.0.rx.bytes": poll * (i + 1) * 150_000,
        "net.0.tx.bytes": poll * poll * 20_000,
        "block.count": 1,
        "block.0.rd.bytes": poll * 4096,
        "block.0.wr.bytes": poll * i * 8192,
    }


def feed(app: CatkeeperApp, polls: int = 8) -> None:
    """``polls`` polls, 10 s apart, of every running VM of every host; then announce them."""
    for session in app.fleet.sessions.values():
        running = sorted(u for u, vm in session.vms.items() if vm.state.is_active)
        for poll in range(polls):
            records = [(uuid, _record(i, poll)) for i, uuid in enumerate(running)]
            session.stats.take(records, 1000.0 + 10 * poll, DEMO_NOW - 10 * (polls - poll))
        app.events.on_event(StatsUpdated(session.name))


def fed(*keys: str) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        await app.wait_idle(15)
        feed(app)
        await app.wait_idle(15)
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.2)

    return run_before


async def test_columns_appear_with_the_first_rates_and_show_the_latest() -> None:
    app = demo()
    async with app.run_test(size=(160, 50)) as pilot:
        await app.wait_idle(15)
        table = app.fleet_screen.table
        assert "cpu" not in table._widths  # no host reports rates yet: no empty columns
        feed(app)
        await app.wait_idle(15)
        await pilot.pause()
        assert "cpu" in table._widths and "net" in table._widths
        # A poll of a host with no visible row repaints nothing; one of a shown host does.
        serial = table._stats_serial
        table.stats_updated({"elsewhere"})
        assert table._stats_serial == serial
        table.stats_updated({"build3"})
        assert table._stats_serial == serial + 1
        key = next(k for k in table.shown_keys if table.vm(k).state.is_active)  # type: ignore[union-attr]
        vm = table.vm(key)
        assert vm is not None
        last = app.fleet.session(vm.host).stats.latest(vm.uuid)
        assert last is not None and last.cpu_pct is not None
        header = "".join(seg.text for seg in table.render_line(0))
        assert "CPU%" in header and "NET" in header
        row = "".join(seg.text for seg in table.render_line(1 + table.shown_keys.index(key)))
        assert f"{last.cpu_pct:3.0f}%" in row
        # Sorting by CPU puts the busiest running VM first.
        table.sort_by("cpu", reverse=True)
        first = table.vm(table.shown_keys[0])
        assert first is not None
        busiest = max(
            (app.fleet.session(v.host).stats.latest(v.uuid) for v in app.fleet.vms()),
            key=lambda r: (r.cpu_pct or -1) if r else -1,
        )
        assert app.fleet.session(first.host).stats.latest(first.uuid) == busiest


SIZES = [(80, 24), (160, 50)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_table_with_stats(snap_compare: Snap, size: tuple[int, int]) -> None:
    assert snap_compare(demo(), terminal_size=size, run_before=fed())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_detail_plots(snap_compare: Snap, size: tuple[int, int]) -> None:
    async def open_running(pilot: Pilot[Any]) -> None:
        await fed()(pilot)
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        table = app.fleet_screen.table
        row = next(i for i, k in enumerate(table.shown_keys) if table.vm(k).state.is_active)  # type: ignore[union-attr]
        table.move_cursor(row)
        await pilot.press("enter")
        deadline = time.monotonic() + 10
        while not app.screen.query(StatsPlots):
            assert time.monotonic() < deadline, "the detail screen did not open"
            await pilot.pause(0.05)
        await pilot.pause(0.2)
        assert app.screen.query_one(StatsPlots).display

    assert snap_compare(demo(), terminal_size=size, run_before=open_running)
