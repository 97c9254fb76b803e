"""Saved views in the TUI, on test-driver fleets: ``:view NAME`` sets filter, sort and
columns, ``:view`` resets, ``:save-view`` writes views.yaml (asking before it replaces one),
the palette lists each view, and a snapshot of a view with three columns at 80x24."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from catkeeper.app import CatkeeperApp
from catkeeper.backend.fleet import Fleet
from catkeeper.config import DEMO_DIR, Config, Timing, demo_config
from catkeeper.config.views import View, read_views_file, sort_vms
from catkeeper.screens.confirm import ConfirmScreen
from catkeeper.screens.store import vm_key
from catkeeper.tui.views import ViewCommands
from catkeeper.widgets.vm_table import COLUMN_KEYS
from tests.tui_support import (
    DEMO_NOW,
    NO_BACKGROUND_SCANS,
    fleet_config,
    make_app,
    names,
    until,
)

Snap = Callable[..., bool]


def with_views(tmp_path: Path) -> Config:
    base = fleet_config(tmp_path)
    views = (
        View(
            "busy",
            filter="state:running",
            sort="memory",
            descending=True,
            columns=("name", "state", "memory"),
            source=base.source,
        ),
        View("alices", filter="owner:alice", sort="name", source=base.source),
    )
    return dataclasses.replace(base, views=views, views_file=str(tmp_path / "views.yaml"))


async def command(pilot: Pilot[Any], text: str) -> None:
    await pilot.press("colon", *text, "enter")
    await pilot.pause()


def errors(app: CatkeeperApp) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


def header(app: CatkeeperApp) -> str:
    return app.fleet_screen.table.render_line(0).text


async def test_view_sets_filter_sort_and_columns_and_view_resets(tmp_path: Path) -> None:
    app = make_app(with_views(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        assert len(names(app)) == 7
        await command(pilot, "view busy")
        assert names(app) == ["ci-runner", "web-02", "web-01", "cache-01"]
        assert table.visible_columns == ("name", "state", "memory")
        assert (table.sort_column, table.sort_reverse) == ("memory", True)
        top = header(app)
        assert top.split() == ["NAME", "STATE", "MEM▼"], top
        row = table.render_line(1).text
        assert "ci-runner" in row and "running" in row and "8G" in row and "beta" not in row

        await command(pilot, "view alices")
        assert names(app) == ["ci-runner", "web-01"]
        assert table.visible_columns == COLUMN_KEYS
        assert "HOST" in header(app) and "NOTE" in header(app)

        await command(pilot, "view")
        assert len(names(app)) == 7
        assert (table.sort_column, table.sort_reverse, table.visible_columns) == (
            "host",
            False,
            COLUMN_KEYS,
        )
        assert not errors(app)

        await command(pilot, "view nope")
        await until(lambda: bool(errors(app)), what="an error toast")
        assert errors(app) == ["no view 'nope' (views: busy, alices)"]
        assert len(names(app)) == 7


async def test_the_app_opens_with_the_view_it_was_given(tmp_path: Path) -> None:
    app = make_app(with_views(tmp_path))
    app.views.pending = "busy"  # catkeeper --view busy (run_app)
    async with app.run_test(size=(120, 30)):
        await app.wait_idle()
        assert names(app) == ["ci-runner", "web-02", "web-01", "cache-01"]
        assert app.fleet_screen.table.visible_columns == ("name", "state", "memory")
        assert app.views.pending is None


async def test_save_view_writes_asks_before_replacing_and_reads_back(tmp_path: Path) -> None:
    config = with_views(tmp_path)
    views_file = Path(config.views_file)
    app = make_app(config)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        await command(pilot, "filter state:shutoff")
        table.sort_by("name", reverse=True)
        table.show_columns(["name", "owner"])
        await command(pilot, "save-view offline")
        [saved] = read_views_file(str(views_file))
        assert (saved.name, saved.filter, saved.sort_text, saved.columns) == (
            "offline",
            "state:shutoff",
            "-name",
            ("name", "owner"),
        )
        written = views_file.read_text()

        # Back to the default, then the saved view brings it all back.
        await command(pilot, "view")
        await command(pilot, "view offline")
        assert names(app) == ["web-03", "build-01"]
        assert table.visible_columns == ("name", "owner")

        # Saving over it asks; "n" keeps the file as it was, "y" replaces the view.
        await command(pilot, "filter web")
        await command(pilot, "save-view offline")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("n")
        await pilot.pause()
        assert views_file.read_text() == written
        await command(pilot, "save-view offline")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await until(lambda: views_file.read_text() != written, what="the replaced view")
        [saved] = read_views_file(str(views_file))
        assert saved.filter == "web"

        # A name the config defines is the config's: refused, nothing written.
        await command(pilot, "save-view busy")
        await until(lambda: bool(errors(app)), what="the refusal")
        assert "wins over" in errors(app)[0]
        assert [v.name for v in read_views_file(str(views_file))] == ["offline"]


async def test_the_palette_lists_each_view(tmp_path: Path) -> None:
    app = make_app(with_views(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        provider = ViewCommands(app.screen, None)
        found = [hit async for hit in provider.discover()]
        assert [str(h.text) for h in found] == ["View: busy", "View: alices"]
        hits = [hit async for hit in provider.search("View: alices")]
        best = max(hits, key=lambda h: h.score)
        assert str(best.text) == "View: alices"
        best.command()
        await until(lambda: names(app) == ["ci-runner", "web-01"], what="the view applied")
        await pilot.pause()


# ---- the table sorts as --json sorts ------------------------------------------------------

DEMO_COPY = Path(tempfile.gettempdir()) / "catkeeper-snapshot-demo"


def demo(views: tuple[View, ...] = (), views_file: str = "") -> CatkeeperApp:
    DEMO_COPY.mkdir(exist_ok=True)
    for xml in DEMO_DIR.glob("*.xml"):
        shutil.copyfile(xml, DEMO_COPY / xml.name)
    config = demo_config(DEMO_COPY)
    config = Config(
        hosts=config.hosts,
        source=config.source,
        timing=Timing(backoff_initial=600, backoff_max=600),
        ipscan=NO_BACKGROUND_SCANS,
        views=views,
        views_file=views_file,
    )
    fleet = Fleet(config, clock=lambda: DEMO_NOW)
    return make_app(config, clock=lambda: DEMO_NOW, fleet=fleet)


async def test_json_sort_matches_the_table_for_every_column() -> None:
    app = demo()
    async with app.run_test(size=(160, 50)) as pilot:
        await app.wait_idle(15)
        await app.ipscan.scan(sweep=False)  # the ips column needs addresses to tell apart
        await app.wait_idle(15)
        table = app.fleet_screen.table
        vms = list(app.store.vms.values())
        for column in COLUMN_KEYS:
            if column in ("cpu", "net"):
                continue  # live rates: not in the model, so not in --json's order
            for descending in (False, True):
                table.sort_by(column, descending)
                await pilot.pause()
                want = [vm_key(vm) for vm in sort_vms(vms, column, descending)]
                assert table.shown_keys == want, (column, descending)


async def test_demo_mode_says_where_it_saved(tmp_path: Path) -> None:
    target = tmp_path / "xdg" / "catkeeper" / "views.yaml"  # what views_path gives the demo
    app = demo(views_file=str(target))
    assert app.config.is_demo
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle(15)
        await pilot.press("colon", *"save-view everything", "enter")
        await until(lambda: bool(app._notifications), what="the notice")
        [notice] = [n.message for n in app._notifications]
        assert notice == f"demo mode: no config file, so view everything saved to {target}"
        [saved] = read_views_file(str(target))
        assert (saved.name, saved.filter, saved.sort, saved.columns) == (
            "everything",
            "",
            "host",
            (),
        )


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_snapshot_of_a_view_with_three_columns(snap_compare: Snap) -> None:
    view = View("who", filter="!reserved:no", sort="owner", columns=("name", "owner", "until"))

    async def settle_and_apply(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        await app.wait_idle(15)
        await pilot.press("colon", *"view who", "enter")
        await pilot.pause(0.2)

    app = demo((view,))
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle_and_apply)
