"""The audit trail in the TUI: ``:history`` opens the detail screen at its History section,
a change made from the TUI shows there, read-only says nothing is written, a failed write is
a warning toast; and what a person sees at 80x24 (clock frozen, times in UTC)."""

from __future__ import annotations

import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from catkeeper.app import CatkeeperApp
from catkeeper.backend import audit
from catkeeper.backend.audit import ring
from catkeeper.backend.vm import snapshots
from catkeeper.config import Config, current_user
from catkeeper.screens.detail import DetailScreen
from catkeeper.widgets.audit_view import AuditHistory
from tests.tui_support import FROZEN_NOW, fleet_config, key_of, make_app, plain, state_of, until

Snap = Callable[..., bool]
HOUR = 3600.0
DAY = 86400.0


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    return tmp_path / "state"


def seed(node: Path, vm: str, entries: list[audit.Entry]) -> None:
    """Put a ring into ``vm``'s metadata in a node file, as another catkeeper left it."""
    tree = ET.parse(node)
    dom = next(d for d in tree.getroot().iter("domain") if d.findtext("name") == vm)
    metadata = dom.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(dom, "metadata")
    elem = ET.fromstring(ring.to_string(entries))
    for e in elem.iter():
        e.tag = f"{{{ring.NAMESPACE}}}{e.tag}"
    metadata.append(elem)
    tree.write(node, encoding="unicode")


async def _history_of(app: CatkeeperApp, pilot: Pilot[Any], name: str) -> AuditHistory:
    await app.wait_idle()
    assert app.fleet_screen.table.move_cursor_to(key_of(app, name))
    await pilot.press("colon", *"history", "enter")
    await until(lambda: isinstance(app.screen, DetailScreen), what="the detail screen")
    screen = app.screen
    assert isinstance(screen, DetailScreen) and screen.vm.name == name
    section = screen.query_one(AuditHistory)
    await until(lambda: section.rows is not None or section.error, what="the history read")
    return section


async def test_a_tui_change_shows_in_history(tmp_path: Path) -> None:
    config = fleet_config(tmp_path)
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await app.wait_idle()
        assert app.fleet_screen.table.move_cursor_to(key_of(app, "build-01"))
        await pilot.press("s")
        await until(lambda: state_of(app, "build-01") == "running", what="build-01 running")
        section = await _history_of(app, pilot, "build-01")
        assert section.rows is not None
        assert [(r.action, r.who) for r in section.rows] == [("start", current_user(config))]
        assert "start" in plain(section) and "read-only" not in plain(section)
        # A change made while the screen is open shows without reopening it: a snapshot
        # changes nothing else the inventory sees.
        await snapshots.create_snapshot(app.fleet, section.vm, "first")
        assert app.screen.query_one(AuditHistory) is section  # still on the detail screen
        await until(
            lambda: section.rows is not None and len(section.rows) == 2, what="the new entry"
        )
        assert [r.action for r in section.rows] == ["snapshot-create", "start"]
        assert not [n.message for n in app._notifications if n.severity != "information"]


async def test_read_only_says_history_is_not_written_and_warnings_are_toasts(
    tmp_path: Path,
) -> None:
    app = make_app(fleet_config(tmp_path, readonly=True))
    async with app.run_test(size=(120, 40)) as pilot:
        section = await _history_of(app, pilot, "web-02")
        text = plain(section)
        assert "read-only: changes made here are not written" in text
        assert "no changes recorded on the host" in text
        # Whatever reaches the backend on a read-only host is not written there: a warning.
        vm = app.store.vms[key_of(app, "web-02")]
        message = await audit.record(app.fleet, vm, "reboot")
        assert message is not None and "read-only" in message
        await until(
            lambda: any(
                n.severity == "warning" and n.message == message for n in app._notifications
            ),
            what="the warning toast",
        )
        assert await audit.read(app.fleet, vm) == []  # nothing reached the host


# ---- snapshot ----------------------------------------------------------------------------------

# A fixed place: the detail screen shows the host's URI, which holds the node file's path.
SNAP_DIR = Path(tempfile.gettempdir()) / "catkeeper-snapshot-audit"


def seeded_app() -> CatkeeperApp:
    SNAP_DIR.mkdir(exist_ok=True)
    config: Config = fleet_config(SNAP_DIR)
    entries = [
        ring.entry(FROZEN_NOW - 3 * DAY - 60, "bob", "start"),
        ring.entry(FROZEN_NOW - 3 * DAY, "bob", "edit-xml", "2 lines changed"),
        ring.entry(
            FROZEN_NOW - 2 * HOUR,
            "alice",
            "reserve",
            "for alice, until 2027-02-01T00:00:00Z, 'bisecting kernel'",
        ),
        ring.entry(FROZEN_NOW - 300, "alice", "snapshot-create", "before-bisect"),
        ring.entry(FROZEN_NOW - 60, "carol", "reboot"),
    ]
    seed(SNAP_DIR / "alpha.xml", "web-01", entries)
    return make_app(config)


def test_detail_history_80x24(snap_compare: Snap) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, CatkeeperApp)
        section = await _history_of(app, pilot, "web-01")
        await until(lambda: section.rows is not None and len(section.rows) == 5, what="rows")
        await pilot.pause(0.2)

    assert snap_compare(seeded_app(), terminal_size=(80, 24), run_before=run_before)
