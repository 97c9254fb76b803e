"""The reservation form, pushed in a minimal app: what it prefills, validates and returns,
what a person sees (snapshots at 80x24, clock frozen, UTC), and that cancelling changes
nothing on a real (test-driver) host."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import libvirt
import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Static

from catkeeper.backend import reservations
from catkeeper.backend.fleet import Fleet
from catkeeper.backend.reservations import ReservationRequest
from catkeeper.backend.reservations import metadata as rx
from catkeeper.model import VM, Reservation, VmState
from catkeeper.screens.reservation import ReservationScreen
from tests.fleet_helpers import fleet_config
from tests.tui_support import ALPHA, node_file

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()  # a Wednesday
DAY = 86400.0
Snap = Callable[..., bool]
_UNSET: Any = object()


def vm(reservation: Reservation | None = None) -> VM:
    return VM(
        host="lab1",
        name="web-01",
        uuid="6b2c1f4e-0000-4000-8000-000000000001",
        state=VmState.RUNNING,
        vcpus=2,
        memory_kib=2 * 1024 * 1024,
        max_memory_kib=2 * 1024 * 1024,
        autostart=False,
        persistent=True,
        reservation=reservation,
    )


BOB_ACTIVE = Reservation(
    owner="bob", note="load test", since=NOW - DAY, until=NOW + 2 * DAY, revision=4
)
BOB_EXPIRED = Reservation(owner="bob", note="load test", since=NOW - 9 * DAY, until=NOW - DAY)
ALICE_OWN = Reservation(
    owner="alice",
    note="bisecting kernel",
    since=NOW - 3 * 3600,
    until=NOW + DAY,
    contact="alice@example.com",
    revision=2,
)


class FormApp(App[None]):
    """Pushes the form on start and keeps what it dismissed with."""

    def __init__(self, target: VM, **kwargs: Any) -> None:
        super().__init__()
        self.target = target
        self.kwargs = kwargs
        self.result: ReservationRequest | None = _UNSET

    def compose(self) -> ComposeResult:
        yield Static("the fleet table would be here")

    def on_mount(self) -> None:
        screen = ReservationScreen(
            self.target, me="alice", clock=lambda: NOW, tz=UTC, **self.kwargs
        )
        self.push_screen(screen, self._done)

    def _done(self, result: ReservationRequest | None) -> None:
        self.result = result

    @property
    def form(self) -> ReservationScreen:
        screen = self.screen
        assert isinstance(screen, ReservationScreen)
        return screen


def value(app: FormApp, name: str) -> str:
    return app.form.query_one(f"#{name}", Input).value


def error(app: FormApp, name: str) -> str | None:
    """The error under a field, None while it is hidden."""
    widget = app.form.query_one(f"#{name}-error", Static)
    return str(widget.render()) if widget.has_class("shown") else None


async def set_value(pilot: Pilot[None], name: str, text: str) -> None:
    """Replace a field's text and let its Changed message be handled, as typing would."""
    app = pilot.app
    assert isinstance(app, FormApp)
    app.form.query_one(f"#{name}", Input).value = text
    await pilot.pause()


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    time.tzset()


# ---------------------------------------------------------------------------------------
# Behaviour


async def test_reserving_a_free_vm() -> None:
    app = FormApp(vm())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert value(app, "owner") == "alice" and value(app, "note") == ""
        assert app.form.query_one("#note", Input).has_focus
        await pilot.press(*"bisecting kernel", "tab", *"3d")
        hint = app.form.query_one("#until-hint", Static)
        assert str(hint.render()) == "→ 2026-11-28 10:00 UTC (in 3d)"
        await pilot.press("tab", *"a@x", "enter")
        await pilot.pause()
    assert app.result == ReservationRequest(
        owner="alice", note="bisecting kernel", until=NOW + 3 * DAY, contact="a@x"
    )


async def test_validation_errors_show_inline_and_keep_the_form_open() -> None:
    app = FormApp(vm())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await set_value(pilot, "owner", "   ")
        await set_value(pilot, "until", "3x")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ReservationScreen)  # still open
        assert app.result is _UNSET
        assert error(app, "owner") == "the owner must not be empty"
        assert error(app, "until") == "unknown unit 'x' in '3x': use m (minutes), h, d or w"
        assert error(app, "note") is None
        assert app.form.query_one("#owner", Input).has_focus  # the first bad field
        # Typing in a field clears its error; a past time is refused too.
        await pilot.press(*"carol")
        assert error(app, "owner") is None
        await set_value(pilot, "until", "2026-11-24")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert error(app, "until") == "2026-11-24 23:59 UTC is in the past"
        assert app.result is _UNSET
        await set_value(pilot, "until", "fri 18:00")
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert app.result == ReservationRequest(
        owner="carol", note="", until=datetime(2026, 11, 27, 18, 0, tzinfo=UTC).timestamp()
    )


async def test_editing_ones_own_reservation_is_prefilled() -> None:
    app = FormApp(vm(ALICE_OWN))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert str(app.form.query_one("#title").render()) == "Edit your reservation of lab1/web-01"
        assert (value(app, "owner"), value(app, "note"), value(app, "contact")) == (
            "alice", "bisecting kernel", "alice@example.com",
        )  # fmt: skip
        assert value(app, "until") == "2026-11-26T10:00"
        assert not app.form.query("#take-over")
        await pilot.press("enter")
        await pilot.pause()
    # Unchanged fields come back as they were.
    assert app.result == ReservationRequest(
        owner="alice", note="bisecting kernel", until=NOW + DAY, contact="alice@example.com"
    )


async def test_someone_elses_reservation_needs_the_take_over_box() -> None:
    app = FormApp(vm(BOB_ACTIVE))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        holder = str(app.form.query_one("#holder", Static).render())
        assert holder == 'Reserved by bob until 2026-11-27 10:00 UTC: "load test"'
        assert value(app, "note") == ""  # bob's note is his, not a default for alice
        await pilot.press(*"mine now", "enter")
        await pilot.pause()
        assert app.result is _UNSET
        assert error(app, "take-over") == "bob holds this VM: tick the box to take it over"
        assert app.form.query_one("#take-over", Checkbox).has_focus
        await pilot.press("space")  # tick it
        assert error(app, "take-over") is None
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert app.result == ReservationRequest(owner="alice", note="mine now", take_over=True)


async def test_an_expired_reservation_may_be_claimed_without_taking_over() -> None:
    app = FormApp(vm(BOB_EXPIRED))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        holder = str(app.form.query_one("#holder", Static).render())
        assert holder.startswith("Expired reservation: bob expired 2026-11-24 10:00 UTC")
        assert not app.form.query("#take-over")
        await pilot.press(*"now mine", "enter")
        await pilot.pause()
    assert app.result == ReservationRequest(owner="alice", note="now mine")


async def test_a_draft_is_restored_after_a_conflict() -> None:
    draft = ReservationRequest(owner="alice", note="typed before", until=NOW + DAY)
    app = FormApp(vm(BOB_ACTIVE), draft=draft)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert value(app, "note") == "typed before"
        assert value(app, "until") == "2026-11-26T10:00"


async def test_cancel_returns_none_and_the_host_keeps_its_reservation(tmp_path: Path) -> None:
    """Through a real (test-driver) host: the app writes only what the form returns."""
    node = node_file(tmp_path, "alpha", ALPHA)
    fleet = Fleet(fleet_config([("alpha", f"test://{node}")]))
    await fleet.start()
    try:
        assert await fleet.wait_settled(10)
        target = fleet.find("alpha/web-01")  # alice's, revision 1
        before = await stored(fleet, target)
        written: list[object] = []

        class WritingApp(FormApp):
            def _done(self, result: ReservationRequest | None) -> None:
                self.result = result
                if result is not None:  # what the real app does with a result
                    written.append(result)
                    self.run_worker(reservations.apply(fleet, target, result, me="alice"))

        app = WritingApp(target)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+a", *"something else", "tab", *"2w")
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, ReservationScreen)
        assert app.result is None and written == []
        assert await stored(fleet, target) == before
        assert fleet.find("alpha/web-01").reservation == target.reservation
    finally:
        await fleet.aclose()


async def stored(fleet: Fleet, target: VM) -> str:
    return str(
        await fleet.session(target.host).call_domain(
            target.uuid,
            lambda d: d.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, rx.NAMESPACE, 0),
        )
    )


# ---------------------------------------------------------------------------------------
# What a person sees


def test_snapshot_take_over_form(snap_compare: Snap) -> None:
    assert snap_compare(FormApp(vm(BOB_ACTIVE)), terminal_size=(80, 24))


def test_snapshot_validation_errors(snap_compare: Snap) -> None:
    # Typed a note (the field focused first), moved on to until and typed a bad value.
    press = [*"bisecting", "tab", *"3 months", "enter"]
    assert snap_compare(FormApp(vm(BOB_ACTIVE)), terminal_size=(80, 24), press=press)


def test_snapshot_edit_own(snap_compare: Snap) -> None:
    assert snap_compare(FormApp(vm(ALICE_OWN)), terminal_size=(80, 24))
