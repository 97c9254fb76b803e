"""Lifecycle actions from the keyboard against real libvirt (test-driver fleets in tmp_path,
and a real libvirtd for the graceful-stop escalation)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import libvirt
import pytest

from catkeeper.commands import get
from catkeeper.config import Config, GracefulStop, HostConfig
from catkeeper.screens.confirm import ConfirmScreen
from tests.daemons import DomainFactory
from tests.guest_watch import GuestWatch, acpi_guest_disk, wait_armed
from tests.guest_watch import guest_watch_fixture as guest_watch_fixture  # `guest_watch`
from tests.tui_support import fleet_config, key_of, make_app, state_of, until
from tests.vmops_support import Lab
from tests.vmops_support import lab_fixture as lab_fixture  # the real-libvirtd `lab`


async def _ready(app, pilot, name: str) -> None:  # type: ignore[no-untyped-def]
    await app.wait_idle()
    assert app.fleet_screen.table.move_cursor_to(key_of(app, name))
    await pilot.pause()


@pytest.mark.parametrize(
    ("name", "keys", "confirm", "before", "after"),
    [
        ("build-01", ["s"], False, "shutoff", "running"),
        ("web-02", ["S"], True, "running", "shutoff"),  # the test driver obeys ACPI at once
        ("web-02", ["d"], True, "running", "shutoff"),
        ("web-02", ["ctrl+k"], True, "running", "shutoff"),
        ("web-02", ["p"], False, "running", "paused"),
        ("db-01", ["u"], False, "paused", "running"),
    ],
    ids=["start", "graceful-stop", "acpi-shutdown", "force-off", "suspend", "resume"],
)
async def test_state_changing_actions(
    tmp_path: Path, name: str, keys: list[str], confirm: bool, before: str, after: str
) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, name)
        assert state_of(app, name) == before
        await pilot.press(*keys)
        if confirm:
            await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
            await pilot.press("y")
        await until(lambda: state_of(app, name) == after, what=f"{name} {after}")
        assert not app._notifications  # no error toast


async def test_reboot_asks_first_and_restarts_the_vm(tmp_path: Path) -> None:
    """On the test driver a reboot shows as libvirt's state reason: a domain loaded from the
    node file runs for reason UNKNOWN, a rebooted one for BOOTED. (Its reset does nothing
    at all, so ``B`` is tested against a real qemu guest below.)"""
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, "web-02")
        uuid = app.store.vms[key_of(app, "web-02")].uuid
        session = app.fleet.session("alpha")

        async def state() -> tuple[int, int]:
            code, reason = await session.call_domain(uuid, lambda d: d.state())
            return int(code), int(reason)

        assert await state() == (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNKNOWN)
        await pilot.press("b")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("y")
        booted = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED)
        deadline = time.monotonic() + 30
        while (now := await state()) != booted:
            assert time.monotonic() < deadline, f"not rebooted: state and reason {now}"
            await asyncio.sleep(0.05)
        assert state_of(app, "web-02") == "running"
        assert not app._notifications


async def test_cancelling_the_dialog_does_nothing(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, "web-02")
        await pilot.press("ctrl+k")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("enter")  # the focused button is Cancel
        await pilot.pause(0.3)
        assert app.screen is app.fleet_screen
        assert state_of(app, "web-02") == "running"


async def test_bulk_action_on_marked_rows_with_one_confirmation(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)) as pilot:
        await app.wait_idle()
        table = app.fleet_screen.table
        for name in ("web-01", "web-02", "cache-01", "build-01"):  # build-01 is off
            table.toggle_mark(key_of(app, name))
        await pilot.press("p")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        dialog = app.screen
        assert isinstance(dialog, ConfirmScreen)
        assert sorted(vm.name for vm in dialog.vms) == ["cache-01", "web-01", "web-02"]
        assert "1 other marked VM(s) skipped" in dialog.detail
        await pilot.press("y")
        for name in ("web-01", "web-02", "cache-01"):
            await until(lambda n=name: state_of(app, n) == "paused", what=f"{name} paused")
        assert state_of(app, "build-01") == "shutoff"


async def test_a_failing_action_becomes_a_toast_with_libvirts_message(tmp_path: Path) -> None:
    app = make_app(fleet_config(tmp_path))
    async with app.run_test(size=(120, 30)):
        await app.wait_idle()
        real = app.store.vms[key_of(app, "build-01")]
        ghost = dataclasses.replace(real, uuid="00000000-0000-0000-0000-000000000000")
        app.lifecycle.run(get("start"), [ghost])
        await until(lambda: bool(app._notifications), what="a toast")
        message = next(iter(app._notifications)).message
        assert message.startswith("start alpha/build-01: ")
        assert "domain" in message.lower()  # libvirt's own words: "Domain not found …"
        assert app.screen is app.fleet_screen  # a toast, not a modal


async def test_readonly_host_refuses_in_the_backend_too(tmp_path: Path) -> None:
    config = fleet_config(tmp_path)
    hosts = tuple(
        HostConfig(h.name, h.uri, readonly=True) if h.name == "alpha" else h for h in config.hosts
    )
    app = make_app(Config(hosts=hosts, source=config.source))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, "build-01")
        await pilot.press("s")
        await until(lambda: bool(app._notifications), what="a toast")
        assert "read-only" in next(iter(app._notifications)).message
        assert state_of(app, "build-01") == "shutoff"


# ---------------------------------------------------------------------------------------
# Graceful stop against a real libvirtd: a TCG guest with no OS ignores ACPI and
# ctrl-alt-del, so every stage of the escalation shows.


def _local_config(acpi_wait: float, cad_wait: float) -> Config:
    return Config(
        hosts=(HostConfig("local", "qemu:///system"),),
        source="<test>",
        graceful_stop=GracefulStop(acpi_wait=acpi_wait, ctrl_alt_del_wait=cad_wait),
    )


@pytest.mark.daemon
@pytest.mark.parametrize("key", ["b", "B"], ids=["reboot", "reset"])
async def test_reboot_and_reset_reach_a_real_guest(
    lab: Lab, guest_watch: Callable[[libvirt.virDomain], GuestWatch], key: str
) -> None:
    """The guest obeys the ACPI power button (tests/guest_watch.py), so both show in qemu's
    events: reboot as the button, the guest powering off and libvirt resetting it; reset as
    a reset without the button."""
    dom = lab.domain(disk=acpi_guest_disk(lab), start=True)
    name = dom.name()
    watch = guest_watch(dom)
    await wait_armed(dom)
    app = make_app(_local_config(60, 30))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, name)
        await pilot.press(key)
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        assert not watch.host_resets()  # nothing before the confirmation
        await pilot.press("y")
        await watch.wait_for(
            lambda: watch.host_resets() and watch.libvirt_reboots(), what="the guest reset"
        )
        if key == "b":
            assert watch.in_order(
                "POWERDOWN", "SHUTDOWN(guest-shutdown)", "RESET(host-qmp-system-reset)"
            ), watch.names()
        else:
            assert not watch.qmp("POWERDOWN") and not watch.qmp("SHUTDOWN"), watch.names()
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert state_of(app, name) == "running"
        assert not app._notifications


@pytest.mark.daemon
async def test_graceful_stop_escalates_with_a_countdown(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(start=True)
    name = dom.name()
    app = make_app(_local_config(1.5, 1.5))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, name)
        key = key_of(app, name)
        table = app.fleet_screen.table
        await pilot.press("S")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("y")
        stages: list[str] = []

        def seen() -> bool:
            progress = table._progress.get(key)
            if progress is not None and progress.stage not in stages:
                stages.append(progress.stage)
            return state_of(app, name) == "shutoff" and key not in app.lifecycle.stops

        await until(seen, timeout=30, what="the VM forced off")
        assert stages[:2] == ["acpi", "ctrl-alt-del"]
        assert not app._notifications


@pytest.mark.daemon
async def test_graceful_stop_can_be_cancelled_or_forced(tcg_domain: DomainFactory) -> None:
    dom = tcg_domain(start=True)
    name = dom.name()
    app = make_app(_local_config(60, 60))
    async with app.run_test(size=(120, 30)) as pilot:
        await _ready(app, pilot, name)
        key = key_of(app, name)
        table = app.fleet_screen.table
        await pilot.press("S")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("y")
        await until(lambda: key in table._progress, what="the ACPI stage")
        row = table.render_line(1 + table.cursor_row - round(table.scroll_y)).text
        assert "acpi 6" in row  # the countdown, 60 s or just under
        await pilot.press("C")
        await until(lambda: key not in app.lifecycle.stops, what="the stop cancelled")
        assert any("cancelled" in n.message for n in app._notifications)
        assert state_of(app, name) == "running"

        await pilot.press("S")
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("y")
        await until(lambda: key in table._progress, what="the ACPI stage")
        await pilot.press("ctrl+k")  # force off during a graceful stop skips the waits
        await until(lambda: isinstance(app.screen, ConfirmScreen), what="the dialog")
        await pilot.press("y")
        await until(lambda: state_of(app, name) == "shutoff", timeout=30, what="forced off")
